//! `run_test`: run a test command and report pass or fail.

use std::time::Duration;

use async_trait::async_trait;
use devbatch_core::{
    Capability, Command, Device, DeviceError, Operation, OperationContext, OperationError,
    OperationFailure, ParamSpec, ParamType, Params,
};
use serde_json::{Value, json};

use crate::output::bytes_field;
use crate::shell::no_nul;

/// Runs a test command (`cmd`) and reports `{test_name, passed, exit_code, duration_ms, stdout,
/// stderr}`; the device fails when the test fails, keeping the report as its partial result.
/// Backends with a test framework of their own (ADB instrumentation) provide their own
/// `run_test`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunTestOperation;

#[async_trait]
impl Operation for RunTestOperation {
    fn name(&self) -> &str {
        "run_test"
    }

    fn description(&self) -> &str {
        "run a test command and report pass/fail, duration and output"
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::required(
                "cmd",
                ParamType::String,
                "the test command line; exit status 0 means passed",
            ),
            ParamSpec::optional(
                "test_name",
                ParamType::String,
                "name used in reports (default: cmd)",
            ),
        ]
    }

    fn idempotent(&self) -> bool {
        false
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_secs(1800)
    }

    fn required_capabilities(&self) -> &[Capability] {
        &[Capability::Exec]
    }

    fn validate(&self, params: &Params) -> Result<(), OperationError> {
        let cmd = params.str("cmd").unwrap_or_default();
        if cmd.trim().is_empty() {
            return Err(OperationError::InvalidParam {
                operation: "run_test".into(),
                param: "cmd".into(),
                expected: "a non-empty command line".into(),
                got: "an empty string".into(),
            });
        }
        no_nul("run_test", "cmd", cmd)
    }

    async fn execute(
        &self,
        device: &dyn Device,
        params: &Params,
        ctx: &OperationContext,
    ) -> Result<Value, OperationFailure> {
        let cmd = params.str("cmd").unwrap_or_default();
        let name = params.str("test_name").unwrap_or(cmd);
        let started = tokio::time::Instant::now();
        let out = device
            .run(&Command::shell(cmd).with_max_output(ctx.max_output()))
            .await?;
        let passed = out.exit_code == 0;
        let mut report = json!({
            "test_name": name,
            "passed": passed,
            "exit_code": out.exit_code,
            "duration_ms": started.elapsed().as_millis() as u64,
        });
        if let Value::Object(map) = &mut report {
            bytes_field(map, "stdout", &out.stdout);
            bytes_field(map, "stderr", &out.stderr);
        }
        if passed {
            Ok(report)
        } else {
            let err = DeviceError::Failed(format!(
                "test {name} failed with exit status {}",
                out.exit_code
            ));
            Err(OperationFailure::with_partial(err, report))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devbatch_core::validate_params;

    fn check(params: Value) -> Result<(), OperationError> {
        let op = RunTestOperation;
        let p = validate_params("run_test", &op.params(), &params)?;
        op.validate(&p)
    }

    #[test]
    fn an_empty_or_nul_command_is_refused_like_shell_does() {
        for empty in ["", "  \t"] {
            assert_eq!(
                check(json!({"cmd": empty})).unwrap_err().to_string(),
                "parameter 'cmd' of operation 'run_test' must be a non-empty command line, got an empty string"
            );
        }
        assert_eq!(
            check(json!({"cmd": "true\u{0}"})).unwrap_err().to_string(),
            "parameter 'cmd' of operation 'run_test' must be text without NUL bytes, got a NUL byte at byte 4"
        );
        check(json!({"cmd": "true", "test_name": "smoke"})).unwrap();
    }
}
