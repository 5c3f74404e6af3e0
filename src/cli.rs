//! The command line: every flag, with help and examples.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run one operation across many devices in parallel, one result per device.
#[derive(Debug, Parser)]
#[command(name = "devbatch", version, about, propagate_version = true)]
#[command(after_long_help = TOP_HELP)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Commands,

    /// Pool file (TOML) listing the devices [env: DEVBATCH_POOL=]
    #[arg(long, global = true, value_name = "FILE", help_heading = GLOBAL)]
    pub pool: Option<PathBuf>,

    /// Load a plugin library (repeatable); also $DEVBATCH_PLUGIN_PATH (directories or files,
    /// separated by `:`) and `plugins = [...]` in the pool file.
    #[arg(long = "plugin", global = true, value_name = "PATH", help_heading = GLOBAL)]
    pub plugins: Vec<PathBuf>,

    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,

    /// Only errors on stderr, no progress bar.
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    pub quiet: bool,
}

/// The heading of the options every command takes.
const GLOBAL: &str = "Global options";

const TOP_HELP: &str = "Examples:
  devbatch run shell --param cmd='uname -a'
  devbatch run info --output json
  devbatch --pool fleet.toml run install_app --param app_path=app.apk --select os=android
  devbatch --pool fleet.toml devices

Exit codes:
  0    every device succeeded
  1    at least one device failed
  2    usage or configuration error (bad flag, bad pool file, unknown operation or device,
       invalid params, plugin refused)
  3    no device selected
  4    the devices ran but a report file or stdout could not be written
  130  interrupted (Ctrl-C); SIGTERM gives 143, SIGHUP 129

Pool lookup, first found wins:
  --pool FILE, $DEVBATCH_POOL, ./devbatch.toml, $XDG_CONFIG_HOME/devbatch/pool.toml
  (~/.config/devbatch/pool.toml), else the embedded default pool: the `local` device plus
  the devices of the default adb server when one answers.";

#[derive(Debug, Subcommand)]
pub(crate) enum Commands {
    /// Run an operation on the selected devices and report one result per device.
    #[command(after_long_help = RUN_EXAMPLES)]
    Run(Box<RunArgs>),
    /// List the devices of the pool (id, backend, state, labels).
    #[command(after_long_help = DEVICES_HELP)]
    Devices(DevicesArgs),
    /// List every operation with its parameters, types, defaults, help and source.
    #[command(after_long_help = OPS_HELP)]
    Ops(ListArgs),
    /// List the loaded plugins and what they provide.
    #[command(after_long_help = PLUGINS_HELP)]
    Plugins(ListArgs),
}

const DEVICES_HELP: &str = "\
Examples:
  devbatch devices
  devbatch --pool fleet.toml devices --select os=android --output json

Exit codes:
  0    at least one device listed
  2    usage or configuration error (bad flag, bad pool file, unknown device id)
  3    no device in the pool or the selection";

const OPS_HELP: &str = "\
Examples:
  devbatch ops
  devbatch --plugin ./libdevbatch_disk_usage.so ops --output json

Exit codes:
  0    listed
  2    usage or configuration error (bad flag, bad pool file, plugin that cannot load)";

const PLUGINS_HELP: &str = "\
Examples:
  devbatch --plugin ./libdevbatch_disk_usage.so plugins

Exit codes:
  0    listed (also when no plugin is loaded)
  2    usage or configuration error (bad flag, bad pool file, plugin that cannot load)";

const RUN_EXAMPLES: &str = "\
Examples:
  devbatch run shell --param cmd='df -h /'
  devbatch run shell --param 'args=[\"ls\",\"-l\",\"/my dir\"]'
  devbatch run push --param local=build/app.conf --param remote=/etc/app.conf --select role=web
  devbatch run pull --param remote=/var/log/syslog --param 'local=logs/{device}.log'
  devbatch run reboot --param wait=true --select backend=adb --canary 2 --timeout 5m
  devbatch run shell --param cmd=true --output jsonl > results.jsonl
  devbatch run info --report last.json; devbatch run info --rerun-failed last.json

Parameters: --param KEY=VALUE takes VALUE as JSON when it parses as JSON (true, 42, [\"a\"],
{\"k\":1}, \"quoted\") and as a plain string otherwise (a VALUE starting with [ or { must be valid
JSON), except that a parameter the operation declares as a string always gets VALUE as written
(--param cmd=true runs `true`; see `devbatch ops`). --param-str KEY=VALUE always takes a
string. --params-json takes one JSON object, inline or @FILE; --param and --param-str override
its keys.

Exit codes:
  0    every device succeeded
  1    at least one device failed
  2    usage or configuration error (bad flag, bad pool file, unknown operation or device,
       invalid params, plugin refused)
  3    no device selected
  4    the devices ran but a report file or stdout could not be written (the error says which;
       the other outputs are still written)
  130  interrupted (Ctrl-C): the report is still complete, unfinished devices `cancelled`;
       SIGTERM and SIGHUP do the same and give 143 and 129";

/// What `run` does and on which devices.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The operation (see `devbatch ops`).
    pub operation: String,

    /// A parameter, KEY=VALUE; VALUE is JSON if it parses as JSON, else a string; string
    /// parameters always take VALUE as written (repeatable).
    #[arg(long = "param", short = 'p', value_name = "KEY=VALUE")]
    pub params: Vec<String>,

    /// A parameter whose VALUE is always a string (repeatable).
    #[arg(long = "param-str", value_name = "KEY=VALUE")]
    pub string_params: Vec<String>,

    /// All parameters as one JSON object, inline or @FILE.
    #[arg(long, value_name = "JSON|@FILE")]
    pub params_json: Option<String>,

    #[command(flatten)]
    pub selection: Selection,

    /// Devices worked on at once.
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub concurrency: Option<u64>,

    /// Time allowed per device attempt (e.g. 30s, 5m); default: the operation's own.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Time allowed for the whole batch.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub deadline: Option<Duration>,

    /// Time allowed to connect to a device (backends that connect: ssh, adb).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub connect_timeout: Option<Duration>,

    /// Retries of transient failures (unreachable, disconnected, timeout), with backoff.
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,

    /// Stop starting devices after the first failure.
    #[arg(long, conflicts_with = "max_failures")]
    pub fail_fast: bool,

    /// Stop starting devices after N failures, or P% of the devices (e.g. 5 or 10%).
    #[arg(long, value_name = "N|P%")]
    pub max_failures: Option<String>,

    /// Run the first N devices first, the rest only if they all succeed.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub canary: Option<u64>,

    /// Most output bytes kept per device (e.g. 4MiB, 100k); past it the device fails.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_output: Option<usize>,

    /// Output format on stdout.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,

    /// Also write the JSON document to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Also write JUnit XML (one testcase per device) to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// Run only on the devices that failed in REPORT (a file written by --report or -o json).
    #[arg(long, value_name = "REPORT", conflicts_with = "devices")]
    pub rerun_failed: Option<PathBuf>,
}

/// Which devices.
#[derive(Debug, Args)]
pub(crate) struct Selection {
    /// Device ids, comma-separated (repeatable).
    #[arg(long, short = 'd', value_name = "ID,...", value_delimiter = ',')]
    pub devices: Vec<String>,

    /// Only devices with this label, KEY=VALUE (repeatable: all must match). The key
    /// `backend` also matches the backend name.
    #[arg(long, short = 's', value_name = "KEY=VALUE")]
    pub select: Vec<String>,
}

/// `devices` arguments.
#[derive(Debug, Args)]
pub(crate) struct DevicesArgs {
    #[command(flatten)]
    pub selection: Selection,

    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = ListFormat::Human)]
    pub output: ListFormat,
}

/// `ops` and `plugins` arguments.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = ListFormat::Human)]
    pub output: ListFormat,
}

/// How `run` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// A summary for people: failures first, successes grouped by identical result.
    Human,
    /// Exactly one JSON document: `{"<device id>": {"status", "result", "error", ...}}`.
    Json,
    /// One JSON line per device as it finishes, then one summary line.
    Jsonl,
}

/// How the listing commands print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ListFormat {
    /// For people: a table of devices, a list of operations or plugins.
    Human,
    /// JSON.
    Json,
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (expected a duration such as 500ms, 30s, 5m)"))?;
    if d.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(d)
}

pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("expected a size such as 4MiB, 100k or 65536, got {s:?}"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        _ => return Err(format!("unknown size unit {unit:?} (use k, M or G)")),
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("size {s:?} is zero or too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("4MiB"), Ok(4 * 1024 * 1024));
        assert_eq!(parse_size("100k"), Ok(102_400));
        assert_eq!(parse_size("65536"), Ok(65_536));
        assert!(parse_size("4 parsecs").is_err());
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("0s").is_err());
    }
}
