//! The spec's "Resource Management": the manager is shut down when done, which waits for work
//! in flight and closes device connections. Here a batch runs in the background with a
//! concurrency limit and progress events, is cancelled half-way, and still reports every device.
//!
//! ```text
//! cargo run --example resource_management
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use devbatch_core::{BatchEvent, BatchOperationManager, BatchOptions, CancelHandle, DevicePool};
use devbatch_mock::{Latency, MockDevice, Script};
use devbatch_ops as _;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut device_pool = DevicePool::new();
    for n in 0..40 {
        let device = MockDevice::new(format!("board-{n:02}")).on(
            "info",
            Script::succeed(json!({ "board": n }))
                .with_latency(Latency::fixed(Duration::from_millis(50))),
        );
        device_pool.add(Arc::new(device))?;
    }
    let batch_manager = Arc::new(BatchOperationManager::new(device_pool));

    let finished = Arc::new(AtomicUsize::new(0));
    let cancel = CancelHandle::new();
    let options = BatchOptions::default()
        .concurrency(4)
        .cancel_handle(cancel.clone())
        .observer({
            let finished = finished.clone();
            move |event| {
                if let BatchEvent::Finished { .. } = event {
                    finished.fetch_add(1, Ordering::Relaxed);
                }
            }
        });

    let batch = tokio::spawn({
        let batch_manager = batch_manager.clone();
        async move {
            batch_manager
                .execute_batch_with("info", json!({}), None, &options)
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!(
        "cancelling after {} devices finished",
        finished.load(Ordering::Relaxed)
    );
    cancel.cancel();

    let result = batch.await??;
    let summary = result.summary();
    println!(
        "{} outcomes: {} succeeded, {} failed (cancelled ones included)",
        result.len(),
        summary.succeeded,
        summary.failed
    );

    // Always shut down: waits for in-flight work, then closes connections.
    batch_manager.shutdown().await;
    Ok(())
}
