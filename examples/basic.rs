//! The spec's "Basic Usage": build a pool, make a manager, run one operation on every device.
//!
//! The pool mixes three scripted mock phones with this machine, so it runs anywhere:
//!
//! ```text
//! cargo run --example basic
//! ```

use std::sync::Arc;

use devbatch_core::{BatchOperationManager, DevicePool};
use devbatch_local::LocalDevice;
use devbatch_mock::{MockDevice, Script};
use serde_json::json;
// Linking the built-in operations registers them (`shell`, `info`, ...).
use devbatch_ops as _;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut device_pool = DevicePool::new();
    for (n, release) in ["14", "14", "13"].iter().enumerate() {
        let phone = MockDevice::new(format!("phone-{}", n + 1))
            .with_label("os", "android")
            .on(
                "info",
                Script::succeed(json!({ "os": "Android", "release": release })),
            );
        device_pool.add(Arc::new(phone))?;
    }
    device_pool.add(Arc::new(LocalDevice::new("local")))?;

    let batch_manager = BatchOperationManager::new(device_pool);

    // Execute on all devices (`None`).
    let result = batch_manager.execute_batch("info", json!({}), None).await?;

    println!("{}", serde_json::to_string_pretty(&result)?);
    batch_manager.shutdown().await;
    Ok(())
}
