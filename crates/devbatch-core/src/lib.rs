//! The core of devbatch: run one named operation on many devices in parallel and get exactly
//! one result per device.
//!
//! # Why it looks this way
//!
//! A batch tool meets every kind of device: Android phones behind an adb server, Linux boards
//! over SSH, this machine, plugins' own kinds. So the crate splits the problem in two traits:
//!
//! * a [`Device`] supplies a few primitives only (run a command, push, pull, reboot), each
//!   cancellable by dropping its future;
//! * an [`Operation`] is written once against those primitives, declares its parameters,
//!   whether it is idempotent and how long it may take, and so works on every backend that
//!   has what it needs. A backend can still provide its own implementation of a name (ADB's
//!   `install_app`).
//!
//! The [`BatchOperationManager`] validates a whole request before anything runs, then drives
//! the devices with a concurrency limit, per-device timeouts (on by default), an overall
//! deadline, retries of transient errors, a failure policy and cancellation. Whatever happens —
//! panics, hangs, cancellation, a failure policy that stops early — every requested device gets
//! exactly one [`DeviceOutcome`], and the [`BatchResult`] serializes to the user's spec:
//!
//! ```json
//! {"device1": {"status": "success", "result": {"exit_code": 0, "stdout": "ok\n", "stderr": ""},
//!              "attempts": 1, "elapsed_ms": 12},
//!  "device2": {"status": "error", "result": null, "error": "timed out after 30s",
//!              "error_kind": "timeout", "attempts": 1, "elapsed_ms": 30001}}
//! ```
//!
//! Backends and operations register themselves at link time ([`register_operation!`],
//! [`register_backend!`]) into a [`Registry`], which dynamic plugins extend at run time.
//!
//! # Implementations
//!
//! * `devbatch-local`: this machine; `devbatch-mock`: scriptable mock devices for tests;
//! * `devbatch-adb`: Android devices through an adb server; `devbatch-ssh`: hosts over SSH;
//! * `devbatch-ops`: the built-in operations (`shell`, `push`, `pull`, `info`, `reboot`, ...).
//!
//! # Features
//!
//! * `conformance`: the `conformance` module, the test suite a [`Device`] implementation runs
//!   against itself to prove it keeps the contract (put it in your `[dev-dependencies]`).

pub mod device;
pub mod error;
pub mod manager;
pub mod operation;
pub mod options;
pub mod outcome;
pub mod pool;
pub mod registry;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use device::{
    Capability, Command, CommandOutput, DEFAULT_MAX_OUTPUT, Device, DeviceExt, DeviceState, Labels,
    OutputCollector, Program, RebootMode, TransferStats, quote,
};
pub use error::{BatchError, DeviceError, ErrorKind, OperationError, OperationFailure};
pub use manager::BatchOperationManager;
pub use operation::{Operation, OperationContext, ParamSpec, ParamType, Params, validate_params};
pub use options::{
    BatchEvent, BatchOptions, CancelHandle, DEFAULT_CONCURRENCY, FailurePolicy, Observer,
    RetryPolicy,
};
pub use outcome::{BatchResult, BatchSummary, DeviceOutcome, Status, StopReason};
pub use pool::{DevicePool, LabelSelector, PoolError, check_device_id};
pub use registry::{Backend, ConfigError, DeviceSpec, Registry, RegistryError};

/// This crate's version; plugins record the one they were built with (see `devbatch-plugin`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Re-exports for this crate's macros; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use inventory;
}
