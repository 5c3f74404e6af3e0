//! `info` for ADB devices: what `getprop` says.

use std::time::Duration;

use async_trait::async_trait;
use devbatch_core::{
    Capability, Command, Device, DeviceError, Operation, OperationContext, OperationFailure,
    ParamSpec, Params,
};
use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::adb;

/// Reads the device's properties with one `getprop` and reports model, manufacturer, brand,
/// Android release, SDK level, ABI, serial, build id and fingerprint, plus the adb serial,
/// transport id and feature list. Properties the device does not have are `null`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdbInfoOperation;

#[async_trait]
impl Operation for AdbInfoOperation {
    fn name(&self) -> &str {
        "info"
    }

    fn description(&self) -> &str {
        "read model, manufacturer, Android release, SDK, ABI, serial and build of an Android device"
    }

    fn backend(&self) -> Option<&str> {
        Some("adb")
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
        let dev = adb(device)?;
        let features = dev.features().await?;
        let out = device
            .run(&Command::shell("getprop").with_max_output(ctx.max_output()))
            .await?;
        if out.exit_code != 0 {
            return Err(DeviceError::Failed(format!(
                "getprop exited with status {}: {}",
                out.exit_code,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
            .into());
        }
        let props = parse_getprop(&String::from_utf8_lossy(&out.stdout));
        let text = |k: &str| props.get(k).cloned().map_or(Value::Null, Value::String);
        let sdk = props
            .get("ro.build.version.sdk")
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(Value::Null, |n| json!(n));
        Ok(json!({
            "serial": dev.serial(),
            "serialno": text("ro.serialno"),
            "model": text("ro.product.model"),
            "manufacturer": text("ro.product.manufacturer"),
            "brand": text("ro.product.brand"),
            "device": text("ro.product.device"),
            "product": text("ro.product.name"),
            "release": text("ro.build.version.release"),
            "sdk": sdk,
            "abi": text("ro.product.cpu.abi"),
            "build_id": text("ro.build.id"),
            "fingerprint": text("ro.build.fingerprint"),
            "boot_completed": props.get("sys.boot_completed").map(|v| v == "1"),
            "transport_id": dev.transport_id(),
            "features": features.as_slice(),
        }))
    }
}

/// Parses `getprop` output: `[key]: [value]` lines (values may span lines).
pub(crate) fn parse_getprop(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut pending: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some((key, value)) = pending.take() {
            // Inside a multi-line value.
            let joined = format!("{value}\n{line}");
            match joined.strip_suffix(']') {
                Some(v) => {
                    out.insert(key, v.to_string());
                }
                None => pending = Some((key, joined)),
            }
            continue;
        }
        let Some(rest) = line.strip_prefix('[') else {
            continue;
        };
        let Some((key, value)) = rest.split_once("]: [") else {
            continue;
        };
        match value.strip_suffix(']') {
            Some(v) => {
                out.insert(key.to_string(), v.to_string());
            }
            None => pending = Some((key.to_string(), value.to_string())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getprop_lines_are_parsed() {
        let p = parse_getprop(
            "[ro.product.model]: [Pixel 7]\n[ro.build.version.sdk]: [34]\n[empty]: []\n[multi]: [a\nb]\ngarbage\n[x]: [y]\n",
        );
        assert_eq!(p["ro.product.model"], "Pixel 7");
        assert_eq!(p["ro.build.version.sdk"], "34");
        assert_eq!(p["empty"], "");
        assert_eq!(p["multi"], "a\nb");
        assert_eq!(p["x"], "y");
    }
}
