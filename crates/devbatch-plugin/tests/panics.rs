//! Panics in plugin code (and in host code a plugin calls) become errors or `panicked`
//! outcomes, never an abort; and what tokio looks like from inside a plugin.

mod support;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use devbatch_core::{
    BatchError, BatchOperationManager, BatchOptions, Capability, Command, CommandOutput, Device,
    DeviceError, DevicePool, DeviceSpec, DeviceState, ErrorKind, Labels, Registry, Status,
    TransferStats,
};
use devbatch_mock::MockDevice;
use devbatch_plugin::{LoadedPlugin, load_plugin};
use serde_json::json;

fn misbehaving() -> (Registry, LoadedPlugin) {
    let mut registry = Registry::new();
    devbatch_ops::register_all(&mut registry).unwrap();
    let loaded = load_plugin(&support::plugins().fixture("misbehaving"), &mut registry).unwrap();
    assert_eq!(
        loaded.operations,
        ["explode", "runtime_probe", "nap", "runtime_tasks"]
    );
    assert_eq!(loaded.backends, ["fragile"]);
    (registry, loaded)
}

fn source(loaded: &LoadedPlugin) -> String {
    format!("plugin `misbehaving` 0.0.0 ({})", loaded.path.display())
}

fn manager(registry: Registry, devices: Vec<Arc<dyn Device>>) -> BatchOperationManager {
    BatchOperationManager::with_registry(DevicePool::from_devices(devices).unwrap(), registry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_operation_is_a_panicked_outcome_per_device() {
    let (registry, loaded) = misbehaving();
    let manager = manager(
        registry,
        vec![
            Arc::new(MockDevice::new("m1")),
            Arc::new(MockDevice::new("m2")),
        ],
    );
    let result = manager
        .execute_batch("explode", json!({}), None)
        .await
        .unwrap();
    for id in ["m1", "m2"] {
        let outcome = result.get(id).unwrap();
        assert_eq!(outcome.status, Status::Error);
        assert_eq!(outcome.error_kind, Some(ErrorKind::Panicked));
        assert_eq!(
            outcome.error.as_deref().unwrap(),
            format!(
                "operation panicked: boom in execute on {id} (in operation `explode` of {})",
                source(&loaded)
            )
        );
    }
    // The manager, and the plugin, keep working.
    let again = manager
        .execute_batch("shell", json!({"cmd": "echo alive"}), None)
        .await
        .unwrap();
    assert!(again.summary().all_succeeded(), "{again:?}");
    let probe = manager
        .execute_batch("runtime_probe", json!({}), Some(&["m1"]))
        .await
        .unwrap();
    assert_eq!(probe.get("m1").unwrap().status, Status::Success);
}

#[tokio::test]
async fn a_panicking_validate_is_an_invalid_params_error() {
    let (registry, loaded) = misbehaving();
    let manager = manager(registry, vec![Arc::new(MockDevice::new("m1"))]);
    let err = manager
        .execute_batch("explode", json!({"where": "validate"}), None)
        .await
        .unwrap_err();
    assert!(matches!(err, BatchError::Operation(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "parameter 'params' of operation 'explode' must be accepted by the validate() of {}, got a panic: boom in validate",
            source(&loaded)
        )
    );
}

/// A host device whose `run` panics: its panic must not unwind into the plugin's frames.
#[derive(Debug)]
struct PanickyHostDevice(Labels);

#[async_trait]
impl Device for PanickyHostDevice {
    fn id(&self) -> &str {
        "host-panicky"
    }

    fn backend(&self) -> &str {
        "test"
    }

    fn labels(&self) -> &Labels {
        &self.0
    }

    fn capabilities(&self) -> &[Capability] {
        &[Capability::Exec]
    }

    async fn run(&self, _command: &Command) -> Result<CommandOutput, DeviceError> {
        panic!("the host device's run exploded")
    }

    async fn push(&self, _: &Path, _: &str) -> Result<TransferStats, DeviceError> {
        Err(DeviceError::Unsupported("no".into()))
    }

    async fn pull(&self, _: &str, _: &Path) -> Result<TransferStats, DeviceError> {
        Err(DeviceError::Unsupported("no".into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_device_panicking_under_a_plugin_operation_is_a_panicked_outcome() {
    let (registry, _) = misbehaving();
    let manager = manager(
        registry,
        vec![
            Arc::new(PanickyHostDevice(Labels::new())),
            Arc::new(devbatch_local::LocalDevice::new("local")),
        ],
    );
    let result = manager
        .execute_batch("explode", json!({"where": "device"}), None)
        .await
        .unwrap();
    let outcome = result.get("host-panicky").unwrap();
    assert_eq!(outcome.error_kind, Some(ErrorKind::Panicked), "{outcome:?}");
    assert_eq!(
        outcome.error.as_deref(),
        Some("operation panicked: the host device's run exploded")
    );
    // The same plugin operation on a well-behaved host device runs its command.
    let local = result.get("local").unwrap();
    assert_eq!(local.status, Status::Success, "{local:?}");
    assert_eq!(local.result, json!({"stdout": "hi\n"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_backend_that_panics() {
    let (registry, loaded) = misbehaving();
    let backend = registry.backend("fragile").unwrap().clone();
    let spec = |panic_in_open: bool| DeviceSpec {
        id: Some("f1".into()),
        labels: Labels::new(),
        settings: json!({"panic_in_open": panic_in_open})
            .as_object()
            .unwrap()
            .clone(),
        base_dir: None,
    };

    let err = backend.open(spec(true)).await.expect_err("open panicked");
    assert_eq!(
        err.to_string(),
        format!(
            "the fragile backend of {} panicked: boom in open",
            source(&loaded)
        )
    );

    let device = backend.open(spec(false)).await.unwrap().pop().unwrap();
    assert_eq!(device.id(), "f1");
    assert_eq!(device.backend(), "fragile");
    assert_eq!(
        device.state(),
        DeviceState::NotReady {
            state: "panicked".into(),
            hint: format!(
                "{} panicked reporting the device's state: boom in state",
                source(&loaded)
            ),
        }
    );
    let manager = manager(registry, vec![device, Arc::new(MockDevice::new("m1"))]);
    let result = manager
        .execute_batch("shell", json!({"cmd": "true"}), None)
        .await
        .unwrap();
    let outcome = result.get("f1").unwrap();
    assert_eq!(outcome.error_kind, Some(ErrorKind::Panicked), "{outcome:?}");
    assert_eq!(
        outcome.error.as_deref().unwrap(),
        format!(
            "operation panicked: boom in run on f1 (in `run` of device f1 of the fragile backend of {})",
            source(&loaded)
        )
    );
    assert_eq!(result.get("m1").unwrap().status, Status::Success);
    // `close` is guarded too; shutting down closes every device.
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_code_never_sees_the_hosts_tokio_runtime() {
    let (registry, _) = misbehaving();
    // The host polls the plugin's future on this runtime...
    assert!(tokio::runtime::Handle::try_current().is_ok());
    let manager = manager(registry, vec![Arc::new(MockDevice::new("m1"))]);
    let result = manager
        .execute_batch("runtime_probe", json!({}), None)
        .await
        .unwrap();
    // ...but the plugin's own copy of tokio does not know it; its sync primitives still work.
    assert_eq!(
        result.get("m1").unwrap().result,
        json!({"plugin_sees_a_runtime": false, "tokio_sync_works": true})
    );
}

#[test]
fn a_panicking_register_function_registers_nothing() {
    let mut registry = Registry::new();
    let err = load_plugin(
        &support::plugins().fixture("panicking_register"),
        &mut registry,
    )
    .unwrap_err();
    assert!(err.to_string().ends_with(
        "its register function panicked: the register function of this fixture panics on purpose"
    ));
    // It had added `explode` before panicking: none of it is kept.
    assert!(!registry.has_operation("explode"));
    assert!(registry.operation_names().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_on_the_plugins_own_runtime_finishes_panics_and_is_aborted_with_its_future() {
    let (registry, loaded) = misbehaving();
    let manager = manager(registry, vec![Arc::new(MockDevice::new("m1"))]);

    // tokio's timer works on the plugin's own runtime.
    let result = manager
        .execute_batch("nap", json!({"ms": 50}), None)
        .await
        .unwrap();
    let outcome = result.get("m1").unwrap();
    assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    assert!(outcome.result["slept_ms"].as_u64().unwrap() >= 50);

    // A panic in a task there reaches the host as this device's `panicked` outcome.
    let result = manager
        .execute_batch("nap", json!({"ms": 1, "panic": true}), None)
        .await
        .unwrap();
    let outcome = result.get("m1").unwrap();
    assert_eq!(outcome.error_kind, Some(ErrorKind::Panicked), "{outcome:?}");
    assert_eq!(
        outcome.error.as_deref().unwrap(),
        format!(
            "operation panicked: boom on the plugin's own runtime (in operation `nap` of {})",
            source(&loaded)
        )
    );

    // The engine's timeout drops the operation's future, which aborts the task over there.
    let options = BatchOptions {
        timeout: Some(std::time::Duration::from_millis(300)),
        ..BatchOptions::default()
    };
    let result = manager
        .execute_batch_with("nap", json!({"ms": 600_000}), None, &options)
        .await
        .unwrap();
    assert_eq!(
        result.get("m1").unwrap().error_kind,
        Some(ErrorKind::Timeout)
    );
    let started = std::time::Instant::now();
    loop {
        let tasks = manager
            .execute_batch("runtime_tasks", json!({}), None)
            .await
            .unwrap();
        let alive = tasks.get("m1").unwrap().result["alive"].as_u64().unwrap();
        if alive == 0 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the timed-out nap is still alive on the plugin's runtime ({alive} tasks)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
