//! The simulator end to end through the real adb server and the real adb CLI.

use std::process::Output;

use adbd_sim::testing::AdbServer;
use adbd_sim::{DeviceConfig, SimDevice};

fn run(server: &AdbServer, args: &[&str]) -> Output {
    server.adb().args(args).output().expect("run adb")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_v2_separates_streams_and_reports_exit_codes() {
    let server = AdbServer::start().await.unwrap();
    let dev = SimDevice::start(DeviceConfig::modern("sim-v2").model("SimV2")).await.unwrap();
    let serial = server.connect(&dev).await.unwrap();

    let out = run(&server, &["-s", &serial, "shell", "echo hi"]);
    assert_eq!((text(&out.stdout), out.status.code()), ("hi\n".into(), Some(0)));

    let out = run(&server, &["-s", &serial, "shell", "echo out; echo err >&2; exit 42"]);
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");
    assert_eq!(out.status.code(), Some(42));

    let out = run(&server, &["-s", &serial, "shell", "no-such-command-xyz"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(text(&out.stderr).contains("not found"), "{}", text(&out.stderr));

    let out = run(&server, &["-s", &serial, "shell", "getprop ro.product.model; getprop ro.build.version.sdk"]);
    assert_eq!(text(&out.stdout), "SimV2\n34\n");
    let out = run(&server, &["-s", &serial, "shell", "getprop"]);
    assert!(text(&out.stdout).contains("[ro.serialno]: [sim-v2]\n"), "{}", text(&out.stdout));

    // stdin reaches the command and close-stdin ends it.
    let mut child = server
        .adb()
        .args(["-s", &serial, "shell", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"piped\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!((text(&out.stdout), out.status.code()), ("piped\n".into(), Some(0)));

    let long = server.query("host:devices-l").await.unwrap();
    assert!(long.contains(&format!("{serial}")) && long.contains("model:SimV2"), "{long}");
    let features = server.query(&format!("host-serial:{serial}:features")).await.unwrap();
    assert!(features.split(',').any(|f| f == "shell_v2") && features.contains("abb_exec"), "{features}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_shell_has_crlf_and_no_exit_code() {
    let server = AdbServer::start().await.unwrap();
    let dev = SimDevice::start(DeviceConfig::legacy("sim-old")).await.unwrap();
    let serial = server.connect(&dev).await.unwrap();
    let features = server.query(&format!("host-serial:{serial}:features")).await.unwrap();
    assert_eq!(features, "");

    let out = run(&server, &["-s", &serial, "shell", "echo a; echo b >&2; exit 3"]);
    assert_eq!(text(&out.stdout), "a\r\nb\r\n");
    // The 29 CLI has no exit status from a legacy shell.
    assert_eq!(out.status.code(), Some(0));
    let out = run(&server, &["-s", &serial, "shell", "getprop ro.build.version.release"]);
    assert_eq!(text(&out.stdout), "6.0.1\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_round_trip_with_awkward_names() {
    let server = AdbServer::start().await.unwrap();
    let modern = SimDevice::start(DeviceConfig::modern("sim-sync")).await.unwrap();
    let legacy = SimDevice::start(DeviceConfig::legacy("sim-sync-old")).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let local = tmp.path().join("in put.bin");
    std::fs::write(&local, &data).unwrap();
    for dev in [&modern, &legacy] {
        let serial = server.connect(dev).await.unwrap();
        let remote = "/data/local/tmp/a b'c$d.bin";
        let out = run(&server, &["-s", &serial, "push", local.to_str().unwrap(), remote]);
        assert!(out.status.success(), "push: {}", text(&out.stderr));
        assert_eq!(std::fs::read(dev.path(remote)).unwrap(), data);
        assert_eq!(dev.path(remote), dev.root().join("data/local/tmp/a b'c$d.bin"));

        let back = tmp.path().join(format!("back-{}.bin", dev.port()));
        let out = run(&server, &["-s", &serial, "pull", remote, back.to_str().unwrap()]);
        assert!(out.status.success(), "pull: {}", text(&out.stderr));
        assert_eq!(std::fs::read(&back).unwrap(), data);

        // The shell sees the same sandbox through rewritten paths.
        let out = run(&server, &["-s", &serial, "shell", "wc -c < '/data/local/tmp/a b'\\''c$d.bin'"]);
        assert_eq!(text(&out.stdout).trim(), "300000");

        let out = run(&server, &["-s", &serial, "pull", "/data/local/tmp/missing", back.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        // The 29 CLI prints this error on stdout when its output is not a terminal.
        let said = text(&out.stdout) + &text(&out.stderr);
        let expected = if dev.config().device_serial() == "sim-sync" {
            // STA2 with errno 2
            "failed to stat remote object '/data/local/tmp/missing': No such file or directory"
        } else {
            // STAT all zero
            "remote object '/data/local/tmp/missing' does not exist"
        };
        assert!(said.contains(expected), "{said}");
    }
}
