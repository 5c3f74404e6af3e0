//! `screenshot`: a PNG of the screen through `exec:screencap -p`.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use devbatch_core::{
    Capability, Device, DeviceError, Operation, OperationContext, OperationError, OperationFailure,
    ParamSpec, ParamType, Params,
};
use devbatch_ops::device_path_component;
use serde_json::{Value, json};

use super::{adb, first_lines};
use crate::sync::{TempGuard, temp_beside};

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Largest screenshot accepted (a 4K screen's PNG is well below it).
const MAX_PNG: usize = 64 * 1024 * 1024;

/// Takes a screenshot of each device and writes it to `local` (with `{device}` replaced by the
/// device id), atomically: under a temporary name first, renamed when complete and checked to
/// be a PNG.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScreenshotOperation;

#[async_trait]
impl Operation for ScreenshotOperation {
    fn name(&self) -> &str {
        "screenshot"
    }

    fn description(&self) -> &str {
        "save a PNG screenshot of each device to local (with {device})"
    }

    fn backend(&self) -> Option<&str> {
        Some("adb")
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![ParamSpec::with_default(
            "local",
            ParamType::String,
            json!("screenshots/{device}.png"),
            "local file; {device} becomes the device id",
        )]
    }

    fn idempotent(&self) -> bool {
        true
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn required_capabilities(&self) -> &[Capability] {
        &[Capability::Exec]
    }

    fn validate(&self, params: &Params) -> Result<(), OperationError> {
        let local = params.str("local").unwrap_or_default();
        if !local.contains("{device}") {
            return Err(OperationError::InvalidParam {
                operation: "screenshot".into(),
                param: "local".into(),
                expected: "a path containing {device}, so that devices never overwrite each other's screenshots".into(),
                got: format!("{local:?}"),
            });
        }
        Ok(())
    }

    async fn execute(
        &self,
        device: &dyn Device,
        params: &Params,
        _ctx: &OperationContext,
    ) -> Result<Value, OperationFailure> {
        let dev = adb(device)?;
        let template = params.str("local").unwrap_or_default();
        let local =
            PathBuf::from(template.replace("{device}", &device_path_component(device.id())));
        let png = dev
            .exec_raw("exec:screencap -p", None, MAX_PNG)
            .await
            .map_err(DeviceError::from)?;
        if !png.starts_with(PNG_SIGNATURE) {
            return Err(DeviceError::Failed(format!(
                "screencap did not produce a PNG ({} bytes): {}",
                png.len(),
                first_lines(&String::from_utf8_lossy(&png[..png.len().min(512)]), 2)
            ))
            .into());
        }
        let (width, height) = png_size(&png).unzip();
        if let Some(parent) = local.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| DeviceError::io(format!("create {}", parent.display()), e))?;
        }
        let guard = TempGuard::new(temp_beside(&local));
        tokio::fs::write(guard.path(), &png)
            .await
            .map_err(|e| DeviceError::io(format!("write {}", guard.path().display()), e))?;
        guard.commit(&local).await.map_err(DeviceError::from)?;
        Ok(json!({
            "local": local.display().to_string(),
            "bytes": png.len(),
            "width": width,
            "height": height,
        }))
    }
}

/// Width and height from the IHDR chunk.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.get(12..16)? != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(png.get(16..20)?.try_into().ok()?);
    let h = u32::from_be_bytes(png.get(20..24)?.try_into().ok()?);
    Some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_header_is_read() {
        let mut png = PNG_SIGNATURE.to_vec();
        png.extend([0, 0, 0, 13]);
        png.extend(b"IHDR");
        png.extend(1080u32.to_be_bytes());
        png.extend(2400u32.to_be_bytes());
        assert_eq!(png_size(&png), Some((1080, 2400)));
        assert_eq!(png_size(b"short"), None);
    }
}
