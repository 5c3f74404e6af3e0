//! The error model: what went wrong on one device ([`DeviceError`]), what was wrong with a request
//! before anything ran ([`OperationError`], [`DeviceError::NotFound`]), and what a batch as a whole
//! can fail with ([`BatchError`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A stable, machine-readable word for what went wrong on a device.
///
/// It appears as `error_kind` in every error outcome. The words never change once published:
/// scripts match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The operation (or the whole batch's deadline) ran out of time.
    Timeout,
    /// The device could not be reached; nothing ran on it.
    Unreachable,
    /// The link to the device broke while the operation was under way.
    Disconnected,
    /// The device refused our credentials.
    Auth,
    /// The device's identity (for example an SSH host key) could not be verified.
    HostKey,
    /// The device is known but not in a state to run anything (offline, unauthorized, ...).
    NotReady,
    /// The backend or device does not have what the operation needs.
    Unsupported,
    /// The operation ran and reported failure (non-zero exit, `Failure [...]`, ...).
    Failed,
    /// The batch was cancelled before or while the operation ran.
    Cancelled,
    /// The operation panicked; the panic was contained to this device.
    Panicked,
    /// The operation was never started because the failure policy stopped the batch.
    Aborted,
    /// The device produced more output than the per-device cap allows.
    OutputLimit,
    /// The device or backend spoke its protocol wrongly.
    Protocol,
    /// A parameter or path was not acceptable to this device.
    InvalidInput,
    /// A local or remote I/O error.
    Io,
    /// The device id is not in the pool.
    NotFound,
}

impl ErrorKind {
    /// The stable word, as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Disconnected => "disconnected",
            ErrorKind::Auth => "auth",
            ErrorKind::HostKey => "host_key",
            ErrorKind::NotReady => "not_ready",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Failed => "failed",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Panicked => "panicked",
            ErrorKind::Aborted => "aborted",
            ErrorKind::OutputLimit => "output_limit",
            ErrorKind::Protocol => "protocol",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Io => "io",
            ErrorKind::NotFound => "not_found",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong on one device, or with a device id.
///
/// Backends convert their own error types into this one at the crate boundary, so callers only
/// ever match on these kinds. Messages are lowercase fragments that read well after
/// "failed to run on device X: ".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// One or more requested device ids are not in the pool.
    #[error("unknown device id{}: {}", if ids.len() == 1 { "" } else { "s" }, ids.join(", "))]
    NotFound {
        /// Every unknown id, in request order.
        ids: Vec<String>,
    },
    /// The device could not be reached; nothing was started on it.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The link broke while an operation was under way.
    #[error("connection lost: {0}")]
    Disconnected(String),
    /// Authentication was refused.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The device's identity could not be verified.
    #[error("host key verification failed: {0}")]
    HostKey(String),
    /// The device is listed but cannot run anything in its state.
    #[error("device is {state}: {hint}")]
    NotReady {
        /// The state as the backend reports it (`offline`, `unauthorized`, ...).
        state: String,
        /// What the operator can do about it.
        hint: String,
    },
    /// The time allowed ran out.
    #[error("timed out after {}", fmt_duration(*.0))]
    Timeout(Duration),
    /// A backend's own time limit on one step ran out (a server that does not answer, a
    /// device that does not accept a service). Its kind is [`ErrorKind::Timeout`], like
    /// [`Timeout`](Self::Timeout); the message says what was awaited.
    #[error("timed out after {} waiting for {what}", fmt_duration(*after))]
    TimedOutWaiting {
        /// What was awaited ("the adb server at 127.0.0.1:5037 to answer 'host:devices-l'").
        what: String,
        /// The backend's limit.
        after: Duration,
    },
    /// The batch's overall deadline (the duration it was set to) passed while the operation
    /// ran. Its kind is [`ErrorKind::Timeout`], like a per-attempt timeout; only the message
    /// tells the two apart. Never retried: the batch is over.
    #[error("stopped by the batch deadline ({})", fmt_duration(*.0))]
    Deadline(Duration),
    /// The batch was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The device or backend cannot do this.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// More output than the per-device cap.
    #[error("output exceeded the per-device limit of {limit} bytes")]
    OutputLimit {
        /// The cap in bytes.
        limit: usize,
    },
    /// The operation ran and failed.
    #[error("{0}")]
    Failed(String),
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A parameter or path was not acceptable.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A local or remote I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done ("read /tmp/x").
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl DeviceError {
    /// The stable word for this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DeviceError::NotFound { .. } => ErrorKind::NotFound,
            DeviceError::Unreachable(_) => ErrorKind::Unreachable,
            DeviceError::Disconnected(_) => ErrorKind::Disconnected,
            DeviceError::Auth(_) => ErrorKind::Auth,
            DeviceError::HostKey(_) => ErrorKind::HostKey,
            DeviceError::NotReady { .. } => ErrorKind::NotReady,
            DeviceError::Timeout(_)
            | DeviceError::TimedOutWaiting { .. }
            | DeviceError::Deadline(_) => ErrorKind::Timeout,
            DeviceError::Cancelled => ErrorKind::Cancelled,
            DeviceError::Unsupported(_) => ErrorKind::Unsupported,
            DeviceError::OutputLimit { .. } => ErrorKind::OutputLimit,
            DeviceError::Failed(_) => ErrorKind::Failed,
            DeviceError::Protocol(_) => ErrorKind::Protocol,
            DeviceError::InvalidInput(_) => ErrorKind::InvalidInput,
            DeviceError::Io { .. } => ErrorKind::Io,
        }
    }

    /// Whether trying again may help: the failure looks transient.
    ///
    /// The engine retries such errors only when the operation is idempotent or
    /// [`never_started`](Self::never_started) holds.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            DeviceError::Unreachable(_)
                | DeviceError::Disconnected(_)
                | DeviceError::Timeout(_)
                | DeviceError::TimedOutWaiting { .. }
        )
    }

    /// Whether the failure happened before anything could have run on the device, so that a
    /// retry cannot repeat a side effect.
    pub fn never_started(&self) -> bool {
        matches!(self, DeviceError::Unreachable(_))
    }

    /// An [`Io`](Self::Io) error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        DeviceError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Formats a duration the way people write it: `1.5s`, `250ms`, `2m`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        format!("{}us", d.as_micros())
    } else if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// An operation failed on a device: the error, plus whatever partial result the operation
/// produced (for example the stdout of a command that exited non-zero).
#[derive(Debug)]
pub struct OperationFailure {
    /// What went wrong.
    pub error: DeviceError,
    /// Any partial result; kept in the outcome's `result` field.
    pub partial: Option<serde_json::Value>,
}

impl OperationFailure {
    /// A failure that carries a partial result.
    pub fn with_partial(error: DeviceError, partial: serde_json::Value) -> Self {
        OperationFailure {
            error,
            partial: Some(partial),
        }
    }
}

impl From<DeviceError> for OperationFailure {
    fn from(error: DeviceError) -> Self {
        OperationFailure {
            error,
            partial: None,
        }
    }
}

/// The request named an operation, or gave parameters, that cannot run. Raised before anything
/// runs on any device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OperationError {
    /// No operation by that name is registered.
    #[error("unknown operation '{name}'; known operations: {}", known.join(", "))]
    Unknown {
        /// The name asked for.
        name: String,
        /// Every registered operation name.
        known: Vec<String>,
    },
    /// `params` was not a JSON object.
    #[error("params must be a JSON object of parameter names to values, got {got}")]
    ParamsNotObject {
        /// The JSON type that was given.
        got: String,
    },
    /// A required parameter is missing.
    #[error("operation '{operation}' needs parameter '{param}' ({expected})")]
    MissingParam {
        /// The operation.
        operation: String,
        /// The missing parameter.
        param: String,
        /// Its type and help text.
        expected: String,
    },
    /// A parameter has the wrong type or value.
    #[error("parameter '{param}' of operation '{operation}' must be {expected}, got {got}")]
    InvalidParam {
        /// The operation.
        operation: String,
        /// The parameter.
        param: String,
        /// What was expected.
        expected: String,
        /// What was given.
        got: String,
    },
    /// A parameter the operation does not declare.
    #[error("operation '{operation}' has no parameter '{param}'; its parameters are: {}", if known.is_empty() { "(none)".to_string() } else { known.join(", ") })]
    UnknownParam {
        /// The operation.
        operation: String,
        /// The unknown parameter.
        param: String,
        /// The parameters it does declare.
        known: Vec<String>,
    },
}

/// Why a whole batch could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// A requested device is not in the pool.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The operation or its parameters are invalid.
    #[error(transparent)]
    Operation(#[from] OperationError),
    /// The options make no sense (for example a concurrency of 0).
    #[error("invalid batch options: {0}")]
    InvalidOptions(String),
    /// [`shutdown`](crate::BatchOperationManager::shutdown) was called.
    #[error("the batch manager has been shut down")]
    ShutDown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_serialize_to_their_stable_words() {
        for kind in [
            ErrorKind::Timeout,
            ErrorKind::OutputLimit,
            ErrorKind::HostKey,
        ] {
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, serde_json::Value::String(kind.as_str().to_string()));
        }
    }

    #[test]
    fn not_found_names_every_id() {
        let e = DeviceError::NotFound {
            ids: vec!["a".into(), "b c".into()],
        };
        assert_eq!(e.to_string(), "unknown device ids: a, b c");
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn the_batch_deadline_is_a_timeout_that_names_the_deadline() {
        let e = DeviceError::Deadline(Duration::from_millis(400));
        assert_eq!(e.to_string(), "stopped by the batch deadline (400ms)");
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert!(
            !e.is_retryable(),
            "nothing is retried once the batch is over"
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_secs(30)), "30s");
        assert_eq!(fmt_duration(Duration::from_secs(120)), "2m");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
    }
}
