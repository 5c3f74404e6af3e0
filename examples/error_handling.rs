//! The spec's "Error Handling": a batch-level error (the request itself is wrong) is a `Result`
//! error; a device-level error is that device's outcome, and every other device still gets its
//! own result. Also shows a timeout and retries, which the spec has not.
//!
//! ```text
//! cargo run --example error_handling
//! ```

use std::sync::Arc;
use std::time::Duration;

use devbatch_core::{
    BatchError, BatchOperationManager, BatchOptions, DevicePool, ErrorKind, RetryPolicy,
};
use devbatch_mock::{MockDevice, Script};
use devbatch_ops as _;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut device_pool = DevicePool::new();
    device_pool.add(Arc::new(
        MockDevice::new("good").on("info", Script::succeed(json!("Android 14"))),
    ))?;
    device_pool.add(Arc::new(
        MockDevice::new("flaky").on("info", Script::succeed(json!("Android 13")).flaky(1)),
    ))?;
    device_pool.add(Arc::new(
        MockDevice::new("offline").on("info", Script::fail(ErrorKind::Unreachable, "usb reset")),
    ))?;
    device_pool.add(Arc::new(
        MockDevice::new("stuck").on("info", Script::hang()),
    ))?;
    let batch_manager = BatchOperationManager::new(device_pool);

    // A wrong request is refused before anything runs, with an error naming the problem.
    for (operation, params, devices) in [
        ("complex_operation", json!({ "param1": "value1" }), None),
        ("shell", json!({ "cmd": 42 }), None),
        ("info", json!({}), Some(&["good", "ghost"][..])),
    ] {
        match batch_manager
            .execute_batch(operation, params, devices)
            .await
        {
            Err(e @ BatchError::Operation(_)) => println!("operation error: {e}"),
            Err(e @ BatchError::Device(_)) => println!("device error: {e}"),
            other => println!("unexpected: {other:?}"),
        }
    }

    // A valid request: each device gets exactly one outcome, whatever the others do.
    let options = BatchOptions::default()
        .timeout(Duration::from_millis(500))
        .retry(RetryPolicy::retries(2));
    let result = batch_manager
        .execute_batch_with("info", json!({}), None, &options)
        .await?;
    for (device_id, outcome) in result.iter() {
        match &outcome.error {
            Some(error) => println!(
                "failed on {device_id} after {} attempt(s): {error}",
                outcome.attempts
            ),
            None => println!("succeeded on {device_id}: {}", outcome.result),
        }
    }
    let failed_devices = result.failed_ids();
    println!("failed devices: {failed_devices:?}");
    batch_manager.shutdown().await;
    Ok(())
}
