//! # adbd-sim: a device farm in a box
//!
//! Simulated Android devices that speak the device (adbd) side of the ADB transport protocol over TCP.
//! Start a few, `adb connect` them to a real adb server, and test your tools, plugins and pipelines
//! against them as if a rack of phones were plugged in.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use adbd_sim::{DeviceConfig, Fault, SimDevice};
//!
//! let phone = SimDevice::start(DeviceConfig::modern("sim-0001").model("Pixel_Sim")).await?;
//! let old = SimDevice::start(DeviceConfig::legacy("sim-0002")).await?;
//! println!("adb connect {}   # then: adb -s {} shell getprop ro.product.model", phone.serial(), phone.serial());
//! old.set_fault(Fault::Hang); // it stays listed as `device` but never answers again
//! # Ok(()) }
//! ```
//!
//! What a device offers:
//! - CNXN without AUTH; the banner carries `ro.product.name/model/device` and the feature list
//!   ([`DeviceConfig::modern`]: `shell_v2`, `cmd`, `abb_exec`, `stat_v2`, `ls_v2`, ...;
//!   [`DeviceConfig::legacy`]: none).
//! - Streams (OPEN/OKAY/WRTE/CLSE, one WRTE in flight per direction, payloads split to the negotiated size).
//! - `shell,v2,...:` (stdout/stderr/exit packets, stdin and close-stdin), legacy `shell:` (merged output with
//!   a pty's `\r\n`), `exec:` (raw): each runs a real `/bin/sh` in the device's sandbox directory, with
//!   Android's tools simulated on `PATH` (`getprop`, ...) and absolute Android paths (`/data`, `/sdcard`,
//!   `/system`, ...) rewritten into the sandbox. The sandbox is a convenience, not a security boundary.
//! - `sync:` (STAT/STA2/LST2/LIST/LIS2/SEND/RECV/QUIT) on the sandbox.
//! - `reboot:` (the link drops, the device comes back per [`RebootBehavior`]).
//! - Faults on demand ([`Fault`]): hang, never answer, stay unauthorized, close at once, drop the link after
//!   N bytes, slow link.
//!
//! [`testing::AdbServer`] starts a private real adb server for tests.

mod apk;
mod config;
mod device;
mod instrument;
mod pm;
mod png;
mod proto;
mod sandbox;
mod services;
mod sync;
mod tools;

pub mod testing;

pub use config::{DeviceConfig, Fault, MODERN_FEATURES, RebootBehavior};
pub use apk::{TestApk, build_test_apk};
pub use device::{SimDevice, SimHandle};
pub use instrument::{DEFAULT_CRASH, InstrumentationScript, ScriptedTest, TestOutcome};
pub use pm::InstallOutcome;
