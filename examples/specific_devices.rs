//! The spec's "Specific Devices": run an operation on some devices of the pool only, by id or
//! by label.
//!
//! ```text
//! cargo run --example specific_devices
//! ```

use std::sync::Arc;

use devbatch_core::{BatchOperationManager, DevicePool, pool::LabelSelector};
use devbatch_mock::MockDevice;
use devbatch_ops as _;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut device_pool = DevicePool::new();
    for id in ["device1", "device2", "device3"] {
        device_pool.add(Arc::new(MockDevice::new(id).with_label("rack", "a")))?;
    }
    device_pool.add(Arc::new(MockDevice::new("device4").with_label("rack", "b")))?;
    let batch_manager = BatchOperationManager::new(device_pool);

    // By id. Unscripted mock devices run the operation for real in a private sandbox.
    let result = batch_manager
        .execute_batch(
            "run_test",
            json!({ "test_name": "performance_test", "cmd": "echo performance_test: 12 ms" }),
            Some(&["device1", "device2"]),
        )
        .await?;
    println!("by id:\n{}", serde_json::to_string_pretty(&result)?);

    // By label: every device with rack=b.
    let selector: LabelSelector = "rack=b".parse()?;
    let ids: Vec<String> = batch_manager
        .pool()
        .select(&[selector])
        .iter()
        .map(|d| d.id().to_string())
        .collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let result = batch_manager
        .execute_batch(
            "shell",
            json!({ "args": ["echo", "on rack b"] }),
            Some(&ids),
        )
        .await?;
    println!(
        "by label rack=b:\n{}",
        serde_json::to_string_pretty(&result)?
    );

    batch_manager.shutdown().await;
    Ok(())
}
