//! Everything that stops the CLI before or instead of a report, with its exit code.
//!
//! Some devices failing is not an error here: it is a report with exit code 1.

use std::path::PathBuf;

/// The exit codes, in one place. Documented in `--help` and `docs/cli.md`.
pub(crate) mod exit_code {
    /// Every device succeeded.
    pub const SUCCESS: i32 = 0;
    /// At least one device failed.
    pub const DEVICE_FAILED: i32 = 1;
    /// Usage or configuration error: bad flag, bad pool file, unknown operation or device,
    /// invalid params.
    pub const USAGE: i32 = 2;
    /// No device selected.
    pub const NO_DEVICES: i32 = 3;
    /// The batch ran but a report file or standard output could not be written.
    pub const OUTPUT_LOST: i32 = 4;
    /// Interrupted by Ctrl-C (128 + SIGINT); SIGTERM and SIGHUP give 143 and 129, see
    /// `signals`.
    pub const INTERRUPTED: i32 = 130;
}

/// Why the CLI could not do what was asked. Messages are lowercase fragments.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// A flag value that clap could not check.
    #[error("{0}")]
    Usage(String),
    /// The pool file is malformed.
    #[error("{0}")]
    Pool(String),
    /// The batch request is invalid (unknown device or operation, bad params).
    #[error(transparent)]
    Batch(#[from] devbatch_core::BatchError),
    /// The selection matched no device.
    #[error("{0}")]
    NoDevices(String),
    /// A plugin could not be loaded.
    #[error("{0}")]
    Plugin(String),
    /// A file the CLI reads or writes.
    #[error("{context} {}: {source}", path.display())]
    File {
        /// What was being done.
        context: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl CliError {
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            CliError::NoDevices(_) => exit_code::NO_DEVICES,
            _ => exit_code::USAGE,
        }
    }
}
