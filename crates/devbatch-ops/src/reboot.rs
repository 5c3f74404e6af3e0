//! `reboot`: restart devices, optionally waiting until they are back.

use std::time::Duration;

use async_trait::async_trait;
use devbatch_core::{
    Capability, Device, Operation, OperationContext, OperationError, OperationFailure, ParamSpec,
    ParamType, Params, RebootMode,
};
use serde_json::{Value, json};

/// Reboots each device through its backend. Without `wait`, success means the device accepted
/// the request, and the result says only that; with `wait`, success means it came back and is
/// usable, within the timeout.
#[derive(Debug, Clone, Copy, Default)]
pub struct RebootOperation;

#[async_trait]
impl Operation for RebootOperation {
    fn name(&self) -> &str {
        "reboot"
    }

    fn description(&self) -> &str {
        "reboot the device (system, bootloader or recovery), optionally waiting until it is back"
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::with_default(
                "wait",
                ParamType::Boolean,
                json!(false),
                "wait until the device is back and usable",
            ),
            ParamSpec::with_default(
                "mode",
                ParamType::String,
                json!("system"),
                "system, bootloader or recovery",
            ),
        ]
    }

    fn idempotent(&self) -> bool {
        false
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_secs(300)
    }

    fn required_capabilities(&self) -> &[Capability] {
        &[Capability::Reboot]
    }

    fn validate(&self, params: &Params) -> Result<(), OperationError> {
        parse_mode(params.str("mode").unwrap_or("system")).map(|_| ())
    }

    async fn execute(
        &self,
        device: &dyn Device,
        params: &Params,
        _ctx: &OperationContext,
    ) -> Result<Value, OperationFailure> {
        let mode_name = params.str("mode").unwrap_or("system");
        let mode = parse_mode(mode_name)
            .map_err(|e| devbatch_core::DeviceError::InvalidInput(e.to_string()))?;
        let wait = params.flag("wait");
        let started = tokio::time::Instant::now();
        device.reboot(mode, wait).await?;
        Ok(if wait {
            json!({"mode": mode_name, "rebooted": true, "back_after_ms": started.elapsed().as_millis() as u64})
        } else {
            json!({"mode": mode_name, "reboot_requested": true})
        })
    }
}

fn parse_mode(mode: &str) -> Result<RebootMode, OperationError> {
    match mode {
        "system" => Ok(RebootMode::System),
        "bootloader" => Ok(RebootMode::Bootloader),
        "recovery" => Ok(RebootMode::Recovery),
        other => Err(OperationError::InvalidParam {
            operation: "reboot".into(),
            param: "mode".into(),
            expected: "one of system, bootloader, recovery".into(),
            got: format!("{other:?}"),
        }),
    }
}
