//! Loopback timing of the SSH backend, for the benchmark figures (ignored by default; run with
//! `cargo nextest run --release -p devbatch-ssh --test bench --run-ignored only --no-capture`).
//! Prints figures; it asserts only that every command succeeded.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Sshd, SshdOptions, device};
use devbatch_core::{
    BatchOperationManager, BatchOptions, Device, DeviceExt, DevicePool, Registry, RetryPolicy,
};
use serde_json::json;

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 Hz on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run on demand in release mode"]
async fn bench_200_loopback_targets() {
    let n: u32 = std::env::var("DEVBATCH_BENCH_TARGETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let hosts: Vec<String> = (1..=n)
        .map(|i| format!("127.0.{}.{}", 2 + i / 250, i % 250 + 1))
        .collect();
    let sshd = Sshd::start(SshdOptions {
        addrs: hosts.clone(),
        ..Default::default()
    });
    let mut devices: Vec<Arc<dyn Device>> = Vec::new();
    for h in &hosts {
        devices.push(device(h, sshd.settings(h)).await);
    }
    let m =
        BatchOperationManager::with_registry(DevicePool::from_devices(devices.clone()).unwrap(), {
            let mut r = Registry::new();
            devbatch_ops::register_all(&mut r).unwrap();
            r
        });
    let options = BatchOptions::default()
        .concurrency(n as usize)
        .retry(RetryPolicy::retries(0))
        .timeout(Duration::from_secs(120));
    // Connecting only (TCP, banner, key exchange, host key check, authentication): no command,
    // so the figure does not include the account's shell start-up.
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let connects = devices.iter().map(|d| async move {
        d.downcast_ref::<devbatch_ssh::SshDevice>()
            .expect("an ssh device")
            .host_key_fingerprint()
            .await
    });
    for r in futures_util::future::join_all(connects).await {
        r.unwrap();
    }
    println!(
        "cold connect of {n} targets (handshake + auth, no command): {:.2} s wall, {:.2} s client CPU",
        t.elapsed().as_secs_f64(),
        cpu_seconds() - cpu
    );
    for label in ["warm", "warm"] {
        let (t, cpu) = (Instant::now(), cpu_seconds());
        let r = m
            .execute_batch_with("shell", json!({"cmd": "true"}), None, &options)
            .await
            .unwrap();
        let failed = r.failed_ids();
        println!(
            "{label} batch, `true` on {n} targets: {:.2} s wall, {:.2} s client CPU",
            t.elapsed().as_secs_f64(),
            cpu_seconds() - cpu
        );
        assert!(failed.is_empty(), "{failed:?}");
    }
    let one = &devices[0];
    let (t, cpu) = (Instant::now(), cpu_seconds());
    for _ in 0..200 {
        one.shell_text("true").await.unwrap();
    }
    println!(
        "200 sequential commands on one warm connection: {:.2} s wall, {:.2} s client CPU",
        t.elapsed().as_secs_f64(),
        cpu_seconds() - cpu
    );
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let runs = (0..200).map(|_| one.shell("true"));
    for r in futures_util::future::join_all(runs).await {
        r.unwrap();
    }
    println!(
        "200 concurrent commands on one connection (max_channels 5): {:.2} s wall, {:.2} s client CPU",
        t.elapsed().as_secs_f64(),
        cpu_seconds() - cpu
    );
    println!("connections accepted by sshd: {}", sshd.accepted());
}
