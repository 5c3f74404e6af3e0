//! Engine scale: how much the batch engine itself costs per device-operation, and how much memory
//! it holds, with mock devices doing nothing (or sleeping 1 ms) at concurrency 10 and 1,000.
//!
//! ```text
//! cargo bench -p devbatch-core --bench engine            # the whole table
//! cargo bench -p devbatch-core --bench engine -- 100000 1000 noop collect   # one row
//! ```
//!
//! Each row runs in a fresh process (the bench re-executes itself), so its peak RSS (`VmHWM`)
//! belongs to that row alone. The pool of mock devices is part of it; the peak before the batch
//! starts (the pool and the runtime) is shown apart, so that what the batch itself adds can be
//! seen: in `jsonl` mode it should not grow with the number of devices beyond their outcomes'
//! bookkeeping. `collect` keeps every outcome in the `BatchResult`; `jsonl`
//! streams each outcome as a JSON line to a sink as the CLI's `--output jsonl` does.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use devbatch_core::{
    BatchOperationManager, BatchOptions, Device, DevicePool, Operation, OperationContext,
    OperationFailure, ParamSpec, Params, registry::Registry,
};
use devbatch_mock::MockDevice;
use serde_json::{Value, json};

/// Does nothing, or sleeps for `sleep_ms`: the cost measured is the engine's.
struct Noop {
    sleep: Duration,
}

#[async_trait]
impl Operation for Noop {
    fn name(&self) -> &str {
        "noop"
    }
    fn description(&self) -> &str {
        "does nothing"
    }
    fn params(&self) -> Vec<ParamSpec> {
        Vec::new()
    }
    fn idempotent(&self) -> bool {
        true
    }
    fn default_timeout(&self) -> Duration {
        Duration::from_secs(60)
    }
    async fn execute(
        &self,
        _device: &dyn Device,
        _params: &Params,
        _ctx: &OperationContext,
    ) -> Result<Value, OperationFailure> {
        if !self.sleep.is_zero() {
            tokio::time::sleep(self.sleep).await;
        }
        Ok(Value::Null)
    }
}

struct Row {
    devices: usize,
    concurrency: usize,
    op_ms: u64,
    jsonl: bool,
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The time of the batch, the peak RSS of the whole run, and the peak before the batch started.
fn run_row(row: &Row) -> (Duration, f64, f64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut pool = DevicePool::new();
        for n in 0..row.devices {
            pool.add(Arc::new(MockDevice::new(format!("mock-{n:06}"))))
                .expect("unique ids");
        }
        let mut registry = Registry::new();
        registry
            .add_operation(
                Arc::new(Noop {
                    sleep: Duration::from_millis(row.op_ms),
                }),
                "bench",
            )
            .expect("one operation");
        let manager = BatchOperationManager::with_registry(pool, registry);
        let options = BatchOptions::default().concurrency(row.concurrency);
        let before = peak_rss_mb();
        let start = Instant::now();
        let count = if row.jsonl {
            let mut out = std::io::BufWriter::new(std::io::sink());
            let summary = manager
                .execute_batch_streaming("noop", json!({}), None, &options, |id, outcome| {
                    serde_json::to_writer(&mut out, &json!({ "device": id, "outcome": outcome }))
                        .expect("serialize");
                    out.write_all(b"\n").expect("write");
                })
                .await
                .expect("valid batch");
            summary.succeeded
        } else {
            let result = manager
                .execute_batch_with("noop", json!({}), None, &options)
                .await
                .expect("valid batch");
            result.summary().succeeded
        };
        let wall = start.elapsed();
        assert_eq!(count, row.devices, "every device succeeded");
        (wall, peak_rss_mb(), before)
    })
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let [devices, concurrency, op, mode] = &args[..] {
        let row = Row {
            devices: devices.parse().expect("devices"),
            concurrency: concurrency.parse().expect("concurrency"),
            op_ms: if op == "noop" {
                0
            } else {
                op.trim_end_matches("ms").parse().expect("op")
            },
            jsonl: mode == "jsonl",
        };
        let (wall, rss, before) = run_row(&row);
        println!("{} {rss:.1} {before:.1}", wall.as_secs_f64());
        return;
    }
    let rows: &[(usize, usize, &str, &str)] = &[
        (1_000, 10, "noop", "collect"),
        (1_000, 1_000, "noop", "collect"),
        (10_000, 10, "noop", "collect"),
        (10_000, 1_000, "noop", "collect"),
        (100_000, 10, "noop", "collect"),
        (100_000, 1_000, "noop", "collect"),
        (1_000, 10, "1ms", "collect"),
        (1_000, 1_000, "1ms", "collect"),
        (10_000, 1_000, "1ms", "collect"),
        (100_000, 1_000, "1ms", "collect"),
        (1_000, 1_000, "noop", "jsonl"),
        (10_000, 1_000, "noop", "jsonl"),
        (100_000, 1_000, "noop", "jsonl"),
    ];
    let me = std::env::current_exe().expect("own path");
    println!(
        "| devices | concurrency | op | output | wall (median of 3) | per device-op | peak RSS | before the batch (pool) | added by the batch |"
    );
    println!("|---:|---:|---|---|---:|---:|---:|---:|---:|");
    for &(devices, concurrency, op, mode) in rows {
        let mut samples: Vec<(f64, f64, f64)> = (0..3)
            .map(|_| {
                let out = std::process::Command::new(&me)
                    .args([
                        devices.to_string(),
                        concurrency.to_string(),
                        op.into(),
                        mode.into(),
                    ])
                    .output()
                    .expect("run one row");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let text = String::from_utf8_lossy(&out.stdout);
                let mut parts = text
                    .split_whitespace()
                    .map(|p| p.parse::<f64>().expect("number"));
                (
                    parts.next().expect("wall"),
                    parts.next().expect("rss"),
                    parts.next().expect("rss before"),
                )
            })
            .collect();
        samples.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (wall, rss, before) = samples[1];
        println!(
            "| {devices} | {concurrency} | {op} | {mode} | {:.3} s | {:.2} µs | {rss:.0} MB | {before:.0} MB | {:.0} MB |",
            wall,
            wall * 1e6 / devices as f64,
            rss - before
        );
    }
}
