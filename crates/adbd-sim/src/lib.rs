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
//!   Android's tools simulated on `PATH` and absolute Android paths (`/data`, `/sdcard`, `/system`, ...)
//!   rewritten into the sandbox. The sandbox is a convenience, not a security boundary.
//! - Android tools: `getprop`/`setprop`; a package manager (`pm`, `cmd package`, `abb_exec:package`) that
//!   validates APKs ([`TestApk`], [`build_test_apk`]) and plays scripted outcomes ([`InstallOutcome`]:
//!   `Failure [CODE]` with exit status 0, Java exceptions); `am instrument -w -r` replaying an
//!   [`InstrumentationScript`] (passes, failures with stack traces, crashes); `screencap -p` (a real PNG,
//!   distinct per device and shot); `reboot`; `logcat`; `wm`.
//! - `sync:` (STAT/STA2/LST2/LIST/LIS2/SEND/RECV/QUIT) on the sandbox.
//! - `reboot:` (the link drops, the device comes back per [`RebootBehavior`], into a [`BootMode`]),
//!   `framebuffer:`, `root:`/`unroot:`.
//! - Faults on demand ([`Fault`]): hang, never answer, stay unauthorized, close at once, drop the link after
//!   N bytes, slow link.
//!
//! [`testing::AdbServer`] starts a private real adb server for tests. The `adbd-sim` binary serves N devices
//! on N ports (`adbd-sim --devices 20 --legacy 2 --connect-to-adb 5037`). The user guide is
//! `docs/adbd-sim.md`.
//!
//! Why the shell is a real `sh`: tests of tools that drive devices need real command lines (quoting,
//! pipes, `$?`, redirections, exit codes) to behave exactly as on a device; a toy interpreter would
//! accept lines a device rejects. The Android-specific tools are the only simulated part.

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

pub use apk::{TestApk, build_test_apk};
pub use config::{BootMode, DeviceConfig, Fault, MODERN_FEATURES, RebootBehavior};
pub use device::{SimDevice, SimHandle};
pub use instrument::{DEFAULT_CRASH, InstrumentationScript, ScriptedTest, TestOutcome};
pub use pm::InstallOutcome;
