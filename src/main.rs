//! `devbatch`: run one operation across many devices in parallel, one result per device.
//!
//! The binary stays small: parse flags, set up logging, run the command, exit with the code
//! that `error::exit_code` documents.

mod cli;
mod context;
mod error;
mod list;
mod output;
mod pool_file;
mod report;
mod run;
mod signals;

// Name every backend and operation crate so that the linker keeps their registrations.
use devbatch_adb as _;
use devbatch_local as _;
use devbatch_mock as _;
use devbatch_ops as _;
use devbatch_ssh as _;

use clap::Parser;

use crate::cli::{Cli, Commands};

fn main() {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    report_panics();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            output::warn(&format!("error: cannot start the async runtime: {e}"));
            std::process::exit(error::exit_code::USAGE);
        }
    };
    let code = runtime.block_on(async {
        match dispatch(cli).await {
            Ok(code) => code,
            Err(e) => {
                output::warn(&format!("error: {e}"));
                e.exit_code()
            }
        }
    });
    // Do not wait for operations that ignored cancellation (a second Ctrl-C exits anyway).
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(code);
}

async fn dispatch(cli: Cli) -> Result<i32, error::CliError> {
    let connect_timeout = match &cli.command {
        Commands::Run(args) => args.connect_timeout,
        _ => None,
    };
    // Signals are answered from the start: loading a pool may wait on servers and hosts.
    let interrupt = signals::Interrupt::listen()
        .map_err(|e| error::CliError::Usage(format!("cannot watch for signals: {e}")))?;
    let with_devices = matches!(cli.command, Commands::Run(_) | Commands::Devices(_));
    let load = context::Context::load(
        cli.pool.as_deref(),
        &cli.plugins,
        connect_timeout,
        with_devices,
    );
    let ctx = tokio::select! {
        ctx = load => ctx?,
        () = interrupt.signalled() => {
            output::warn("stopped while loading the pool: nothing ran");
            return Ok(interrupt.exit_code().unwrap_or(error::exit_code::INTERRUPTED));
        }
    };
    match cli.command {
        Commands::Run(args) => run::run(*args, ctx, &interrupt, cli.quiet).await,
        Commands::Devices(args) => list::devices(&args, &ctx),
        Commands::Ops(args) => list::ops(&args, &ctx),
        Commands::Plugins(args) => list::plugins(&args, &ctx),
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed stderr must not stop the run (tracing would report it with `eprintln!`).
        .log_internal_errors(false)
        .with_target(false)
        .init();
}

/// A panic inside an operation or backend is caught by the engine and reported as that
/// device's `panicked` outcome, so it is only logged (`-vv`). A panic of the CLI itself is a
/// bug: one line saying so, where it happened.
fn report_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if std::thread::current().name() == Some("main") {
            output::warn(&format!(
                "error: internal error (a bug in devbatch, please report it): {message} at {location}"
            ));
        } else {
            tracing::debug!(%location, "a device task panicked: {message}");
        }
    }));
}
