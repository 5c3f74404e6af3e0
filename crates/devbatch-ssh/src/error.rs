//! The backend's own errors, converted to [`DeviceError`] kinds at the crate boundary.
//!
//! Messages name the target (`host:port`) and what was being done, never a secret.

use std::io;
use std::time::Duration;

use devbatch_core::DeviceError;

/// Everything that can go wrong talking to one SSH target.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SshError {
    #[error("connection refused by {target}")]
    Refused { target: String },
    #[error("{target} did not complete the {stage} within {}s (connect timeout)", .after.as_secs_f32())]
    ConnectTimeout {
        target: String,
        stage: &'static str,
        after: Duration,
    },
    #[error("could not connect to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "{target} closed the connection during the {stage} {attempts} time(s) (server overloaded, see sshd MaxStartups): {last}"
    )]
    Dropped {
        target: String,
        stage: &'static str,
        attempts: u32,
        last: String,
    },
    #[error(
        "{target} presented a host key that differs from the one recorded in {path}:{line} (possible man-in-the-middle attack); presented key {fingerprint}; nothing was run"
    )]
    HostKeyChanged {
        target: String,
        fingerprint: String,
        path: String,
        line: usize,
    },
    #[error(
        "{target} is not in known_hosts ({files}); presented key {fingerprint}; add it (ssh-keyscan) or set host_key_policy = \"accept-new\"; nothing was run"
    )]
    HostKeyUnknown {
        target: String,
        fingerprint: String,
        files: String,
    },
    #[error(
        "{target} presented key {fingerprint}, which {path}:{line} marks @revoked; nothing was run"
    )]
    HostKeyRevoked {
        target: String,
        fingerprint: String,
        path: String,
        line: usize,
    },
    #[error(
        "{target} presented a host certificate; certificate authorities are not supported, list the host's plain keys in known_hosts"
    )]
    HostKeyCertificate { target: String },
    #[error("could not record the host key of {target} in {path}: {source}")]
    KnownHostsWrite {
        target: String,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{user}@{target} refused every method tried: {}", if tried.is_empty() { "none available (no key file, agent or password configured)".to_string() } else { tried.join("; ") })]
    Auth {
        target: String,
        user: String,
        tried: Vec<String>,
    },
    #[error("ssh protocol error with {target}: {message}")]
    Protocol { target: String, message: String },
    #[error("the connection to {target} broke: {message}")]
    Disconnected { target: String, message: String },
    #[error(
        "{target} refused to open a channel {attempts} time(s) in a row ({reason}); lower max_channels or raise sshd MaxSessions"
    )]
    ChannelRefused {
        target: String,
        attempts: u32,
        reason: String,
    },
    #[error("{target} refused to run the command (exec request denied)")]
    ExecRefused { target: String },
    #[error("the command was killed by signal {signal}{}{}", if *.core_dumped { " (core dumped)" } else { "" }, if message.is_empty() { String::new() } else { format!(": {message}") })]
    Signal {
        signal: String,
        core_dumped: bool,
        message: String,
    },
    #[error(
        "the channel to {target} closed without an exit status (the command's fate is unknown)"
    )]
    NoExitStatus { target: String },
    #[error("sftp {op} {path} on {target}: {message}")]
    Sftp {
        target: String,
        op: &'static str,
        path: String,
        message: String,
        kind: io::ErrorKind,
    },
    #[error("{context}: {source}")]
    Local {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    Output(#[from] OutputLimit),
}

/// The output cap was hit (kept apart so the core's own error comes back unchanged).
#[derive(Debug, thiserror::Error)]
#[error("output exceeded the per-device limit of {0} bytes")]
pub(crate) struct OutputLimit(pub(crate) usize);

impl SshError {
    pub(crate) fn local(context: impl Into<String>, source: io::Error) -> Self {
        SshError::Local {
            context: context.into(),
            source,
        }
    }

    /// Whether the failure means the connection under us is gone (so the next operation must
    /// reconnect).
    pub(crate) fn is_link_failure(&self) -> bool {
        matches!(
            self,
            SshError::Disconnected { .. } | SshError::NoExitStatus { .. }
        )
    }
}

impl From<SshError> for DeviceError {
    fn from(e: SshError) -> Self {
        let message = e.to_string();
        match e {
            SshError::Refused { .. }
            | SshError::ConnectTimeout { .. }
            | SshError::Connect { .. }
            | SshError::Dropped { .. } => DeviceError::Unreachable(message),
            SshError::HostKeyChanged { .. }
            | SshError::HostKeyUnknown { .. }
            | SshError::HostKeyRevoked { .. }
            | SshError::HostKeyCertificate { .. }
            | SshError::KnownHostsWrite { .. } => DeviceError::HostKey(message),
            SshError::Auth { .. } => DeviceError::Auth(message),
            SshError::Protocol { .. } => DeviceError::Protocol(message),
            SshError::Disconnected { .. } | SshError::NoExitStatus { .. } => {
                DeviceError::Disconnected(message)
            }
            SshError::ChannelRefused { .. } | SshError::ExecRefused { .. } => {
                DeviceError::Failed(message)
            }
            SshError::Signal { .. } | SshError::Failed(_) => DeviceError::Failed(message),
            SshError::Sftp { kind, .. } => DeviceError::Io {
                context: message,
                source: io::Error::from(kind),
            },
            SshError::Local { context, source } => DeviceError::Io { context, source },
            SshError::InvalidInput(m) => DeviceError::InvalidInput(m),
            SshError::Output(OutputLimit(limit)) => DeviceError::OutputLimit { limit },
        }
    }
}

impl From<DeviceError> for SshError {
    /// Only the collector's cap error comes this way.
    fn from(e: DeviceError) -> Self {
        match e {
            DeviceError::OutputLimit { limit } => SshError::Output(OutputLimit(limit)),
            other => SshError::Failed(other.to_string()),
        }
    }
}
