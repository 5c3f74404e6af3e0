//! The simulated Android tools (package manager, screencap, am instrument, reboot) through the real adb
//! server and CLI.

use std::process::Output;
use std::time::{Duration, Instant};

use adbd_sim::testing::AdbServer;
use adbd_sim::{DeviceConfig, InstallOutcome, InstrumentationScript, SimDevice, TestApk, build_test_apk};

fn run(server: &AdbServer, args: &[&str]) -> Output {
    server.adb().args(args).output().expect("run adb")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn said(out: &Output) -> String {
    text(&out.stdout) + &text(&out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_on_modern_and_legacy_devices_and_scripted_failures() {
    let server = AdbServer::start().await.unwrap();
    let modern = SimDevice::start(DeviceConfig::modern("pm-new")).await.unwrap();
    let legacy = SimDevice::start(DeviceConfig::legacy("pm-old")).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let apk = tmp.path().join("my app.apk");
    std::fs::write(&apk, build_test_apk("com.example.app")).unwrap();
    let apk = apk.to_str().unwrap();

    for dev in [&modern, &legacy] {
        let serial = server.connect(dev).await.unwrap();
        let out = run(&server, &["-s", &serial, "install", apk]);
        assert!(out.status.success(), "{}", said(&out));
        assert!(said(&out).contains("Success"), "{}", said(&out));
        assert!(dev.is_installed("com.example.app"));
        let out = run(&server, &["-s", &serial, "shell", "pm list packages example"]);
        assert_eq!(text(&out.stdout).replace('\r', ""), "package:com.example.app\n");
        // The legacy path pushed the APK to /data/local/tmp and removed it afterwards.
        let leftovers: Vec<_> = std::fs::read_dir(dev.path("/data/local/tmp")).unwrap().collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
    let new = modern.serial();
    let old = legacy.serial();

    // Scripted failure: the streamed install fails with the code (the CLI exits 1).
    modern.set_install_outcome(InstallOutcome::failure("INSTALL_FAILED_INSUFFICIENT_STORAGE"));
    let out = run(&server, &["-s", &new, "install", apk]);
    assert_eq!(out.status.code(), Some(1));
    assert!(said(&out).contains("Failure [INSTALL_FAILED_INSUFFICIENT_STORAGE]"), "{}", said(&out));
    // ... and `pm install` of a file prints it with exit status 0.
    let out = run(&server, &["-s", &new, "push", apk, "/data/local/tmp/a.apk"]);
    assert!(out.status.success(), "{}", said(&out));
    let out = run(&server, &["-s", &new, "shell", "pm install -r /data/local/tmp/a.apk"]);
    assert_eq!((text(&out.stdout), out.status.code()), ("Failure [INSTALL_FAILED_INSUFFICIENT_STORAGE]\n".into(), Some(0)));

    // A Java exception instead of a failure line.
    modern.set_install_outcome(InstallOutcome::exception());
    let out = run(&server, &["-s", &new, "install", apk]);
    assert_eq!(out.status.code(), Some(1));
    assert!(said(&out).contains("java.lang.SecurityException"), "{}", said(&out));
    modern.set_install_outcome(InstallOutcome::Install);

    // Per-APK scripted failure and a downgrade.
    let bad = tmp.path().join("bad.apk");
    std::fs::write(&bad, TestApk::new("com.bad").fail_with("INSTALL_FAILED_TEST_ONLY").build()).unwrap();
    let out = run(&server, &["-s", &new, "install", bad.to_str().unwrap()]);
    assert!(said(&out).contains("Failure [INSTALL_FAILED_TEST_ONLY]"), "{}", said(&out));
    let v5 = tmp.path().join("v5.apk");
    std::fs::write(&v5, TestApk::new("com.example.app").version_code(5).build()).unwrap();
    assert!(run(&server, &["-s", &new, "install", "-r", v5.to_str().unwrap()]).status.success());
    let out = run(&server, &["-s", &new, "install", "-r", apk]);
    assert!(said(&out).contains("INSTALL_FAILED_VERSION_DOWNGRADE"), "{}", said(&out));
    // Not an APK at all.
    let junk = tmp.path().join("junk.apk");
    std::fs::write(&junk, b"this is not a zip").unwrap();
    let out = run(&server, &["-s", &new, "install", junk.to_str().unwrap()]);
    assert!(said(&out).contains("Failure [INSTALL_PARSE_FAILED_NOT_APK"), "{}", said(&out));

    // Uninstall: present, then missing (shell v2 carries pm's exit status).
    let out = run(&server, &["-s", &new, "uninstall", "com.example.app"]);
    assert!(out.status.success() && said(&out).contains("Success"), "{}", said(&out));
    let out = run(&server, &["-s", &new, "shell", "pm uninstall com.example.app"]);
    assert_eq!((text(&out.stdout), out.status.code()), ("Failure [DELETE_FAILED_INTERNAL_ERROR]\n".into(), Some(1)));
    // Legacy: Android 6 refuses a reinstall without -r, and pm names the file first.
    let out = run(&server, &["-s", &old, "push", apk, "/data/local/tmp/b.apk"]);
    assert!(out.status.success(), "{}", said(&out));
    let out = run(&server, &["-s", &old, "shell", "pm install /data/local/tmp/b.apk"]);
    assert!(text(&out.stdout).starts_with("\tpkg: /data/local/tmp/b.apk\r\nFailure [INSTALL_FAILED_ALREADY_EXISTS"), "{:?}", text(&out.stdout));
    // Android 6 has no `cmd`.
    let out = run(&server, &["-s", &old, "shell", "cmd package list packages"]);
    assert!(text(&out.stdout).contains("not found"), "{}", said(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screencap_gives_a_distinct_png_per_device() {
    let server = AdbServer::start().await.unwrap();
    let mut pngs = Vec::new();
    let mut devices = Vec::new();
    for i in 0..3 {
        let dev = SimDevice::start(DeviceConfig::modern(format!("shot-{i}"))).await.unwrap();
        let serial = server.connect(&dev).await.unwrap();
        let out = run(&server, &["-s", &serial, "exec-out", "screencap -p"]);
        assert!(out.status.success());
        assert_eq!(&out.stdout[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&out.stdout[12..16], b"IHDR");
        assert!(out.stdout.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82]));
        assert_eq!(dev.screenshots_taken(), 1);
        pngs.push(out.stdout);
        devices.push(dev);
    }
    assert!(pngs[0] != pngs[1] && pngs[1] != pngs[2] && pngs[0] != pngs[2]);
    // To a file on the device, then pulled.
    let serial = devices[0].serial();
    let out = run(&server, &["-s", &serial, "shell", "screencap -p /sdcard/s.png && ls /sdcard"]);
    assert_eq!(text(&out.stdout), "s.png\n");
    assert_eq!(&std::fs::read(devices[0].path("/sdcard/s.png")).unwrap()[..4], b"\x89PNG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn am_instrument_replays_the_scripted_run() {
    let server = AdbServer::start().await.unwrap();
    let dev = SimDevice::start(DeviceConfig::modern("instr")).await.unwrap();
    let serial = server.connect(&dev).await.unwrap();
    let component = "com.example.test/androidx.test.runner.AndroidJUnitRunner";

    let out = run(&server, &["-s", &serial, "shell", &format!("am instrument -w -r {component}")]);
    let stream = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stream.matches("INSTRUMENTATION_STATUS_CODE: 0\n").count(), 3, "{stream}");
    assert!(stream.contains("INSTRUMENTATION_STATUS: id=AndroidJUnitRunner\n"), "{stream}");
    assert!(stream.contains("OK (3 tests)") && stream.ends_with("INSTRUMENTATION_CODE: -1\n"), "{stream}");

    dev.set_instrumentation(
        InstrumentationScript::new()
            .pass("com.example.LoginTest", "logsIn")
            .fail("com.example.LoginTest", "rejects", "java.lang.AssertionError: expected:<1> but was:<2>\n\tat org.junit.Assert.fail(Assert.java:89)"),
    );
    let out = run(&server, &["-s", &serial, "shell", &format!("am instrument -w -r -e class com.example.LoginTest#rejects {component}")]);
    let stream = text(&out.stdout);
    assert!(stream.contains("INSTRUMENTATION_STATUS: stack=java.lang.AssertionError: expected:<1> but was:<2>\n\tat org.junit.Assert.fail"), "{stream}");
    assert!(stream.contains("INSTRUMENTATION_STATUS: test=rejects\nINSTRUMENTATION_STATUS_CODE: -2\n"), "{stream}");
    assert!(!stream.contains("test=logsIn"), "{stream}");
    assert!(stream.contains("FAILURES!!!\nTests run: 1,  Failures: 1"), "{stream}");

    dev.set_instrumentation(InstrumentationScript::default().crash_at(1, adbd_sim::DEFAULT_CRASH));
    let out = run(&server, &["-s", &serial, "shell", &format!("am instrument -w -r {component}")]);
    let stream = text(&out.stdout);
    assert!(stream.contains("INSTRUMENTATION_RESULT: shortMsg=Process crashed.\n"), "{stream}");
    assert!(stream.ends_with("INSTRUMENTATION_CODE: 0\n"), "{stream}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_takes_the_device_away_and_brings_it_back_booting() {
    let server = AdbServer::start().await.unwrap();
    let dev = SimDevice::start(DeviceConfig::modern("rb").reboot_behavior(adbd_sim::RebootBehavior::Returns {
        down: Duration::from_secs(2),
        booting: Duration::from_secs(2),
    }))
    .await
    .unwrap();
    let serial = server.connect(&dev).await.unwrap();
    let started = Instant::now();
    let out = run(&server, &["-s", &serial, "reboot"]);
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(dev.prop("sys.boot_completed").as_deref(), Some("0"));
    server.wait_for_state(&serial, "offline", Duration::from_secs(10)).await.unwrap();
    server.wait_for_state(&serial, "device", Duration::from_secs(60)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2), "back too early: {:?}", started.elapsed());
    let mut seen = Vec::new();
    loop {
        let out = run(&server, &["-s", &serial, "shell", "getprop sys.boot_completed"]);
        let value = text(&out.stdout);
        if seen.last() != Some(&value) {
            seen.push(value.clone());
        }
        if value == "1\n" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never booted: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("reboot round trip {:?}, boot_completed values seen {seen:?}", started.elapsed());
    assert!(started.elapsed() >= Duration::from_secs(4));
}
