//! The built-in operations of devbatch, written only against the
//! [`Device`](devbatch_core::Device) primitives so that they work on every backend that has the
//! primitives they need:
//!
//! | name | does | idempotent | default timeout |
//! |---|---|---|---|
//! | `shell` | runs `cmd` (a shell line) or `args` (an argv, each argument quoted) | no | 60 s |
//! | `push` | copies a local file or directory to the device | yes | 10 min |
//! | `pull` | copies a remote file or directory to `local` (with `{device}`) | yes | 10 min |
//! | `info` | hostname, OS, kernel, arch, uptime, CPUs, memory of a POSIX device | yes | 30 s |
//! | `reboot` | reboots, optionally waiting until the device is back | no | 5 min |
//! | `run_test` | runs a test command and reports pass/fail, duration and output | no | 30 min |
//!
//! Backends add their own implementations of some names (ADB's `info`, `install_app`,
//! `run_test`); the engine prefers a backend's own implementation for its devices.
//!
//! Linking this crate registers the operations (through `inventory`); a program that uses
//! [`Registry::linked`](devbatch_core::Registry::linked) must reference the crate, for example
//! with `use devbatch_ops as _;`.

mod info;
mod output;
mod reboot;
mod run_test;
mod shell;
mod transfer;

pub use info::InfoOperation;
pub use output::{bytes_field, command_output_json};
pub use reboot::RebootOperation;
pub use run_test::RunTestOperation;
pub use shell::ShellOperation;
pub use transfer::{PullOperation, PushOperation, device_path_component};

use std::sync::Arc;

use devbatch_core::{Registry, RegistryError};

devbatch_core::register_operation!(|| Arc::new(ShellOperation));
devbatch_core::register_operation!(|| Arc::new(PushOperation));
devbatch_core::register_operation!(|| Arc::new(PullOperation));
devbatch_core::register_operation!(|| Arc::new(InfoOperation));
devbatch_core::register_operation!(|| Arc::new(RebootOperation));
devbatch_core::register_operation!(|| Arc::new(RunTestOperation));

/// Adds every built-in operation to a hand-built registry (tests, embedders that do not use
/// link-time registration).
pub fn register_all(registry: &mut Registry) -> Result<(), RegistryError> {
    let source = "devbatch-ops";
    registry.add_operation(Arc::new(ShellOperation), source)?;
    registry.add_operation(Arc::new(PushOperation), source)?;
    registry.add_operation(Arc::new(PullOperation), source)?;
    registry.add_operation(Arc::new(InfoOperation), source)?;
    registry.add_operation(Arc::new(RebootOperation), source)?;
    registry.add_operation(Arc::new(RunTestOperation), source)?;
    Ok(())
}
