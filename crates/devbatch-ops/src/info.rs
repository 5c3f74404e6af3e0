//! `info`: what a POSIX device is.

use std::time::Duration;

use async_trait::async_trait;
use devbatch_core::{
    Capability, Command, Device, DeviceError, Operation, OperationContext, OperationFailure,
    ParamSpec, Params,
};
use serde_json::{Map, Value, json};

/// Reads hostname, OS name and release, kernel, architecture, uptime, CPU count and memory from
/// a POSIX device with one command. Fields the device cannot tell are `null`.
#[derive(Debug, Clone, Copy, Default)]
pub struct InfoOperation;

/// One shell line printing `key=value` lines; every probe tolerates a missing tool.
const PROBE: &str = "echo \"hostname=$(uname -n 2>/dev/null)\"; \
echo \"os=$(uname -s 2>/dev/null)\"; \
echo \"kernel=$(uname -r 2>/dev/null)\"; \
echo \"arch=$(uname -m 2>/dev/null)\"; \
if [ -r /etc/os-release ]; then . /etc/os-release 2>/dev/null; echo \"os_release=$PRETTY_NAME\"; fi; \
if [ -r /proc/uptime ]; then read up _ < /proc/uptime; echo \"uptime_s=${up%.*}\"; fi; \
echo \"cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null)\"; \
if [ -r /proc/meminfo ]; then while read k v _; do [ \"$k\" = MemTotal: ] && echo \"mem_total_kb=$v\"; done < /proc/meminfo; fi; true";

#[async_trait]
impl Operation for InfoOperation {
    fn name(&self) -> &str {
        "info"
    }

    fn description(&self) -> &str {
        "read hostname, OS, kernel, architecture, uptime, CPU count and memory"
    }

    fn params(&self) -> Vec<ParamSpec> {
        Vec::new()
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

    async fn execute(
        &self,
        device: &dyn Device,
        _params: &Params,
        ctx: &OperationContext,
    ) -> Result<Value, OperationFailure> {
        let out = device
            .run(&Command::shell(PROBE).with_max_output(ctx.max_output()))
            .await?;
        if out.exit_code != 0 {
            return Err(DeviceError::Failed(format!(
                "the info probe exited with status {}",
                out.exit_code
            ))
            .into());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        parse_probe(&text).ok_or_else(|| {
            let shown: String = text.chars().take(200).collect();
            OperationFailure {
                error: DeviceError::Failed(format!(
                    "the info probe's output has none of the expected `key=value` lines: {shown:?}"
                )),
                partial: Some(Value::String(text.into_owned())),
            }
        })
    }
}

/// The probe's fields, or `None` when the output has none of them (not a POSIX shell, or a
/// command that printed something else).
fn parse_probe(text: &str) -> Option<Value> {
    let mut found = Map::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim();
            if !v.is_empty() {
                found.insert(k.to_string(), Value::String(v.to_string()));
            }
        }
    }
    const KEYS: [&str; 8] = [
        "hostname",
        "os",
        "os_release",
        "kernel",
        "arch",
        "uptime_s",
        "cpus",
        "mem_total_kb",
    ];
    if !KEYS.iter().any(|k| found.contains_key(*k)) {
        return None;
    }
    let text_of = |k: &str| found.get(k).cloned().unwrap_or(Value::Null);
    let number_of = |k: &str| {
        found
            .get(k)
            .and_then(Value::as_str)
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(Value::Null, |n| json!(n))
    };
    Some(json!({
        "hostname": text_of("hostname"),
        "os": text_of("os"),
        "os_release": text_of("os_release"),
        "kernel": text_of("kernel"),
        "arch": text_of("arch"),
        "uptime_s": number_of("uptime_s"),
        "cpus": number_of("cpus"),
        "mem_total_kb": number_of("mem_total_kb"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output_is_parsed_and_gaps_are_null() {
        let v = parse_probe(
            "hostname=box\nos=Linux\nkernel=6.1.0\narch=x86_64\nos_release=Debian GNU/Linux 12 (bookworm)\nuptime_s=123\ncpus=2\n",
        )
        .expect("fields found");
        assert_eq!(v["hostname"], "box");
        assert_eq!(v["os_release"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(v["uptime_s"], 123);
        assert_eq!(v["cpus"], 2);
        assert_eq!(v["mem_total_kb"], Value::Null);
    }

    #[test]
    fn output_without_any_field_is_not_a_result() {
        assert_eq!(parse_probe("Linux board 6.1.0 aarch64\n"), None);
        assert_eq!(parse_probe(""), None);
    }
}
