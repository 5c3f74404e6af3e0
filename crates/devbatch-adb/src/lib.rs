//! Android devices for devbatch, through an adb server (`backend = "adb"`).
//!
//! The crate speaks the adb host ("smart socket") protocol itself over tokio TCP: no `adb`
//! process is started per operation. Each operation opens its own connection to the server,
//! which multiplexes every device; a per-server limit (`max_requests`) keeps one server from
//! being flooded, separately from the batch's own concurrency.
//!
//! # Why it looks this way
//!
//! * **Truthful results.** Shell commands use shell protocol v2 when the device has `shell_v2`
//!   (exit codes, separate stderr); older devices get the legacy `shell:` service with an
//!   exit-code marker appended to the command, stripped from the output, and the pty's `\r\n`
//!   undone. A stream that ends without an exit status is a `disconnected` error, never
//!   success (the stock adb client prints partial output and exits 0 there).
//! * **Cancellation by drop.** Every await point holds the socket; dropping the future closes
//!   it, and the server then closes the stream on the device.
//! * **Deadlines everywhere.** Connecting and every reply of the server has a deadline
//!   (`connect_timeout`); a running command is bounded by the operation timeout.
//! * **Devices as listed.** Discovery reads `host:devices-l`: serials are kept exactly (with
//!   `:`, spaces, parentheses), devices that are `offline`, `unauthorized` or `no permissions`
//!   are listed with their state and fail with a hint saying what to do, and a serial listed
//!   twice becomes two devices (`SERIAL#transport_id`) addressed by transport id.
//!
//! Operations for ADB devices live in [`ops`]: `info` (getprop), `install_app`,
//! `uninstall_app`, `screenshot` and instrumentation `run_test`; `shell`, `push`, `pull` and
//! `reboot` come from `devbatch-ops` through the [`Device`](devbatch_core::Device) primitives.
//!
//! Linking registers the backend and the operations (`use devbatch_adb as _;`).

mod backend;
mod client;
mod device;
mod error;
pub mod ops;
mod protocol;
mod sync;

pub use backend::{AdbBackend, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_REQUESTS};
pub use device::AdbDevice;
pub use protocol::{ListedDevice, parse_devices_l};

use std::sync::Arc;

devbatch_core::register_backend!(|| Arc::new(AdbBackend));
