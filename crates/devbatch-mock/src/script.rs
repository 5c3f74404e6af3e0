//! What a mock device does when asked: [`Script`]s for operations, [`CommandScript`]s for
//! commands.

use std::time::Duration;

use devbatch_core::{DeviceError, ErrorKind};
use serde::Deserialize;
use serde_json::Value;

/// A wait before answering: fixed, or drawn uniformly from a range. In pool files: a number
/// of milliseconds or `[min, max]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(from = "LatencyMs")]
pub struct Latency {
    min: Duration,
    max: Duration,
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "a number of milliseconds, or [min, max] for a random latency in that range"
)]
enum LatencyMs {
    Fixed(u64),
    Range([u64; 2]),
}

impl From<LatencyMs> for Latency {
    fn from(v: LatencyMs) -> Self {
        match v {
            LatencyMs::Fixed(ms) => Latency::fixed(Duration::from_millis(ms)),
            LatencyMs::Range([a, b]) => {
                Latency::between(Duration::from_millis(a), Duration::from_millis(b))
            }
        }
    }
}

impl Latency {
    /// Always this long.
    pub fn fixed(d: Duration) -> Self {
        Latency { min: d, max: d }
    }

    /// Uniformly between `a` and `b`.
    pub fn between(a: Duration, b: Duration) -> Self {
        Latency {
            min: a.min(b),
            max: a.max(b),
        }
    }

    pub(crate) fn draw(self) -> Duration {
        if self.min == self.max {
            return self.min;
        }
        let span = (self.max - self.min).as_nanos() as u64;
        self.min + Duration::from_nanos(fastrand::u64(0..=span))
    }

    pub(crate) async fn wait(self) {
        let d = self.draw();
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

/// An error a script answers with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawScriptedError")]
pub struct ScriptedError {
    /// Its kind (`unreachable`, `timeout`, `failed`, `disconnected`, ...).
    pub kind: ErrorKind,
    /// Its message. For the `timeout` kind it is the time the device waited, such as `30s`.
    pub message: String,
    /// A partial result kept with it (for example the output seen before a disconnect).
    #[serde(default)]
    pub partial: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScriptedError {
    kind: ErrorKind,
    message: String,
    #[serde(default)]
    partial: Option<Value>,
}

impl TryFrom<RawScriptedError> for ScriptedError {
    type Error = String;

    fn try_from(raw: RawScriptedError) -> Result<Self, String> {
        if matches!(
            raw.kind,
            ErrorKind::Panicked | ErrorKind::Aborted | ErrorKind::NotFound
        ) {
            return Err(format!(
                "the error kind `{}` is given by the engine, not by a device (script `panic = \"...\"` for a panic, or use a failure policy for `aborted`)",
                raw.kind.as_str()
            ));
        }
        if raw.kind == ErrorKind::Timeout {
            humantime::parse_duration(&raw.message).map_err(|e| {
                format!(
                    "a `timeout` error's message is the time waited, such as \"30s\"; got {:?}: {e}",
                    raw.message
                )
            })?;
        }
        Ok(ScriptedError {
            kind: raw.kind,
            message: raw.message,
            partial: raw.partial,
        })
    }
}

impl ScriptedError {
    pub(crate) fn to_device_error(&self) -> DeviceError {
        let m = self.message.clone();
        match self.kind {
            ErrorKind::Timeout => {
                DeviceError::Timeout(humantime::parse_duration(&m).unwrap_or(Duration::ZERO))
            }
            ErrorKind::Unreachable => DeviceError::Unreachable(m),
            ErrorKind::Disconnected => DeviceError::Disconnected(m),
            ErrorKind::Auth => DeviceError::Auth(m),
            ErrorKind::HostKey => DeviceError::HostKey(m),
            ErrorKind::NotReady => DeviceError::NotReady {
                state: "not ready".into(),
                hint: m,
            },
            ErrorKind::Unsupported => DeviceError::Unsupported(m),
            ErrorKind::Cancelled => DeviceError::Cancelled,
            ErrorKind::OutputLimit => DeviceError::OutputLimit { limit: 0 },
            ErrorKind::Protocol => DeviceError::Protocol(m),
            ErrorKind::InvalidInput => DeviceError::InvalidInput(m),
            // "read /data/x: Permission denied": what was being done, then the OS error.
            ErrorKind::Io => match m.split_once(": ") {
                Some((context, error)) => DeviceError::io(context, std::io::Error::other(error)),
                None => DeviceError::io("i/o", std::io::Error::other(m)),
            },
            _ => DeviceError::Failed(m),
        }
    }
}

/// How a mock device answers one operation. Parts combine: `latency` first, then the first
/// `fail_first` attempts fail, then `hang`, `panic`, `error` or `result`, checked in that
/// order. A script with none of the last four lets the operation run for real on the mock's
/// primitives (after the latency and flaky failures).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Wait before answering.
    #[serde(default, rename = "latency_ms")]
    pub latency: Option<Latency>,
    /// Fail this many attempts first (with `error` if given, else `unreachable`), then go on.
    #[serde(default)]
    pub fail_first: u32,
    /// Never answer (until the engine's timeout or cancellation drops the call).
    #[serde(default)]
    pub hang: bool,
    /// Panic with this message.
    #[serde(default)]
    pub panic: Option<String>,
    /// Fail with this error.
    #[serde(default)]
    pub error: Option<ScriptedError>,
    /// Succeed with this result.
    #[serde(default)]
    pub result: Option<Value>,
}

impl Script {
    /// Succeed with `result`.
    pub fn succeed(result: Value) -> Self {
        Script {
            result: Some(result),
            ..Self::default()
        }
    }

    /// Fail with an error of `kind`.
    pub fn fail(kind: ErrorKind, message: impl Into<String>) -> Self {
        Script {
            error: Some(ScriptedError {
                kind,
                message: message.into(),
                partial: None,
            }),
            ..Self::default()
        }
    }

    /// Fail with an error of `kind` that keeps a partial result (a disconnect after partial
    /// output, say).
    pub fn fail_with_partial(kind: ErrorKind, message: impl Into<String>, partial: Value) -> Self {
        Script {
            error: Some(ScriptedError {
                kind,
                message: message.into(),
                partial: Some(partial),
            }),
            ..Self::default()
        }
    }

    /// Never answer.
    pub fn hang() -> Self {
        Script {
            hang: true,
            ..Self::default()
        }
    }

    /// Panic with `message`.
    pub fn panic(message: impl Into<String>) -> Self {
        Script {
            panic: Some(message.into()),
            ..Self::default()
        }
    }

    /// Only wait, then let the operation run for real.
    pub fn delay(latency: Latency) -> Self {
        Script {
            latency: Some(latency),
            ..Self::default()
        }
    }

    /// Waits `latency` first.
    pub fn with_latency(mut self, latency: Latency) -> Self {
        self.latency = Some(latency);
        self
    }

    /// Fails the first `n` attempts first. Attempts are counted over the device's life, not per
    /// batch: a device reused by later batches has used them up.
    pub fn flaky(mut self, n: u32) -> Self {
        self.fail_first = n;
        self
    }
}

/// How a mock device answers a command whose line contains a given text, instead of running
/// it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandScript {
    /// The text the command line must contain.
    pub contains: String,
    /// The exit code.
    #[serde(default)]
    pub exit_code: i32,
    /// Standard output.
    #[serde(default)]
    pub stdout: String,
    /// Standard error.
    #[serde(default)]
    pub stderr: String,
    /// Wait before answering.
    #[serde(default, rename = "latency_ms")]
    pub latency: Option<Latency>,
    /// Never answer.
    #[serde(default)]
    pub hang: bool,
    /// Drop the link after sending stdout: the command fails as `disconnected`.
    #[serde(default)]
    pub disconnect: bool,
}

impl CommandScript {
    /// Answers commands containing `contains` with exit code 0 and no output.
    pub fn new(contains: impl Into<String>) -> Self {
        CommandScript {
            contains: contains.into(),
            ..Self::default()
        }
    }

    /// Sets the exit code.
    pub fn exit_code(mut self, code: i32) -> Self {
        self.exit_code = code;
        self
    }

    /// Sets stdout.
    pub fn stdout(mut self, text: impl Into<String>) -> Self {
        self.stdout = text.into();
        self
    }

    /// Sets stderr.
    pub fn stderr(mut self, text: impl Into<String>) -> Self {
        self.stderr = text.into();
        self
    }

    /// Never answers.
    pub fn hanging(mut self) -> Self {
        self.hang = true;
        self
    }

    /// Disconnects after stdout.
    pub fn disconnecting(mut self) -> Self {
        self.disconnect = true;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scripted(value: Value) -> Result<ScriptedError, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    #[test]
    fn scripted_errors_keep_their_kind() {
        let io = scripted(json!({"kind": "io", "message": "read /data/x: Permission denied"}))
            .unwrap()
            .to_device_error();
        assert_eq!(io.kind(), ErrorKind::Io);
        assert_eq!(io.to_string(), "read /data/x: Permission denied");
        let bare = scripted(json!({"kind": "io", "message": "usb reset"}))
            .unwrap()
            .to_device_error();
        assert_eq!(
            (bare.kind(), bare.to_string()),
            (ErrorKind::Io, "i/o: usb reset".into())
        );
        for kind in ["panicked", "aborted", "not_found"] {
            let err = scripted(json!({"kind": kind, "message": "x"})).unwrap_err();
            assert!(
                err.starts_with(&format!(
                    "the error kind `{kind}` is given by the engine, not by a device"
                )),
                "{err}"
            );
        }
    }
}
