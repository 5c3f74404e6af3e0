//! `adbd-sim`: serve N simulated Android devices on N TCP ports ("a device farm in a box").
//!
//! ```text
//! adbd-sim --devices 20 --legacy 2 --connect-to-adb 5037
//! ```
//! prints one line per device (`SERIAL<TAB>PORT<TAB>MODEL<TAB>KIND<TAB>SANDBOX`) and serves until Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use adbd_sim::{
    DEFAULT_CRASH, DeviceConfig, Fault, InstallOutcome, InstrumentationScript, RebootBehavior,
    SimDevice, SimHandle,
};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serve simulated Android devices (the adbd side of the ADB transport protocol) on loopback TCP ports.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// How many devices to serve in total.
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// How many of them are legacy (Android 6, no shell_v2/cmd/abb_exec/stat_v2); they come last.
    #[arg(long, default_value_t = 0)]
    legacy: usize,
    /// First port to use (the devices take consecutive ports); default: free ports chosen by the system.
    /// Ports 5555-5585 are refused: the adb server probes them for emulators.
    #[arg(long)]
    base_port: Option<u16>,
    /// `adb connect` every device (in parallel) to the adb server on this local port, print the server's
    /// replies on stderr, and wait until each connected device is listed as `device`.
    #[arg(long, value_name = "PORT")]
    connect_to_adb: Option<u16>,
    /// Prefix of the devices' own serials (`ro.serialno`): PREFIX-0001, PREFIX-0002, ...
    #[arg(long, default_value = "sim")]
    serial_prefix: String,
    /// Make device number N (1-based) play a fault: `N=hang`, `N=unauthorized`, `N=offline`,
    /// `N=close`, `N=refuse`, `N=slow:BYTES_PER_SEC`, `N=drop:BYTES`. Repeatable.
    #[arg(long, value_name = "N=FAULT")]
    fault: Vec<String>,
    /// Make device N refuse every install with `Failure [CODE]` (exit status 0), e.g.
    /// `3=INSTALL_FAILED_INSUFFICIENT_STORAGE`. Repeatable.
    #[arg(long, value_name = "N=CODE")]
    fail_install: Vec<String>,
    /// Make `am instrument` on device N fail one test (`N=fail`) or crash (`N=crash`). Repeatable.
    #[arg(long, value_name = "N=fail|crash")]
    instrument: Vec<String>,
    /// Seconds a rebooting device stays away (then 1 s more with sys.boot_completed=0); `never` for
    /// devices that do not come back.
    #[arg(long, default_value = "2")]
    reboot_down: String,
}

/// Splits `N=VALUE` and checks N names a device.
fn numbered<'a>(flag: &str, text: &'a str, devices: usize) -> Result<(usize, &'a str), String> {
    let (n, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{flag} {text:?}: expected N=VALUE"))?;
    let n: usize = n
        .parse()
        .map_err(|_| format!("{flag} {text:?}: {n:?} is not a device number"))?;
    if n == 0 || n > devices {
        return Err(format!(
            "{flag} {text:?}: there is no device {n} (1..={devices})"
        ));
    }
    Ok((n, value))
}

fn parse_fault(text: &str, devices: usize) -> Result<(usize, Fault), String> {
    let (n, fault) = numbered("--fault", text, devices)?;
    let fault = match fault.split_once(':') {
        None if fault == "hang" => Fault::Hang,
        None if fault == "unauthorized" => Fault::Unauthorized,
        None if fault == "offline" => Fault::NeverAnswer,
        None if fault == "close" => Fault::CloseImmediately,
        None if fault == "refuse" => Fault::RefuseServices,
        Some(("slow", v)) => Fault::SlowLink(
            v.parse()
                .map_err(|_| format!("--fault {text:?}: bad rate {v:?}"))?,
        ),
        Some(("drop", v)) => Fault::DropAfterBytes(
            v.parse()
                .map_err(|_| format!("--fault {text:?}: bad byte count {v:?}"))?,
        ),
        _ => {
            return Err(format!(
                "--fault {text:?}: unknown fault {fault:?} (hang, unauthorized, offline, close, refuse, slow:N, drop:N)"
            ));
        }
    };
    Ok((n, fault))
}

/// One host request; the reply body after `OKAY`+hex4 (or after `FAIL`+hex4).
async fn host_request(adb_port: u16, request: &str) -> std::io::Result<String> {
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", adb_port)).await?;
    sock.write_all(format!("{:04x}{request}", request.len()).as_bytes())
        .await?;
    let mut reply = Vec::new();
    sock.read_to_end(&mut reply).await?;
    Ok(String::from_utf8_lossy(reply.get(8..).unwrap_or_default()).into_owned())
}

async fn connect_all(adb_port: u16, serials: Vec<String>) -> Result<(), String> {
    let mut tasks = tokio::task::JoinSet::new();
    for serial in serials {
        tasks.spawn(async move {
            let reply = host_request(adb_port, &format!("host:connect:{serial}")).await;
            (serial, reply)
        });
    }
    let mut connected = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (serial, reply) = joined.map_err(|e| format!("connect task failed: {e}"))?;
        let reply =
            reply.map_err(|e| format!("cannot reach the adb server on port {adb_port}: {e}"))?;
        eprintln!("{reply}");
        if reply.starts_with("connected to") || reply.starts_with("already connected to") {
            connected.push(serial);
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let listed = host_request(adb_port, "host:devices")
            .await
            .map_err(|e| format!("host:devices: {e}"))?;
        let online: std::collections::HashSet<&str> = listed
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(_, s)| *s == "device")
            .map(|(s, _)| s)
            .collect();
        let missing: Vec<&String> = connected
            .iter()
            .filter(|s| !online.contains(s.as_str()))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("not online after 30 s: {missing:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run(args: Args) -> Result<Vec<SimHandle>, String> {
    if args.legacy > args.devices {
        return Err(format!(
            "--legacy {} is more than --devices {}",
            args.legacy, args.devices
        ));
    }
    let mut faults = std::collections::HashMap::new();
    for text in &args.fault {
        let (n, fault) = parse_fault(text, args.devices)?;
        faults.insert(n, fault);
    }
    let mut install_failures = std::collections::HashMap::new();
    for text in &args.fail_install {
        let (n, code) = numbered("--fail-install", text, args.devices)?;
        install_failures.insert(n, InstallOutcome::failure(code));
    }
    let mut runs = std::collections::HashMap::new();
    for text in &args.instrument {
        let (n, kind) = numbered("--instrument", text, args.devices)?;
        let script = match kind {
            "fail" => InstrumentationScript::default().fail(
                "com.example.test.ExampleTest",
                "testFails",
                "java.lang.AssertionError: expected:<42> but was:<41>\n\tat org.junit.Assert.fail(Assert.java:89)\n\tat com.example.test.ExampleTest.testFails(ExampleTest.java:31)",
            ),
            "crash" => InstrumentationScript::default().crash_at(1, DEFAULT_CRASH),
            other => return Err(format!("--instrument {text:?}: {other:?} is not fail or crash")),
        };
        runs.insert(n, script);
    }
    let reboot = match args.reboot_down.as_str() {
        "never" => RebootBehavior::NeverReturns,
        secs => RebootBehavior::Returns {
            down: Duration::from_secs_f64(
                secs.parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| format!("--reboot-down {secs:?}: expected seconds or never"))?,
            ),
            booting: Duration::from_secs(1),
        },
    };
    let mut handles = Vec::with_capacity(args.devices);
    for i in 1..=args.devices {
        let serial = format!("{}-{i:04}", args.serial_prefix);
        let legacy = i > args.devices - args.legacy;
        let mut config = if legacy {
            DeviceConfig::legacy(&serial)
        } else {
            DeviceConfig::modern(&serial)
        };
        config = config.model(format!(
            "{}_{i}",
            if legacy { "SimLegacy" } else { "SimPhone" }
        ));
        if let Some(base) = args.base_port {
            let port = u32::from(base) + (i as u32 - 1);
            if (5555..=5585).contains(&port) || port > 65535 {
                return Err(format!(
                    "port {port} is not usable (5555-5585 belong to emulators)"
                ));
            }
            config = config.listen(SocketAddr::from(([127, 0, 0, 1], port as u16)));
        }
        if let Some(fault) = faults.get(&i) {
            config = config.fault(*fault);
        }
        config = config.reboot_behavior(reboot);
        let handle = SimDevice::start(config)
            .await
            .map_err(|e| format!("cannot start device {serial}: {e}"))?;
        if let Some(outcome) = install_failures.remove(&i) {
            handle.set_install_outcome(outcome);
        }
        if let Some(script) = runs.remove(&i) {
            handle.set_instrumentation(script);
        }
        println!(
            "{}\t{}\t{}\t{}\t{}",
            handle.serial(),
            handle.port(),
            handle.prop("ro.product.model").unwrap_or_default(),
            if legacy { "legacy" } else { "modern" },
            handle.root().display()
        );
        handles.push(handle);
    }
    if let Some(adb_port) = args.connect_to_adb {
        connect_all(adb_port, handles.iter().map(SimHandle::serial).collect()).await?;
    }
    Ok(handles)
}

#[tokio::main]
async fn main() {
    tracing_subscriber_init();
    let args = Args::parse();
    match run(args).await {
        Ok(handles) => {
            eprintln!(
                "adbd-sim: serving {} device(s); Ctrl-C to stop",
                handles.len()
            );
            // SIGINT or SIGTERM: drop the devices so their sandboxes are removed.
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            drop(handles);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(err) => {
            eprintln!("adbd-sim: {err}");
            std::process::exit(2);
        }
    }
}

/// Logs go to stderr when `RUST_LOG` asks for them.
fn tracing_subscriber_init() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
}
