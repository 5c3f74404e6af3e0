//! Shared helpers: a private real adb server, simulated devices connected to it, pools and
//! batches built the way the CLI builds them.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::sync::Arc;
use std::time::Duration;

use adbd_sim::testing::AdbServer;
use adbd_sim::{DeviceConfig, SimDevice, SimHandle};
use devbatch_adb::AdbBackend;
use devbatch_core::{
    Backend, BatchOperationManager, BatchOptions, BatchResult, Device, DevicePool, DeviceSpec,
    Registry,
};
use serde_json::{Value, json};

/// Starts the real adb server on a free port; fails (never skips) when adb is missing.
pub async fn server() -> AdbServer {
    AdbServer::start().await.unwrap_or_else(|e| {
        panic!("these tests need the real adb server (apt-get install -y adb): {e}")
    })
}

/// Starts a simulated device and connects it; returns the handle and its serial.
pub async fn device(server: &AdbServer, config: DeviceConfig) -> (SimHandle, String) {
    let handle = SimDevice::start(config)
        .await
        .expect("start simulated device");
    let serial = server
        .connect(&handle)
        .await
        .expect("connect simulated device");
    (handle, serial)
}

/// The pool-file entry settings for this server plus `extra`.
pub fn entry(server: &AdbServer, extra: Value) -> DeviceSpec {
    let mut settings = extra.as_object().cloned().unwrap_or_default();
    settings.insert(
        "server".into(),
        json!(format!("127.0.0.1:{}", server.port())),
    );
    DeviceSpec {
        settings,
        ..Default::default()
    }
}

/// Opens an entry with the adb backend.
pub async fn open(server: &AdbServer, extra: Value) -> Vec<Arc<dyn Device>> {
    AdbBackend
        .open(entry(server, extra))
        .await
        .unwrap_or_else(|e| panic!("open adb entry: {e}"))
}

/// Every device of the server (`discover = true`).
pub async fn discover(server: &AdbServer) -> Vec<Arc<dyn Device>> {
    open(server, json!({"discover": true})).await
}

/// A manager over `devices` with the generic and the ADB operations.
pub fn manager(devices: Vec<Arc<dyn Device>>) -> BatchOperationManager {
    let mut registry = Registry::new();
    devbatch_ops::register_all(&mut registry).expect("generic ops");
    devbatch_adb::ops::register_all(&mut registry).expect("adb ops");
    let pool = DevicePool::from_devices(devices).expect("pool");
    BatchOperationManager::with_registry(pool, registry)
}

/// Runs one batch on every device.
pub async fn run(
    manager: &BatchOperationManager,
    operation: &str,
    params: Value,
    options: BatchOptions,
) -> BatchResult {
    manager
        .execute_batch_with(
            operation,
            params,
            None,
            &options.retry(devbatch_core::RetryPolicy::retries(0)),
        )
        .await
        .unwrap_or_else(|e| panic!("batch {operation}: {e}"))
}

/// Generous per-device timeout for a loaded 2-core machine.
pub const SLOW: Duration = Duration::from_secs(60);
