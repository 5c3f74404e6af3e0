//! `devbatch run`: build the request, run the batch with progress and Ctrl-C handling, report.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use devbatch_core::{
    BatchEvent, BatchOptions, BatchResult, DeviceError, FailurePolicy, LabelSelector, ParamType,
    Registry, RetryPolicy,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value};

use crate::cli::{OutputFormat, RunArgs, Selection};
use crate::context::Context;
use crate::error::{CliError, exit_code};
use crate::output::{self, ReportFile};
use crate::report;
use crate::signals::Interrupt;

/// How long the end of a run waits for backends to clean up (see `BatchOperationManager::shutdown`).
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) async fn run(
    args: RunArgs,
    ctx: Context,
    interrupt: &Interrupt,
    quiet: bool,
) -> Result<i32, CliError> {
    if !ctx.registry().has_operation(&args.operation) {
        return Err(
            devbatch_core::BatchError::Operation(devbatch_core::OperationError::Unknown {
                name: args.operation.clone(),
                known: ctx.registry().operation_names(),
            })
            .into(),
        );
    }
    let params = build_params(&args, &text_params(ctx.registry(), &args.operation))?;
    let ids = select_devices(&ctx, &args.selection, args.rerun_failed.as_deref())?;
    let options = build_options(&args, &ctx)?;
    // Report paths are checked now: a bad one must fail before any device is touched.
    if let (Some(report), Some(junit)) = (&args.report, &args.junit)
        && (report == junit
            || report
                .canonicalize()
                .is_ok_and(|r| junit.canonicalize().is_ok_and(|j| r == j)))
    {
        return Err(CliError::Usage(format!(
            "--report and --junit both name {}: give each its own file",
            report.display()
        )));
    }
    if let Some(pool) = &ctx.pool_path
        && let Ok(pool) = pool.canonicalize()
        && let Some(clash) = [&args.report, &args.junit]
            .into_iter()
            .flatten()
            .find(|p| p.canonicalize().is_ok_and(|p| p == pool))
    {
        return Err(CliError::Usage(format!(
            "{} is the pool file: a report written there would replace it",
            clash.display()
        )));
    }
    let report_file = args.report.as_deref().map(ReportFile::check).transpose()?;
    let junit_file = args.junit.as_deref().map(ReportFile::check).transpose()?;

    // Ctrl-C, SIGTERM, SIGHUP: the first cancels the batch (a complete report still follows),
    // a second exits.
    let mut options = options.cancel_handle(interrupt.cancel_handle());

    let progress =
        (args.output == OutputFormat::Human && !quiet && std::io::stderr().is_terminal())
            .then(|| Progress::new(ids.len() as u64));
    let stream_lines = args.output == OutputFormat::Jsonl;
    {
        let progress = progress.clone();
        options.observer = Some(Arc::new(move |event: &BatchEvent<'_>| {
            if let Some(p) = &progress {
                p.on_event(event);
            }
            if let BatchEvent::Finished { device_id, outcome } = event {
                tracing::debug!(
                    device = %output::printable(device_id),
                    status = if outcome.is_success() { "success" } else { "error" },
                    attempts = outcome.attempts,
                    elapsed_ms = outcome.elapsed_ms,
                    error = outcome.error.as_deref().map(output::printable).unwrap_or_default().as_ref(),
                    "device finished"
                );
            }
            if stream_lines && let BatchEvent::Finished { device_id, outcome } = event {
                let line = report::jsonl_line(device_id, outcome);
                // Whole lines only, even when a second Ctrl-C exits meanwhile.
                let _whole = output::hold_stdout();
                let mut out = std::io::stdout().lock();
                // A closed stdout (`| head`) must not stop the batch.
                let _ = writeln!(out, "{line}");
            }
        }));
    }

    tracing::info!(
        operation = %args.operation,
        devices = ids.len(),
        concurrency = options.concurrency,
        timeout = ?options.timeout,
        pool = %ctx.pool_source,
        "batch starting"
    );
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let keep_results =
        args.output != OutputFormat::Jsonl || args.report.is_some() || args.junit.is_some();
    let (result, summary) = if keep_results {
        let r = ctx
            .manager()
            .execute_batch_with(&args.operation, params, Some(&id_refs), &options)
            .await?;
        let s = *r.summary();
        (Some(r), s)
    } else {
        let s = ctx
            .manager()
            .execute_batch_streaming(&args.operation, params, Some(&id_refs), &options, |_, _| {})
            .await?;
        (None, s)
    };
    if let Some(p) = &progress {
        p.finish();
    }
    let stopped_by = interrupt.exit_code();
    let interrupted = stopped_by.is_some();
    tracing::info!(%summary, interrupted, "batch finished");

    // The devices have run: every output is attempted even when another one fails, files
    // first so that a closed stdout cannot lose them.
    let mut unwritten = Vec::new();
    if let Some(r) = &result {
        if let Some(file) = &report_file {
            let json = serde_json::to_string_pretty(r).expect("results always serialize") + "\n";
            unwritten.extend(file.write(&json).err());
        }
        if let Some(file) = &junit_file {
            unwritten.extend(file.write(&report::junit(r, &args.operation)).err());
        }
    }
    let text = match (args.output, &result) {
        (OutputFormat::Human, Some(r)) => report::human(r, &args.operation),
        (OutputFormat::Json, Some(r)) => {
            serde_json::to_string_pretty(r).expect("results always serialize") + "\n"
        }
        _ => report::jsonl_summary(&summary, interrupted) + "\n",
    };
    // (`emit` holds stdout as the JSON-lines observer does, in case a device task still runs.)
    unwritten.extend(output::emit(&text).err());
    // Let backends finish their clean-up (SSH kills the remote processes of commands that
    // timed out or were cancelled) before the process exits; bounded, a second Ctrl-C exits.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, ctx.manager().shutdown()).await;
    for e in &unwritten {
        output::warn(&format!("error: {e}"));
    }
    Ok(if !unwritten.is_empty() {
        exit_code::OUTPUT_LOST
    } else if let Some(code) = stopped_by {
        code
    } else if summary.all_succeeded() {
        exit_code::SUCCESS
    } else {
        exit_code::DEVICE_FAILED
    })
}

/// The parameters of `operation` that every implementation declares as strings: for those,
/// `--param KEY=VALUE` keeps VALUE as text even when it would parse as JSON (`cmd=true` runs
/// `true`; `app_path=42` is the file `42`).
fn text_params(registry: &Registry, operation: &str) -> HashSet<&'static str> {
    let mut specs = registry
        .operations()
        .filter(|(op, _)| op.name() == operation)
        .map(|(op, _)| op.params());
    let Some(first) = specs.next() else {
        return HashSet::new();
    };
    let mut names: HashSet<&'static str> = first
        .iter()
        .filter(|p| p.ty == ParamType::String)
        .map(|p| p.name)
        .collect();
    for spec in specs {
        names.retain(|n| {
            spec.iter()
                .all(|p| p.name != *n || p.ty == ParamType::String)
        });
    }
    names
}

/// `--params-json`, then `--param` and `--param-str` on top. A `--param` value is JSON when it
/// parses as JSON, except for parameters declared as strings (`text_params`), which always
/// take the value exactly as written.
fn build_params(args: &RunArgs, text_params: &HashSet<&'static str>) -> Result<Value, CliError> {
    let mut params = Map::new();
    if let Some(raw) = &args.params_json {
        let text = match raw.strip_prefix('@') {
            Some(file) => std::fs::read_to_string(file).map_err(|source| CliError::File {
                context: "cannot read --params-json file",
                path: file.into(),
                source,
            })?,
            None => raw.clone(),
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(m)) => params = m,
            Ok(other) => {
                return Err(CliError::Usage(format!(
                    "--params-json must be a JSON object, got {}",
                    json_kind(&other)
                )));
            }
            Err(e) => {
                return Err(CliError::Usage(format!(
                    "--params-json is not valid JSON: {e}"
                )));
            }
        }
    }
    for raw in &args.params {
        let (k, v) = split_param("--param", raw)?;
        let value = if text_params.contains(k) {
            Value::String(v.to_string())
        } else {
            match serde_json::from_str(v) {
                Ok(value) => value,
                // Meant as a JSON list or object but not valid: say why rather than pass a string.
                Err(e) if v.trim_start().starts_with(['[', '{']) => {
                    return Err(CliError::Usage(format!(
                        "--param {k}: the value is not valid JSON ({e}); use --param-str {k}=... \
                         to pass it as text"
                    )));
                }
                Err(_) => Value::String(v.to_string()),
            }
        };
        params.insert(k.to_string(), value);
    }
    for raw in &args.string_params {
        let (k, v) = split_param("--param-str", raw)?;
        params.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(Value::Object(params))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn split_param<'a>(flag: &str, raw: &'a str) -> Result<(&'a str, &'a str), CliError> {
    match raw.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim(), v)),
        _ => Err(CliError::Usage(format!(
            "{flag} {raw:?}: expected KEY=VALUE, for example cmd='uname -a'"
        ))),
    }
}

/// The ids `--devices` names (comma-separated, repeatable), or `None` when it is not given.
pub(crate) fn requested_ids(selection: &Selection) -> Result<Option<Vec<String>>, CliError> {
    if selection.devices.is_empty() {
        return Ok(None);
    }
    let ids: Vec<String> = selection
        .devices
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if ids.is_empty() {
        return Err(CliError::Usage(
            "--devices: no device id given (expected ID[,ID...])".into(),
        ));
    }
    Ok(Some(ids))
}

/// Fails naming every id the pool does not hold.
pub(crate) fn check_known(ctx: &Context, ids: &[String]) -> Result<(), CliError> {
    let unknown: Vec<String> = ids
        .iter()
        .filter(|id| ctx.pool().get_device(id).is_none())
        .cloned()
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(devbatch_core::BatchError::Device(DeviceError::NotFound { ids: unknown }).into())
    }
}

/// The requested device ids: `--devices` (or the failed devices of a report), narrowed by
/// `--select`; all devices when neither is given.
pub(crate) fn select_devices(
    ctx: &Context,
    selection: &Selection,
    rerun_failed: Option<&Path>,
) -> Result<Vec<String>, CliError> {
    let selectors = selection
        .select
        .iter()
        .map(|s| s.parse::<LabelSelector>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let requested: Option<Vec<String>> = match rerun_failed {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| CliError::File {
                context: "cannot read report",
                path: path.to_path_buf(),
                source,
            })?;
            let report: BatchResult = serde_json::from_str(&text).map_err(|e| {
                let first_line_is_a_device = text
                    .lines()
                    .next()
                    .and_then(|l| serde_json::from_str::<Value>(l).ok())
                    .is_some_and(|v| v.get("device").is_some());
                CliError::Usage(if first_line_is_a_device {
                    format!(
                        "{} holds JSON lines (-o jsonl); --rerun-failed reads a report written with --report or -o json",
                        path.display()
                    )
                } else {
                    format!("{} is not a devbatch JSON report: {e}", path.display())
                })
            })?;
            let failed: Vec<String> = report
                .failed_ids()
                .into_iter()
                .map(str::to_string)
                .collect();
            if report.is_empty() {
                return Err(CliError::NoDevices(format!(
                    "no device selected: {} holds no device",
                    path.display()
                )));
            }
            if failed.is_empty() {
                return Err(CliError::NoDevices(format!(
                    "no device selected: every device in {} succeeded",
                    path.display()
                )));
            }
            Some(failed)
        }
        None => requested_ids(selection)?,
    };
    if let Some(ids) = &requested {
        check_known(ctx, ids)?;
    }
    let chosen: Vec<String> = match requested {
        Some(ids) => ids
            .into_iter()
            .filter(|id| {
                ctx.pool()
                    .get_device(id)
                    .is_some_and(|d| selectors.iter().all(|s| s.matches(d.as_ref())))
            })
            .collect(),
        None => ctx
            .pool()
            .select(&selectors)
            .iter()
            .map(|d| d.id().to_string())
            .collect(),
    };
    if chosen.is_empty() {
        let why = if ctx.pool().is_empty() {
            format!("{} has no devices", ctx.pool_source)
        } else {
            format!(
                "the selection {} matched none of the {} devices in {}",
                selection.select.join(" "),
                ctx.pool().len(),
                ctx.pool_source
            )
        };
        return Err(CliError::NoDevices(format!("no device selected: {why}")));
    }
    Ok(chosen)
}

fn build_options(args: &RunArgs, ctx: &Context) -> Result<BatchOptions, CliError> {
    let d = &ctx.defaults;
    let mut o = BatchOptions::default();
    if let Some(n) = args.concurrency.map(|n| n as usize).or(d.concurrency) {
        o.concurrency = n;
    }
    o.timeout = args.timeout.or(d.timeout);
    o.deadline = args.deadline.or(d.deadline);
    if let Some(n) = args.retries.or(d.retries) {
        o.retry = RetryPolicy::retries(n);
    }
    if let Some(n) = args.max_output.or(d.max_output) {
        o.max_output = n;
    }
    o.canary = args.canary.map(|n| n as usize);
    o.failure_policy = if args.fail_fast {
        FailurePolicy::FailFast
    } else if let Some(raw) = &args.max_failures {
        parse_max_failures(raw)?
    } else {
        FailurePolicy::Continue
    };
    Ok(o)
}

fn parse_max_failures(raw: &str) -> Result<FailurePolicy, CliError> {
    let bad = || {
        CliError::Usage(format!(
            "--max-failures {raw:?}: expected a count such as 5 or a percentage such as 10%"
        ))
    };
    match raw.trim().strip_suffix('%') {
        Some(p) => {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if p > 0.0 && p <= 100.0 {
                Ok(FailurePolicy::MaxFailurePercent(p))
            } else {
                Err(bad())
            }
        }
        None => match raw.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(FailurePolicy::MaxFailures(n)),
            _ => Err(bad()),
        },
    }
}

/// The live progress bar on stderr: done / failed / running, ETA.
#[derive(Clone)]
struct Progress {
    bar: ProgressBar,
    running: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
}

impl Progress {
    fn new(total: u64) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} done, {msg} [{elapsed_precise}, ETA {eta}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Progress {
            bar,
            running: Arc::default(),
            failed: Arc::default(),
        }
    }

    fn on_event(&self, event: &BatchEvent<'_>) {
        match event {
            BatchEvent::Started { attempt: 1, .. } => {
                self.running.fetch_add(1, Ordering::Relaxed);
            }
            BatchEvent::Finished { outcome, .. } => {
                if outcome.attempts > 0 {
                    self.running.fetch_sub(1, Ordering::Relaxed);
                }
                if !outcome.is_success() {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                }
                self.bar.inc(1);
            }
            _ => {}
        }
        self.bar.set_message(format!(
            "{} failed, {} running",
            self.failed.load(Ordering::Relaxed),
            self.running.load(Ordering::Relaxed)
        ));
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_limits_parse() {
        assert_eq!(
            parse_max_failures("5").unwrap(),
            FailurePolicy::MaxFailures(5)
        );
        assert_eq!(
            parse_max_failures("12.5%").unwrap(),
            FailurePolicy::MaxFailurePercent(12.5)
        );
        assert!(parse_max_failures("0").is_err());
        assert!(parse_max_failures("150%").is_err());
        assert!(parse_max_failures("many").is_err());
    }
}
