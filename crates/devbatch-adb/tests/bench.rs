//! Issue 4's benchmark, side by side in one run against the same simulated devices: devbatch's
//! native client against the stock `adb` CLI. Ignored by default (it takes a minute); run with
//! `cargo nextest run -p devbatch-adb --test bench --run-ignored only --no-capture`.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use adbd_sim::DeviceConfig;
use common::{discover, manager, run, server};
use devbatch_core::{BatchOptions, Status};
use serde_json::json;

const ADB: &str = "/usr/bin/adb";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly"]
async fn bench_shell_on_50_devices_and_push_50mb_to_10() {
    let server = server().await;
    let port = server.port().to_string();
    // The simulated devices get a runtime (and threads) of their own, as they would in a
    // separate process, so the client under test does not share its workers with them.
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut sims = Vec::new();
    let mut serials = Vec::new();
    for i in 0..50 {
        let sim = sim_rt
            .spawn(adbd_sim::SimDevice::start(DeviceConfig::modern(format!(
                "bench-{i:02}"
            ))))
            .await
            .unwrap()
            .unwrap();
        serials.push(server.connect(&sim).await.unwrap());
        sims.push(sim);
    }
    let m = manager(discover(&server).await);

    // 1. `shell true` on 50 devices.
    let started = Instant::now();
    let result = run(
        &m,
        "shell",
        json!({"cmd": "true"}),
        BatchOptions::default()
            .concurrency(50)
            .timeout(Duration::from_secs(120)),
    )
    .await;
    let cold = started.elapsed();
    assert_eq!(result.failed_ids(), Vec::<&str>::new());
    // Again, with each device's feature list cached (what a long-running embedder sees).
    let started = Instant::now();
    let result = run(
        &m,
        "shell",
        json!({"cmd": "true"}),
        BatchOptions::default()
            .concurrency(50)
            .timeout(Duration::from_secs(120)),
    )
    .await;
    let warm = started.elapsed();
    assert_eq!(result.failed_ids(), Vec::<&str>::new());
    let ours = cold;
    let mut xargs = tokio::process::Command::new("xargs")
        .args([
            "-P", "10", "-I{}", ADB, "-P", &port, "-s", "{}", "shell", "true",
        ])
        .env("HOME", server.home())
        .env("ADB_MDNS", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("xargs");
    let started = Instant::now();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = xargs.stdin.take().unwrap();
        stdin
            .write_all(serials.join("\n").as_bytes())
            .await
            .unwrap();
    }
    assert!(xargs.wait().await.unwrap().success());
    let theirs = started.elapsed();
    eprintln!(
        "BENCH shell true x50: devbatch {ours:?} (warm {warm:?}), xargs -P 10 adb {theirs:?}, ratio {:.3} (warm {:.3})",
        ours.as_secs_f64() / theirs.as_secs_f64(),
        warm.as_secs_f64() / theirs.as_secs_f64()
    );

    // 2. Push 50 MB to 10 devices.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload.bin");
    let data: Vec<u8> = (0..50 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let ten: Vec<&str> = serials[..10].iter().map(String::as_str).collect();
    let started = Instant::now();
    let result = m
        .execute_batch_with(
            "push",
            json!({"local": file.display().to_string(), "remote": "/data/local/tmp/payload.bin"}),
            Some(&ten),
            &BatchOptions::default()
                .concurrency(10)
                .timeout(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    let ours = started.elapsed();
    for id in &ten {
        assert_eq!(result.get(id).unwrap().status, Status::Success, "{id}");
    }
    let started = Instant::now();
    let mut children = Vec::new();
    for s in &ten {
        children.push(
            tokio::process::Command::new(ADB)
                .args([
                    "-P",
                    &port,
                    "-s",
                    s,
                    "push",
                    &file.display().to_string(),
                    "/data/local/tmp/payload2.bin",
                ])
                .env("HOME", server.home())
                .env("ADB_MDNS", "0")
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap(),
        );
    }
    for mut c in children {
        assert!(c.wait().await.unwrap().success());
    }
    let theirs = started.elapsed();
    let mb = 500.0;
    eprintln!(
        "BENCH push 50 MB x10: devbatch {ours:?} ({:.1} MB/s), 10 x adb push {theirs:?} ({:.1} MB/s), throughput ratio {:.3}",
        mb / ours.as_secs_f64(),
        mb / theirs.as_secs_f64(),
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
    for sim in &sims[..10] {
        assert_eq!(
            std::fs::metadata(sim.path("/data/local/tmp/payload.bin"))
                .unwrap()
                .len(),
            data.len() as u64
        );
    }
    drop(sims);
    sim_rt.shutdown_background();
}
