//! Operations specific to ADB devices, registered for `backend = "adb"` so that the engine
//! prefers them over generic operations of the same name:
//!
//! | name | does | idempotent | default timeout |
//! |---|---|---|---|
//! | `info` | model, manufacturer, Android release, SDK, ABI, serial, build (getprop) | yes | 30 s |
//! | `install_app` | installs an APK (streamed, or push + `pm install` on old devices) | yes | 5 min |
//! | `uninstall_app` | removes a package | no | 2 min |
//! | `screenshot` | a PNG through `exec:screencap -p`, written atomically | yes | 1 min |
//! | `run_test` | Android instrumentation (`am instrument -w -r`), parsed per test | no | 30 min |
//!
//! Android tools often exit 0 on failure and print the failure as text; every operation here
//! reads the text (`Success`, `Failure [CODE]`, exception traces) and reports the truth.

mod info;
mod install;
mod instrument;
mod screenshot;

pub use info::AdbInfoOperation;
pub use install::{InstallAppOperation, UninstallAppOperation};
pub use instrument::{InstrumentationReport, TestCase, TestStatus, parse_instrumentation};
pub use screenshot::ScreenshotOperation;

use std::sync::Arc;

use devbatch_core::{Device, DeviceError};

use crate::AdbDevice;

/// The ADB device behind `device`, for operations registered for the adb backend only.
fn adb(device: &dyn Device) -> Result<&AdbDevice, DeviceError> {
    device.downcast_ref::<AdbDevice>().ok_or_else(|| {
        DeviceError::Unsupported(format!(
            "this operation needs an adb device, and {} is a {} device",
            device.id(),
            device.backend()
        ))
    })
}

/// The first non-empty lines of a text, joined with ` | `, for error messages.
fn first_lines(text: &str, n: usize) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(n)
        .collect::<Vec<_>>()
        .join(" | ")
}

devbatch_core::register_operation!(|| Arc::new(AdbInfoOperation));
devbatch_core::register_operation!(|| Arc::new(InstallAppOperation));
devbatch_core::register_operation!(|| Arc::new(UninstallAppOperation));
devbatch_core::register_operation!(|| Arc::new(ScreenshotOperation));
devbatch_core::register_operation!(|| Arc::new(instrument::AdbRunTestOperation));

/// Adds the ADB operations to a hand-built registry (tests, embedders).
pub fn register_all(
    registry: &mut devbatch_core::Registry,
) -> Result<(), devbatch_core::RegistryError> {
    let source = "devbatch-adb";
    registry.add_operation(Arc::new(AdbInfoOperation), source)?;
    registry.add_operation(Arc::new(InstallAppOperation), source)?;
    registry.add_operation(Arc::new(UninstallAppOperation), source)?;
    registry.add_operation(Arc::new(ScreenshotOperation), source)?;
    registry.add_operation(Arc::new(instrument::AdbRunTestOperation), source)?;
    Ok(())
}
