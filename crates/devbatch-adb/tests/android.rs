//! Issue 5's Android operations against the real adb server with simulated devices: reboot,
//! install_app, uninstall_app, screenshot and instrumentation run_test.

mod common;

use std::time::{Duration, Instant};

use adbd_sim::{DeviceConfig, RebootBehavior};
use common::{SLOW, device, discover, manager, run, server};
use devbatch_core::{BatchOptions, Command, ErrorKind, Status};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_with_wait_returns_once_the_device_is_back_and_booted() {
    let server = server().await;
    let cfg = DeviceConfig::modern("boots").reboot_behavior(RebootBehavior::Returns {
        down: Duration::from_secs(3),
        booting: Duration::from_secs(2),
    });
    let (_sim, serial) = device(&server, cfg).await;
    let devices = discover(&server).await;
    let d = devices[0].clone();
    let m = manager(devices);
    let started = Instant::now();
    let result = run(
        &m,
        "reboot",
        json!({"wait": true}),
        BatchOptions::default().timeout(Duration::from_secs(120)),
    )
    .await;
    let elapsed = started.elapsed();
    let o = result.get(&serial).unwrap();
    assert_eq!(o.status, Status::Success, "{o:?}");
    assert_eq!(o.result["rebooted"], true);
    assert_eq!(o.result["mode"], "system");
    // Away for 3 s, then 2 s booting: the wait covered both.
    assert!(
        elapsed >= Duration::from_secs(5),
        "returned after {elapsed:?}"
    );
    assert!(
        o.result["back_after_ms"].as_u64().unwrap() >= 5000,
        "{}",
        o.result
    );
    let out = d
        .run(&Command::shell("getprop sys.boot_completed"))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_without_wait_only_says_the_request_was_accepted() {
    let server = server().await;
    let cfg = DeviceConfig::modern("quick").reboot_behavior(RebootBehavior::Returns {
        down: Duration::from_secs(2),
        booting: Duration::from_secs(1),
    });
    let (_sim, serial) = device(&server, cfg).await;
    let m = manager(discover(&server).await);
    let result = run(
        &m,
        "reboot",
        json!({}),
        BatchOptions::default().timeout(SLOW),
    )
    .await;
    let o = result.get(&serial).unwrap();
    assert_eq!(o.status, Status::Success, "{o:?}");
    assert_eq!(
        o.result,
        json!({"mode": "system", "reboot_requested": true})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_of_a_device_that_never_returns_fails_naming_the_timeout() {
    let server = server().await;
    let (_ok, healthy) = device(&server, DeviceConfig::modern("fine")).await;
    let cfg = DeviceConfig::modern("gone").reboot_behavior(RebootBehavior::NeverReturns);
    let (_sim, serial) = device(&server, cfg).await;
    let m = manager(discover(&server).await);
    let started = Instant::now();
    let result = m
        .execute_batch_with(
            "reboot",
            json!({"wait": true}),
            Some(&[serial.as_str()]),
            &BatchOptions::default()
                .timeout(Duration::from_secs(8))
                .retry(devbatch_core::RetryPolicy::retries(0)),
        )
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(8));
    let o = result.get(&serial).unwrap();
    assert_eq!(o.status, Status::Error, "{o:?}");
    assert_eq!(o.error_kind, Some(ErrorKind::Timeout));
    assert_eq!(o.error.as_deref(), Some("timed out after 8s"));
    // The other device was not touched.
    let result = run(
        &m,
        "shell",
        json!({"cmd": "echo up"}),
        BatchOptions::default().timeout(SLOW),
    )
    .await;
    assert_eq!(result.get(&healthy).unwrap().result["stdout"], "up\n");
}
