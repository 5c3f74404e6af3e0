//! One manager, several batches: backends that connect (SSH, ADB) keep their connections
//! between batches, so the second batch on the same devices skips every handshake.
//!
//! ```text
//! cargo run --release --example repeated_batches -- [POOL.toml] [COMMAND] [BATCHES]
//! ```
//!
//! Reads (default: `examples/pools/local.toml`) the `[[devices]]` of a pool file (any backend), runs `shell COMMAND` (default `true`)
//! on all of them BATCHES times (default 2) with one device per task, and prints the time of
//! each batch. `scripts/bench/ssh.sh` uses it to measure connection reuse.

use std::sync::Arc;
use std::time::Instant;

use devbatch_core::{
    BatchOperationManager, BatchOptions, DevicePool, DeviceSpec, Labels, Registry,
};
use serde_json::{Map, json};
// Link every backend and the built-in operations.
use devbatch_adb as _;
use devbatch_local as _;
use devbatch_mock as _;
use devbatch_ops as _;
use devbatch_ssh as _;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let pool_path = args.next().unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/pools/local.toml").to_string()
    });
    let command = args.next().unwrap_or_else(|| "true".into());
    let batches: usize = args.next().map_or(Ok(2), |n| n.parse())?;

    let registry = Registry::linked()?;
    let text = std::fs::read_to_string(&pool_path)?;
    let table: toml::Table = toml::from_str(&text)?;
    let mut pool = DevicePool::new();
    for entry in table
        .get("devices")
        .and_then(|d| d.as_array())
        .ok_or("the pool file has no [[devices]]")?
    {
        let entry = entry
            .as_table()
            .ok_or("a [[devices]] entry is not a table")?;
        let backend = entry
            .get("backend")
            .and_then(|b| b.as_str())
            .ok_or("an entry has no backend")?;
        let mut spec = DeviceSpec::default();
        let mut settings = Map::new();
        for (key, value) in entry {
            match key.as_str() {
                "backend" => {}
                "id" => spec.id = value.as_str().map(str::to_string),
                "labels" => {
                    let labels: Labels = value.clone().try_into()?;
                    spec.labels = labels;
                }
                _ => {
                    settings.insert(key.clone(), serde_json::to_value(value)?);
                }
            }
        }
        spec.settings = settings;
        for device in registry.backend(backend)?.open(spec).await? {
            pool.add(device)?;
        }
    }
    let devices = pool.len();
    let manager = Arc::new(BatchOperationManager::with_registry(pool, registry));
    let options = BatchOptions::default().concurrency(devices.max(1));
    println!("| batch | devices | wall | succeeded |");
    println!("|---:|---:|---:|---:|");
    for n in 1..=batches {
        let started = Instant::now();
        let result = manager
            .execute_batch_with("shell", json!({ "cmd": command }), None, &options)
            .await?;
        let wall = started.elapsed();
        println!(
            "| {n} | {devices} | {:.3} s | {} |",
            wall.as_secs_f64(),
            result.summary().succeeded
        );
        if let Some((id, outcome)) = result.iter().find(|(_, o)| !o.is_success()) {
            eprintln!("{id}: {}", outcome.error.as_deref().unwrap_or_default());
        }
    }
    manager.shutdown().await;
    Ok(())
}
