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

use adbd_sim::{InstallOutcome, InstrumentationScript, SimHandle, TestApk};

/// Writes an APK into `dir` and returns its path as a string.
fn apk(dir: &std::path::Path, name: &str, apk: &TestApk) -> String {
    let path = dir.join(name);
    std::fs::write(&path, apk.build()).unwrap();
    path.display().to_string()
}

/// The APKs left in the device's /data/local/tmp (which the legacy install path used).
fn tmp_apks(sim: &SimHandle) -> Vec<String> {
    std::fs::read_dir(sim.path("/data/local/tmp"))
        .expect("/data/local/tmp exists on the device")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".apk"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_succeeds_on_new_middle_and_old_devices_by_their_method() {
    let server = server().await;
    let (new, new_s) = device(&server, DeviceConfig::modern("new")).await;
    let (mid, mid_s) = device(
        &server,
        DeviceConfig::modern("mid").without_feature("abb_exec"),
    )
    .await;
    let (old, old_s) = device(&server, DeviceConfig::legacy("old")).await;
    let dir = tempfile::tempdir().unwrap();
    let path = apk(dir.path(), "app.apk", &TestApk::new("com.example.app"));
    let m = manager(discover(&server).await);
    let result = run(
        &m,
        "install_app",
        json!({"app_path": path}),
        BatchOptions::default().timeout(SLOW),
    )
    .await;
    for (sim, serial, method) in [
        (&new, &new_s, "abb_exec"),
        (&mid, &mid_s, "exec_cmd"),
        (&old, &old_s, "pm_install"),
    ] {
        let o = result.get(serial).unwrap();
        assert_eq!(o.status, Status::Success, "{serial}: {o:?}");
        assert_eq!(o.result["package"], "com.example.app");
        assert_eq!(o.result["method"], method, "{serial}");
        assert!(sim.is_installed("com.example.app"), "{serial}");
    }
    assert_eq!(
        tmp_apks(&old),
        Vec::<String>::new(),
        "the legacy path removes its temporary APK"
    );

    // A downgrade is refused with its code unless allowed.
    let v0 = apk(
        dir.path(),
        "old.apk",
        &TestApk::new("com.example.app").version_code(0),
    );
    let result = run(
        &m,
        "install_app",
        json!({"app_path": v0}),
        BatchOptions::default().timeout(SLOW),
    )
    .await;
    for serial in [&new_s, &mid_s, &old_s] {
        let o = result.get(serial).unwrap();
        assert_eq!(
            (o.status, o.error_kind),
            (Status::Error, Some(ErrorKind::Failed)),
            "{serial}: {o:?}"
        );
        assert!(
            o.error.as_deref().unwrap().starts_with(
                "install of old.apk failed: Failure [INSTALL_FAILED_VERSION_DOWNGRADE"
            ),
            "{serial}: {:?}",
            o.error
        );
        assert_eq!(o.result["failure_code"], "INSTALL_FAILED_VERSION_DOWNGRADE");
    }
    let result = run(
        &m,
        "install_app",
        json!({"app_path": v0, "allow_downgrade": true}),
        BatchOptions::default().timeout(SLOW),
    )
    .await;
    for serial in [&new_s, &mid_s, &old_s] {
        assert_eq!(
            result.get(serial).unwrap().status,
            Status::Success,
            "{serial}: {:?}",
            result.get(serial)
        );
    }
    assert_eq!(tmp_apks(&old), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_failure_lines_with_exit_status_0_and_exceptions_are_errors() {
    let server = server().await;
    let (new, new_s) = device(&server, DeviceConfig::modern("f-new")).await;
    let (old, old_s) = device(&server, DeviceConfig::legacy("f-old")).await;
    let (exc, exc_s) = device(&server, DeviceConfig::modern("f-exc")).await;
    new.set_install_outcome(InstallOutcome::failure(
        "INSTALL_FAILED_INSUFFICIENT_STORAGE",
    ));
    old.set_install_outcome(InstallOutcome::failure(
        "INSTALL_FAILED_INSUFFICIENT_STORAGE",
    ));
    exc.set_install_outcome(InstallOutcome::exception());
    let dir = tempfile::tempdir().unwrap();
    let path = apk(dir.path(), "big app.apk", &TestApk::new("com.example.big"));
    let m = manager(discover(&server).await);
    let result = run(
        &m,
        "install_app",
        json!({"app_path": path}),
        BatchOptions::default().timeout(SLOW),
    )
    .await;
    for serial in [&new_s, &old_s] {
        let o = result.get(serial).unwrap();
        assert_eq!(
            (o.status, o.error_kind),
            (Status::Error, Some(ErrorKind::Failed)),
            "{serial}: {o:?}"
        );
        assert_eq!(
            o.error.as_deref(),
            Some("install of big app.apk failed: Failure [INSTALL_FAILED_INSUFFICIENT_STORAGE]")
        );
        assert_eq!(
            o.result["failure_code"],
            "INSTALL_FAILED_INSUFFICIENT_STORAGE"
        );
    }
    let o = result.get(&exc_s).unwrap();
    assert_eq!(
        (o.status, o.error_kind),
        (Status::Error, Some(ErrorKind::Failed)),
        "{o:?}"
    );
    assert_eq!(
        o.error.as_deref(),
        Some(
            "install of big app.apk failed: Exception occurred while executing 'install': | java.lang.SecurityException: Installs from this shell are blocked by device policy | at com.android.server.pm.PackageInstallerService.createSessionInternal(PackageInstallerService.java:738)"
        )
    );
    assert!(!new.is_installed("com.example.big") && !old.is_installed("com.example.big"));
    assert_eq!(
        tmp_apks(&old),
        Vec::<String>::new(),
        "removed after a failure too"
    );

    // An APK the device itself rejects (scripted in the manifest).
    new.set_install_outcome(InstallOutcome::Install);
    let bad = apk(
        dir.path(),
        "bad.apk",
        &TestApk::new("com.example.bad").fail_with("INSTALL_FAILED_NO_MATCHING_ABIS"),
    );
    let result = m
        .execute_batch(
            "install_app",
            json!({"app_path": bad}),
            Some(&[new_s.as_str()]),
        )
        .await
        .unwrap();
    let o = result.get(&new_s).unwrap();
    assert_eq!(
        o.error.as_deref(),
        Some("install of bad.apk failed: Failure [INSTALL_FAILED_NO_MATCHING_ABIS]")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_on_20_devices_with_one_scripted_failure() {
    let server = server().await;
    let mut sims = Vec::new();
    for i in 0..20 {
        let cfg = if i % 4 == 0 {
            DeviceConfig::legacy(format!("i{i:02}"))
        } else {
            DeviceConfig::modern(format!("i{i:02}"))
        };
        sims.push(device(&server, cfg).await);
    }
    sims[7]
        .0
        .set_install_outcome(InstallOutcome::failure("INSTALL_FAILED_OLDER_SDK"));
    let dir = tempfile::tempdir().unwrap();
    let path = apk(dir.path(), "fleet.apk", &TestApk::new("com.example.fleet"));
    let m = manager(discover(&server).await);
    let result = run(
        &m,
        "install_app",
        json!({"app_path": path}),
        BatchOptions::default().concurrency(20).timeout(SLOW),
    )
    .await;
    assert_eq!(result.failed_ids(), vec![sims[7].1.as_str()]);
    let o = result.get(&sims[7].1).unwrap();
    assert_eq!(
        o.error.as_deref(),
        Some("install of fleet.apk failed: Failure [INSTALL_FAILED_OLDER_SDK]")
    );
    for (i, (sim, _)) in sims.iter().enumerate() {
        assert_eq!(sim.is_installed("com.example.fleet"), i != 7, "device {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_reads_the_package_managers_verdict() {
    let server = server().await;
    let (new, new_s) = device(&server, DeviceConfig::modern("u-new")).await;
    let (old, old_s) = device(&server, DeviceConfig::legacy("u-old")).await;
    new.preinstall("com.example.gone");
    old.preinstall("com.example.gone");
    let m = manager(discover(&server).await);
    let result = run(
        &m,
        "uninstall_app",
        json!({"package": "com.example.gone"}),
        BatchOptions::default().timeout(SLOW),
    )
    .await;
    for (sim, serial) in [(&new, &new_s), (&old, &old_s)] {
        let o = result.get(serial).unwrap();
        assert_eq!(o.status, Status::Success, "{serial}: {o:?}");
        assert_eq!(o.result["package"], "com.example.gone");
        assert!(!sim.is_installed("com.example.gone"));
    }
    let result = run(
        &m,
        "uninstall_app",
        json!({"package": "com.example.gone"}),
        BatchOptions::default().timeout(SLOW),
    )
    .await;
    for serial in [&new_s, &old_s] {
        let o = result.get(serial).unwrap();
        assert_eq!(
            (o.status, o.error_kind),
            (Status::Error, Some(ErrorKind::Failed)),
            "{serial}: {o:?}"
        );
        assert_eq!(
            o.error.as_deref(),
            Some("uninstall of com.example.gone failed: Failure [DELETE_FAILED_INTERNAL_ERROR]")
        );
    }
    // A package name that could smuggle shell syntax is refused before anything runs.
    let err = m
        .execute_batch("uninstall_app", json!({"package": "x; reboot"}), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("must be a package name"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots_of_10_devices_are_10_distinct_valid_pngs() {
    let server = server().await;
    let mut sims = Vec::new();
    for i in 0..10 {
        sims.push(device(&server, DeviceConfig::modern(format!("shot{i}"))).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let template = dir
        .path()
        .join("shots")
        .join("{device}.png")
        .display()
        .to_string();
    let m = manager(discover(&server).await);
    let result = run(
        &m,
        "screenshot",
        json!({"local": template}),
        BatchOptions::default().concurrency(10).timeout(SLOW),
    )
    .await;
    let mut seen = std::collections::BTreeSet::new();
    for (sim, serial) in &sims {
        let o = result.get(serial).unwrap();
        assert_eq!(o.status, Status::Success, "{serial}: {o:?}");
        let path = std::path::PathBuf::from(o.result["local"].as_str().unwrap());
        assert_eq!(
            path.file_name().unwrap().to_string_lossy(),
            format!("{serial}.png")
        );
        let png = std::fs::read(&path).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{serial}");
        assert_eq!(o.result["bytes"].as_u64().unwrap(), png.len() as u64);
        assert!(
            o.result["width"].as_u64().unwrap() > 0 && o.result["height"].as_u64().unwrap() > 0
        );
        assert!(seen.insert(png), "{serial}: same PNG as another device");
        assert_eq!(sim.screenshots_taken(), 1);
    }
    let left: Vec<_> = std::fs::read_dir(dir.path().join("shots"))
        .unwrap()
        .filter_map(Result::ok)
        .collect();
    assert_eq!(left.len(), 10, "no temporary files remain: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instrumentation_runs_are_parsed_per_test() {
    let server = server().await;
    let (pass, pass_s) = device(&server, DeviceConfig::modern("t-pass")).await;
    let (fail, fail_s) = device(&server, DeviceConfig::legacy("t-fail")).await;
    let (crash, crash_s) = device(&server, DeviceConfig::modern("t-crash")).await;
    pass.set_instrumentation(InstrumentationScript::default());
    let stack = "java.lang.AssertionError: expected:<false> but was:<true>\n\tat org.junit.Assert.fail(Assert.java:89)\n\tat com.example.LoginTest.rejectsBadPassword(LoginTest.java:31)";
    fail.set_instrumentation(
        InstrumentationScript::new()
            .pass("com.example.LoginTest", "logsIn")
            .fail("com.example.LoginTest", "rejectsBadPassword", stack)
            .pass("com.example.LoginTest", "logsOut"),
    );
    crash
        .set_instrumentation(InstrumentationScript::default().crash_at(1, adbd_sim::DEFAULT_CRASH));
    let m = manager(discover(&server).await);
    let params = json!({"package": "com.example.test"});
    let result = run(
        &m,
        "run_test",
        params,
        BatchOptions::default().timeout(SLOW),
    )
    .await;

    let o = result.get(&pass_s).unwrap();
    assert_eq!(o.status, Status::Success, "{o:?}");
    assert_eq!(
        o.result["totals"],
        json!({"total": 3, "passed": 3, "failed": 0, "ignored": 0, "assumption_failures": 0, "incomplete": 0})
    );
    assert_eq!(o.result["tests"][1]["method"], "testTwo");
    assert_eq!(o.result["instrumentation_code"], -1);

    let o = result.get(&fail_s).unwrap();
    assert_eq!(
        (o.status, o.error_kind),
        (Status::Error, Some(ErrorKind::Failed)),
        "{o:?}"
    );
    assert_eq!(
        o.error.as_deref(),
        Some(
            "1 of 3 tests failed; first: com.example.LoginTest#rejectsBadPassword: java.lang.AssertionError: expected:<false> but was:<true>"
        )
    );
    assert_eq!(o.result["totals"]["passed"], 2);
    assert_eq!(o.result["tests"][1]["status"], "failed");
    assert_eq!(o.result["tests"][1]["stack"], stack);

    let o = result.get(&crash_s).unwrap();
    assert_eq!(
        (o.status, o.error_kind),
        (Status::Error, Some(ErrorKind::Failed)),
        "{o:?}"
    );
    let text = o.error.as_deref().unwrap();
    assert!(
        text.starts_with("the instrumentation run failed: Process crashed."),
        "{text}"
    );
    assert!(text.contains("java.lang.NullPointerException"), "{text}");
    assert_eq!(o.result["totals"]["passed"], 1);
    assert_eq!(o.result["tests"][1]["status"], "incomplete");

    // One method alone, selected with -e class.
    let result = m
        .execute_batch(
            "run_test",
            json!({"package": "com.example.test", "test_name": "com.example.LoginTest#logsOut"}),
            Some(&[fail_s.as_str()]),
        )
        .await
        .unwrap();
    let o = result.get(&fail_s).unwrap();
    assert_eq!(o.status, Status::Success, "{o:?}");
    assert_eq!(o.result["totals"]["total"], 1);
    assert_eq!(o.result["tests"][0]["method"], "logsOut");

    // `cmd` instead of `package`: a plain shell test, as on every other backend.
    let result = m
        .execute_batch(
            "run_test",
            json!({"cmd": "echo checking; exit 3"}),
            Some(&[pass_s.as_str()]),
        )
        .await
        .unwrap();
    let o = result.get(&pass_s).unwrap();
    assert_eq!(
        o.error.as_deref(),
        Some("test echo checking; exit 3 failed with exit status 3")
    );
    assert_eq!(o.result["stdout"], "checking\n");
    let err = m
        .execute_batch("run_test", json!({"cmd": "true", "package": "com.x"}), None)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("parameter 'cmd' of operation 'run_test'"),
        "{err}"
    );
    let err = m
        .execute_batch("run_test", json!({}), None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("needs parameter 'package'"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_dropped_by_a_timeout_never_completes_on_the_device() {
    // The APK is many times what the adb server may already hold when the connection is reset
    // (its first read plus one socket buffer, a few hundred KiB on loopback): that part may
    // still reach the device, the rest must not.
    const RATE: u64 = 256 * 1024;
    const PAD: usize = 2 * 1024 * 1024; // 8 s at RATE
    let server = server().await;
    // Both streamed methods: abb_exec, and exec:cmd where abb_exec is missing.
    let (abb, abb_s) = device(&server, DeviceConfig::modern("slow-abb")).await;
    let (cmd, cmd_s) = device(
        &server,
        DeviceConfig::modern("slow-cmd").without_feature("abb_exec"),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = apk(
        dir.path(),
        "large.apk",
        &TestApk::new("com.example.large").entry("assets/pad.bin", vec![7u8; PAD]),
    );
    let size = std::fs::metadata(&path).unwrap().len();
    let devices = discover(&server).await;
    for d in &devices {
        d.run(&Command::shell("true")).await.unwrap(); // features cached
    }
    let m = manager(devices.clone());

    abb.set_fault(adbd_sim::Fault::SlowLink(RATE));
    cmd.set_fault(adbd_sim::Fault::SlowLink(RATE));
    let started = Instant::now();
    let result = run(
        &m,
        "install_app",
        json!({"app_path": path}),
        BatchOptions::default().timeout(Duration::from_secs(1)),
    )
    .await;
    for serial in [&abb_s, &cmd_s] {
        let o = result.get(serial).unwrap();
        assert_eq!(o.error_kind, Some(ErrorKind::Timeout), "{serial}: {o:?}");
    }
    // Longer than the whole APK needs at RATE: a relayed install would be done by now.
    let drain = Duration::from_secs(size / RATE + 4);
    tokio::time::sleep(drain.saturating_sub(started.elapsed())).await;
    for (sim, serial) in [(&abb, &abb_s), (&cmd, &cmd_s)] {
        assert!(
            !sim.is_installed("com.example.large"),
            "{serial}: the timed-out install completed on the device"
        );
        let d = devices.iter().find(|d| d.id() == serial.as_str()).unwrap();
        let asked = Instant::now();
        let out = d.run(&Command::shell("echo ok")).await.unwrap();
        assert_eq!(
            (out.exit_code, out.stdout.as_slice()),
            (0, b"ok\n".as_slice()),
            "{serial}"
        );
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "{serial}: the device was still busy: {:?}",
            asked.elapsed()
        );
    }
}
