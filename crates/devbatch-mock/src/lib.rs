//! Scriptable mock devices for devbatch: swap them in for real devices in your tests.
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use devbatch_core::{BatchOperationManager, DevicePool, ErrorKind};
//! use devbatch_mock::{CallLog, Latency, MockDevice, Script};
//! use serde_json::json;
//!
//! let log = CallLog::new();
//! let pool = DevicePool::from_devices([
//!     Arc::new(MockDevice::new("phone-1").with_log(&log)
//!         .on("info", Script::succeed(json!({"android": "14"})))) as Arc<dyn devbatch_core::Device>,
//!     Arc::new(MockDevice::new("phone-2").with_log(&log)
//!         .on("info", Script::fail(ErrorKind::Unreachable, "usb reset")
//!             .with_latency(Latency::fixed(Duration::from_millis(5))))),
//! ])?;
//! // The built-in operations (`info`, `shell`, ...) from `devbatch-ops`, by hand; linking
//! // the crate (`use devbatch_ops as _;`) and `BatchOperationManager::new(pool)` does the same.
//! let mut registry = devbatch_core::Registry::new();
//! devbatch_ops::register_all(&mut registry)?;
//! let manager = BatchOperationManager::with_registry(pool, registry);
//! let result = manager.execute_batch("info", json!({}), None).await?;
//! assert!(result.get("phone-1").unwrap().is_success());
//! assert_eq!(result.get("phone-2").unwrap().error_kind, Some(ErrorKind::Unreachable));
//! assert_eq!(log.count("phone-2", "op:info"), 1);
//! # Ok(()) }
//! ```
//!
//! A script answers an operation only when the batch knows that operation: `install_app` or
//! `screenshot` need the crate that provides them (`devbatch-adb`) linked, or your own
//! operation registered under that name.
//!
//! A pool file can declare mock fleets too (`backend = "mock"`, see [`MockBackend`]).

mod device;
mod log;
mod script;

pub use device::MockDevice;
pub use log::{Call, CallLog};
pub use script::{CommandScript, Latency, Script, ScriptedError};

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use devbatch_core::{Backend, ConfigError, Device, DeviceSpec};
use serde::Deserialize;

/// The `mock` backend: a pool-file entry makes one mock device, or `count` of them.
///
/// ```toml
/// [[devices]]
/// backend = "mock"
/// id = "phone"          # with count: phone-001 ... phone-300
/// count = 300
/// latency_ms = [5, 50]  # every operation waits 5 to 50 ms
/// state = "ready"       # the default; or a not-ready state such as "unauthorized"
/// labels = { os = "android" }
/// [devices.ops.install_app]
/// result = { package = "com.example" }
/// [devices.ops.info]
/// error = { kind = "unreachable", message = "usb reset" }
/// fail_first = 1
/// [[devices.commands]]
/// contains = "getprop"
/// stdout = "14\n"
/// ```
///
/// `count` is at most [`MAX_COUNT`]. `state` is one of [`STATES`]: `ready` (the default) or a
/// word adb uses for a listed but unusable device; any other value is refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct MockBackend;

/// The most devices one pool-file entry may make with `count`: a million mock devices is
/// already far past what a batch is meant for, and bigger counts would only exhaust memory.
pub const MAX_COUNT: usize = 1_000_000;

/// The values `state` accepts: `ready`, then the not-ready states of adb devices.
pub const STATES: &[&str] = &[
    "ready",
    "offline",
    "unauthorized",
    "authorizing",
    "connecting",
    "no permissions",
    "bootloader",
    "recovery",
    "sideload",
    "rescue",
    "absent",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MockSettings {
    #[serde(default)]
    count: Option<usize>,
    #[serde(default)]
    latency_ms: Option<Latency>,
    #[serde(default)]
    ops: HashMap<String, Script>,
    #[serde(default)]
    commands: Vec<CommandScript>,
    /// `ready` (the default), or `offline`, `unauthorized`...: play a listed but unusable
    /// device. One of [`STATES`].
    #[serde(default)]
    state: Option<String>,
}

#[async_trait]
impl Backend for MockBackend {
    fn name(&self) -> &str {
        "mock"
    }

    fn description(&self) -> &str {
        "scriptable mock devices for tests and dry runs"
    }

    async fn open(&self, spec: DeviceSpec) -> Result<Vec<Arc<dyn Device>>, ConfigError> {
        let settings: MockSettings = spec.settings()?;
        let base = spec.id.clone().ok_or_else(|| ConfigError::Missing {
            key: "id".into(),
            expected: "the device id (with count: the prefix of the ids)".into(),
        })?;
        let not_ready = match settings.state.as_deref() {
            None | Some("ready") => None,
            Some(state) if STATES.contains(&state) => Some(state.to_string()),
            Some(other) => {
                return Err(ConfigError::Settings(format!(
                    "state must be one of {}; got {other:?}",
                    STATES
                        .iter()
                        .map(|s| format!("\"{s}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        };
        let ids: Vec<String> = match settings.count {
            None => vec![base],
            Some(0) => return Err(ConfigError::Settings("count must be at least 1".into())),
            Some(n) if n > MAX_COUNT => {
                return Err(ConfigError::Settings(format!(
                    "count must be at most {MAX_COUNT}, got {n}"
                )));
            }
            Some(n) => {
                let width = n.to_string().len().max(3);
                (1..=n).map(|i| format!("{base}-{i:0width$}")).collect()
            }
        };
        Ok(ids
            .into_iter()
            .map(|id| {
                let mut d = MockDevice::new(id).with_labels(spec.labels.clone());
                if let Some(l) = settings.latency_ms {
                    d = d.with_latency(l);
                }
                for (op, script) in &settings.ops {
                    d = d.on(op.clone(), script.clone());
                }
                for c in &settings.commands {
                    d = d.on_command(c.clone());
                }
                if let Some(state) = &not_ready {
                    d = d.not_ready(state.clone(), "this mock device is configured as not ready");
                }
                Arc::new(d) as Arc<dyn Device>
            })
            .collect())
    }
}

devbatch_core::register_backend!(|| Arc::new(MockBackend));
