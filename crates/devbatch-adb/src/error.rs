//! The crate's own error type, converted to [`DeviceError`] at the crate boundary so callers
//! only ever see the stable kinds.

use std::time::Duration;

use devbatch_core::DeviceError;

/// What went wrong talking to an adb server or a device behind it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdbError {
    /// The adb server could not be reached at all.
    #[error(
        "cannot reach the adb server at {addr}: {source}; start it with `adb start-server` (or `adb -P PORT start-server`) or fix the `server` setting"
    )]
    ServerUnreachable {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The server answered `FAIL` with this message.
    #[error("the adb server refused '{request}': {message}")]
    ServerFail { request: String, message: String },
    /// The device is listed but not usable in its state.
    #[error("device is {state}: {hint}")]
    NotReady { state: String, hint: String },
    /// The serial is not (or no longer) listed by the server.
    #[error("device '{serial}' is not attached to the adb server at {server}")]
    NotFound { serial: String, server: String },
    /// The device refused a service (`FAIL closed`).
    #[error("the device refused the service '{0}'")]
    Refused(String),
    /// The stream ended before the work finished.
    #[error("{0}")]
    Disconnected(String),
    /// A deadline ran out.
    #[error("timed out after {} waiting for {what}", humantime::format_duration(*after))]
    Timeout { what: String, after: Duration },
    /// The server or device broke the protocol.
    #[error("{0}")]
    Protocol(String),
    /// A file operation failed on the device (a sync `FAIL`, a missing path): a remote I/O
    /// error.
    #[error("{context}: {source}")]
    Remote {
        /// What was being done ("failed to read '/sdcard/x' on the device").
        context: String,
        /// The device's reason.
        #[source]
        source: std::io::Error,
    },
    /// Bad input (a path too long for the protocol, ...).
    #[error("{0}")]
    InvalidInput(String),
    /// Not possible with this device.
    #[error("{0}")]
    Unsupported(String),
    /// A local I/O error.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The output cap was hit.
    #[error("output limit")]
    OutputLimit(usize),
}

impl AdbError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        AdbError::Io {
            context: context.into(),
            source,
        }
    }
}

/// What an operator should do about a device state.
pub(crate) fn state_hint(state: &str) -> String {
    let s = state.to_ascii_lowercase();
    if s.starts_with("unauthorized") {
        "accept the \"Allow USB debugging?\" prompt on the device, then retry; if no prompt shows, revoke USB debugging authorizations in the developer options and reconnect".into()
    } else if s.starts_with("no permissions") {
        "the adb server may not open the USB device: fix the udev rules for its vendor id (or add the user to the plugdev group), replug it and restart the server".into()
    } else if s.starts_with("offline") {
        "the device is attached but does not answer; wait for it to finish booting, or reconnect it (replug, or `adb reconnect offline`)".into()
    } else if s.starts_with("authorizing") || s.starts_with("connecting") {
        "the connection is still being set up; retry in a few seconds".into()
    } else if ["bootloader", "recovery", "sideload", "rescue"].contains(&s.as_str()) {
        format!("the device is in {state} mode; reboot it into the system")
    } else {
        format!("the adb server reports the state '{state}'; it must be 'device' to run anything")
    }
}

/// Maps a server `FAIL` message about a device to the state it names, if any.
pub(crate) fn state_from_fail(message: &str) -> Option<&'static str> {
    let m = message.to_ascii_lowercase();
    if m.starts_with("device unauthorized") {
        Some("unauthorized")
    } else if m.starts_with("device offline") {
        Some("offline")
    } else if m.contains("insufficient permissions") || m.starts_with("no permissions") {
        Some("no permissions")
    } else if m.starts_with("device still authorizing") {
        Some("authorizing")
    } else if m.starts_with("device still connecting") {
        Some("connecting")
    } else {
        None
    }
}

impl From<AdbError> for DeviceError {
    fn from(e: AdbError) -> Self {
        match e {
            AdbError::ServerUnreachable { .. } | AdbError::NotFound { .. } => {
                DeviceError::Unreachable(e.to_string())
            }
            AdbError::ServerFail { .. } => DeviceError::Failed(e.to_string()),
            AdbError::Remote { context, source } => DeviceError::Io { context, source },
            AdbError::NotReady { state, hint } => DeviceError::NotReady { state, hint },
            AdbError::Refused(_) | AdbError::Unsupported(_) => {
                DeviceError::Unsupported(e.to_string())
            }
            AdbError::Disconnected(m) => DeviceError::Disconnected(m),
            AdbError::Timeout { what, after } => DeviceError::TimedOutWaiting { what, after },
            AdbError::Protocol(m) => DeviceError::Protocol(m),
            AdbError::InvalidInput(m) => DeviceError::InvalidInput(m),
            AdbError::Io { context, source } => DeviceError::Io { context, source },
            AdbError::OutputLimit(limit) => DeviceError::OutputLimit { limit },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devbatch_core::ErrorKind;

    #[test]
    fn states_name_what_to_do() {
        assert!(state_hint("unauthorized").contains("Allow USB debugging"));
        assert!(state_hint("no permissions (udev)").contains("udev rules"));
        assert!(state_hint("offline").contains("reconnect"));
        assert!(state_hint("recovery").contains("recovery mode"));
        assert_eq!(
            state_from_fail("device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set"),
            Some("unauthorized")
        );
        assert_eq!(state_from_fail("device offline"), Some("offline"));
        assert_eq!(state_from_fail("device 'x' not found"), None);
    }

    #[test]
    fn kinds_at_the_boundary() {
        let e: DeviceError = AdbError::NotReady {
            state: "offline".into(),
            hint: state_hint("offline"),
        }
        .into();
        assert_eq!(e.kind(), ErrorKind::NotReady);
        assert!(e.to_string().starts_with("device is offline: "), "{e}");
        let e: DeviceError = AdbError::Disconnected("gone".into()).into();
        assert!(e.is_retryable());
        let e: DeviceError = AdbError::Timeout {
            what: "the device to accept 'shell:true'".into(),
            after: std::time::Duration::from_secs(5),
        }
        .into();
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert_eq!(
            e.to_string(),
            "timed out after 5s waiting for the device to accept 'shell:true'"
        );
        let e: DeviceError = AdbError::NotFound {
            serial: "x".into(),
            server: "127.0.0.1:5037".into(),
        }
        .into();
        assert_eq!(e.kind(), ErrorKind::Unreachable);
    }
}
