//! An operation plugin: `disk_usage` runs `df -Pk` on a device and reports every filesystem as
//! JSON, optionally failing the devices whose filesystems are fuller than a limit.
//!
//! ```sh
//! devbatch --plugin target/debug/libdevbatch_disk_usage.so run disk_usage \
//!     --params '{"paths": ["/", "/data"], "max_use_percent": 90}'
//! ```
//!
//! Result of one device:
//!
//! ```json
//! {"filesystems": [{"filesystem": "/dev/sda1", "size_kib": 41152736, "used_kib": 15522324,
//!                   "available_kib": 23517588, "use_percent": 40, "mounted_on": "/"}],
//!  "fullest": "/"}
//! ```
//!
//! It only uses [`Device::run`], so it works on every backend that runs commands (ssh, adb,
//! local, and the `dir` plugin's devices), and it needs nothing from the host's runtime.

use std::time::Duration;

use async_trait::async_trait;
use devbatch_core::{
    Capability, Command, Device, DeviceError, Operation, OperationContext, OperationFailure,
    ParamSpec, ParamType, Params,
};
use devbatch_plugin::PluginRegistrar;
use serde_json::{Value, json};

devbatch_plugin::export_plugin!("disk_usage", env!("CARGO_PKG_VERSION"), register);

fn register(registrar: &mut PluginRegistrar) {
    registrar.add_operation(DiskUsage);
}

/// The `disk_usage` operation.
struct DiskUsage;

#[async_trait]
impl Operation for DiskUsage {
    fn name(&self) -> &str {
        "disk_usage"
    }

    fn description(&self) -> &str {
        "report the size, use and free space of filesystems (df -Pk) as JSON"
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::optional(
                "paths",
                ParamType::StringList,
                "report only the filesystems holding these paths (default: all)",
            ),
            ParamSpec::optional(
                "max_use_percent",
                ParamType::Integer,
                "fail the device if a reported filesystem is fuller than this percentage",
            ),
        ]
    }

    fn idempotent(&self) -> bool {
        true
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_secs(30)
    }

    fn required_capabilities(&self) -> &[Capability] {
        &[Capability::Exec]
    }

    fn validate(&self, params: &Params) -> Result<(), devbatch_core::OperationError> {
        match params.int("max_use_percent") {
            Some(p) if !(0..=100).contains(&p) => {
                Err(devbatch_core::OperationError::InvalidParam {
                    operation: "disk_usage".into(),
                    param: "max_use_percent".into(),
                    expected: "a percentage from 0 to 100".into(),
                    got: format!("number {p}"),
                })
            }
            _ => Ok(()),
        }
    }

    async fn execute(
        &self,
        device: &dyn Device,
        params: &Params,
        ctx: &OperationContext,
    ) -> Result<Value, OperationFailure> {
        let mut argv = vec!["df".to_string(), "-Pk".to_string()];
        if let Some(paths) = params.strings("paths") {
            argv.push("--".into());
            argv.extend(paths.into_iter().map(str::to_string));
        }
        let out = device
            .run(&Command::argv(argv).with_max_output(ctx.max_output()))
            .await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let filesystems = parse_df(&stdout);
        let report = report(&filesystems);
        if out.exit_code != 0 {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(OperationFailure::with_partial(
                DeviceError::Failed(format!(
                    "`df -Pk` exited with status {}{}{}",
                    out.exit_code,
                    if stderr.trim().is_empty() { "" } else { ": " },
                    stderr.trim()
                )),
                report,
            ));
        }
        if filesystems.is_empty() {
            return Err(DeviceError::Protocol(format!(
                "`df -Pk` printed no filesystem: {:?}",
                stdout.chars().take(200).collect::<String>()
            ))
            .into());
        }
        if let Some(limit) = params.int("max_use_percent") {
            let over: Vec<String> = filesystems
                .iter()
                .filter(|fs| fs.use_percent.is_some_and(|p| i64::from(p) > limit))
                .map(|fs| format!("{} is {}% full", fs.mounted_on, fs.use_percent.unwrap_or(0)))
                .collect();
            if !over.is_empty() {
                return Err(OperationFailure::with_partial(
                    DeviceError::Failed(format!("{} (limit {limit}%)", over.join(", "))),
                    report,
                ));
            }
        }
        Ok(report)
    }
}

/// One line of `df -P` output.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Filesystem {
    filesystem: String,
    size_kib: u64,
    used_kib: u64,
    available_kib: u64,
    /// `None` where df prints `-` (filesystems without blocks).
    use_percent: Option<u32>,
    mounted_on: String,
}

/// Parses the POSIX output format of `df -Pk`: a header line, then one line per filesystem
/// with six columns. The mount point is the rest of the line, so it may hold spaces; the
/// filesystem name may not (POSIX gives no way to tell where it would end). Lines that do
/// not fit are skipped.
fn parse_df(text: &str) -> Vec<Filesystem> {
    text.lines()
        .filter(|l| !l.starts_with("Filesystem"))
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Filesystem> {
    let mut rest = line.trim_start();
    let mut fields = Vec::with_capacity(5);
    for _ in 0..5 {
        let end = rest.find(char::is_whitespace)?;
        fields.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    let mounted_on = rest.trim_end();
    if mounted_on.is_empty() {
        return None;
    }
    let number = |s: &str| s.parse::<u64>().ok();
    Some(Filesystem {
        filesystem: fields[0].to_string(),
        size_kib: number(fields[1])?,
        used_kib: number(fields[2])?,
        available_kib: number(fields[3])?,
        use_percent: match fields[4] {
            "-" => None,
            p => Some(p.strip_suffix('%')?.parse().ok()?),
        },
        mounted_on: mounted_on.to_string(),
    })
}

fn report(filesystems: &[Filesystem]) -> Value {
    let fullest = filesystems
        .iter()
        .filter(|fs| fs.use_percent.is_some())
        .max_by_key(|fs| fs.use_percent)
        .map(|fs| fs.mounted_on.clone());
    json!({
        "filesystems": filesystems.iter().map(|fs| json!({
            "filesystem": fs.filesystem,
            "size_kib": fs.size_kib,
            "used_kib": fs.used_kib,
            "available_kib": fs.available_kib,
            "use_percent": fs.use_percent,
            "mounted_on": fs.mounted_on,
        })).collect::<Vec<_>>(),
        "fullest": fullest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
Filesystem     1024-blocks      Used Available Capacity Mounted on
/dev/sda1         41152736  15522324  23517588      40% /
tmpfs               816220         0    816220       0% /dev/shm
//nas/share     1000000000 950000000  50000000      95% /mnt/my backups
proc                     0         0         0       -  /proc
garbage line
";

    #[test]
    fn parses_every_column_and_mount_points_with_spaces() {
        let fs = parse_df(SAMPLE);
        assert_eq!(fs.len(), 4, "{fs:?}");
        assert_eq!(
            fs[0],
            Filesystem {
                filesystem: "/dev/sda1".into(),
                size_kib: 41_152_736,
                used_kib: 15_522_324,
                available_kib: 23_517_588,
                use_percent: Some(40),
                mounted_on: "/".into(),
            }
        );
        assert_eq!(fs[2].mounted_on, "/mnt/my backups");
        assert_eq!(fs[2].use_percent, Some(95));
        assert_eq!(fs[3].use_percent, None);
        assert_eq!(fs[3].mounted_on, "/proc");
    }

    #[test]
    fn the_report_names_the_fullest_filesystem() {
        let r = report(&parse_df(SAMPLE));
        assert_eq!(r["fullest"], "/mnt/my backups");
        assert_eq!(r["filesystems"][1]["available_kib"], 816_220);
        assert_eq!(r["filesystems"][3]["use_percent"], Value::Null);
    }
}
