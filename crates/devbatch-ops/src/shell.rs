//! `shell`: run a command line or an argv.

use std::time::Duration;

use async_trait::async_trait;
use devbatch_core::{
    Capability, Command, Device, DeviceError, Operation, OperationContext, OperationError,
    OperationFailure, ParamSpec, ParamType, Params,
};
use serde_json::{Value, json};

use crate::output::{command_output_json, first_line};

/// Runs `cmd` (a shell line, as typed) or `args` (an argv; every argument is quoted for the
/// device's shell, so a parameter can never inject a second command). Result:
/// `{exit_code, stdout, stderr}`. An exit code not in `ok_exit_codes` (default `[0]`) is an
/// error that keeps the output as its partial result.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShellOperation;

#[async_trait]
impl Operation for ShellOperation {
    fn name(&self) -> &str {
        "shell"
    }

    fn description(&self) -> &str {
        "run a shell command line (cmd) or a program with literal arguments (args)"
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::optional(
                "cmd",
                ParamType::String,
                "command line for the device's shell",
            ),
            ParamSpec::optional(
                "args",
                ParamType::StringList,
                "program and arguments, each kept literal",
            ),
            ParamSpec::optional(
                "stdin",
                ParamType::String,
                "text fed to the command's standard input",
            ),
            ParamSpec::with_default(
                "ok_exit_codes",
                ParamType::IntegerList,
                json!([0]),
                "exit codes that count as success",
            ),
        ]
    }

    fn idempotent(&self) -> bool {
        false
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn required_capabilities(&self) -> &[Capability] {
        &[Capability::Exec]
    }

    fn validate(&self, params: &Params) -> Result<(), OperationError> {
        let invalid = |expected: &str, got: &str| OperationError::InvalidParam {
            operation: "shell".into(),
            param: "cmd".into(),
            expected: expected.into(),
            got: got.into(),
        };
        let codes = params
            .as_map()
            .get("ok_exit_codes")
            .and_then(Value::as_array);
        let impossible = match codes {
            Some(codes) if codes.is_empty() => Some("an empty list".to_string()),
            Some(codes) => codes
                .iter()
                .find(|c| !c.as_i64().is_some_and(|c| (0..=255).contains(&c)))
                .map(|c| format!("{c}")),
            None => None,
        };
        if let Some(got) = impossible {
            // No command can exit otherwise: every device would fail.
            return Err(OperationError::InvalidParam {
                operation: "shell".into(),
                param: "ok_exit_codes".into(),
                expected: "a non-empty list of exit codes from 0 to 255".into(),
                got,
            });
        }
        match (params.str("cmd"), params.strings("args")) {
            (Some(_), Some(_)) => Err(invalid(
                "given alone (use either cmd or args)",
                "both cmd and args",
            )),
            (None, None) => Err(OperationError::MissingParam {
                operation: "shell".into(),
                param: "cmd".into(),
                expected: "a string: the command line (or give args, a list of strings)".into(),
            }),
            (Some(cmd), None) if cmd.trim().is_empty() => {
                Err(invalid("a non-empty command line", "an empty string"))
            }
            (None, Some(args)) if args.is_empty() => Err(OperationError::InvalidParam {
                operation: "shell".into(),
                param: "args".into(),
                expected: "a non-empty list (the program first)".into(),
                got: "an empty list".into(),
            }),
            (Some(cmd), None) => no_nul("shell", "cmd", cmd),
            (None, Some(args)) => args
                .iter()
                .enumerate()
                .try_for_each(|(i, arg)| no_nul("shell", &format!("args[{i}]"), arg)),
        }
    }

    async fn execute(
        &self,
        device: &dyn Device,
        params: &Params,
        ctx: &OperationContext,
    ) -> Result<Value, OperationFailure> {
        let mut command = match (params.str("cmd"), params.strings("args")) {
            (Some(cmd), _) => Command::shell(cmd),
            (None, Some(args)) => Command::argv(args),
            (None, None) => {
                return Err(DeviceError::InvalidInput("shell needs cmd or args".into()).into());
            }
        };
        command.max_output = ctx.max_output();
        if let Some(stdin) = params.str("stdin") {
            command.stdin = Some(stdin.as_bytes().to_vec());
        }
        let out = device.run(&command).await?;
        let result = command_output_json(&out);
        let ok = params.ints("ok_exit_codes").unwrap_or_else(|| vec![0]);
        if ok.contains(&i64::from(out.exit_code)) {
            return Ok(result);
        }
        let why = first_line(&out.stderr).or_else(|| first_line(&out.stdout));
        let message = match why {
            Some(line) => format!("command exited with status {}: {line}", out.exit_code),
            None => format!("command exited with status {}", out.exit_code),
        };
        Err(OperationFailure::with_partial(
            DeviceError::Failed(message),
            result,
        ))
    }
}

/// Refuses a command-line parameter with a NUL byte: no program can receive one (the OS takes
/// NUL as the end of an argument), so it would fail on every device as an I/O error.
pub(crate) fn no_nul(operation: &str, param: &str, value: &str) -> Result<(), OperationError> {
    match value.find('\0') {
        None => Ok(()),
        Some(at) => Err(OperationError::InvalidParam {
            operation: operation.into(),
            param: param.into(),
            expected: "text without NUL bytes".into(),
            got: format!("a NUL byte at byte {at}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devbatch_core::validate_params;
    use serde_json::json;

    fn check(params: serde_json::Value) -> Result<(), OperationError> {
        let op = ShellOperation;
        let p = validate_params("shell", &op.params(), &params)?;
        op.validate(&p)
    }

    #[test]
    fn nul_bytes_in_cmd_or_args_are_refused_before_anything_runs() {
        assert_eq!(
            check(json!({"cmd": "echo a\u{0}b"}))
                .unwrap_err()
                .to_string(),
            "parameter 'cmd' of operation 'shell' must be text without NUL bytes, got a NUL byte at byte 6"
        );
        assert_eq!(
            check(json!({"args": ["echo", "ok", "\u{0}"]}))
                .unwrap_err()
                .to_string(),
            "parameter 'args[2]' of operation 'shell' must be text without NUL bytes, got a NUL byte at byte 0"
        );
        check(json!({"cmd": "echo ok", "stdin": "a\u{0}b"})).expect("stdin is bytes");
        check(json!({"args": ["printf", "%s", "x"]})).unwrap();
    }

    #[test]
    fn an_empty_command_is_refused() {
        assert_eq!(
            check(json!({"cmd": " "})).unwrap_err().to_string(),
            "parameter 'cmd' of operation 'shell' must be a non-empty command line, got an empty string"
        );
    }
}
