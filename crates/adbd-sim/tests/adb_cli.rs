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
    let dev = SimDevice::start(DeviceConfig::modern("sim-v2").model("SimV2"))
        .await
        .unwrap();
    let serial = server.connect(&dev).await.unwrap();

    let out = run(&server, &["-s", &serial, "shell", "echo hi"]);
    assert_eq!(
        (text(&out.stdout), out.status.code()),
        ("hi\n".into(), Some(0))
    );

    let out = run(
        &server,
        &["-s", &serial, "shell", "echo out; echo err >&2; exit 42"],
    );
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");
    assert_eq!(out.status.code(), Some(42));

    let out = run(&server, &["-s", &serial, "shell", "no-such-command-xyz"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );

    let out = run(
        &server,
        &[
            "-s",
            &serial,
            "shell",
            "getprop ro.product.model; getprop ro.build.version.sdk",
        ],
    );
    assert_eq!(text(&out.stdout), "SimV2\n34\n");
    let out = run(&server, &["-s", &serial, "shell", "getprop"]);
    assert!(
        text(&out.stdout).contains("[ro.serialno]: [sim-v2]\n"),
        "{}",
        text(&out.stdout)
    );

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
    assert_eq!(
        (text(&out.stdout), out.status.code()),
        ("piped\n".into(), Some(0))
    );

    let long = server.query("host:devices-l").await.unwrap();
    assert!(
        long.contains(&serial) && long.contains("model:SimV2"),
        "{long}"
    );
    let features = server
        .query(&format!("host-serial:{serial}:features"))
        .await
        .unwrap();
    assert!(
        features.split(',').any(|f| f == "shell_v2") && features.contains("abb_exec"),
        "{features}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_shell_has_crlf_and_no_exit_code() {
    let server = AdbServer::start().await.unwrap();
    let dev = SimDevice::start(DeviceConfig::legacy("sim-old"))
        .await
        .unwrap();
    let serial = server.connect(&dev).await.unwrap();
    let features = server
        .query(&format!("host-serial:{serial}:features"))
        .await
        .unwrap();
    assert_eq!(features, "");

    let out = run(
        &server,
        &["-s", &serial, "shell", "echo a; echo b >&2; exit 3"],
    );
    assert_eq!(text(&out.stdout), "a\r\nb\r\n");
    // The 29 CLI has no exit status from a legacy shell.
    assert_eq!(out.status.code(), Some(0));
    let out = run(
        &server,
        &["-s", &serial, "shell", "getprop ro.build.version.release"],
    );
    assert_eq!(text(&out.stdout), "6.0.1\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_round_trip_with_awkward_names() {
    let server = AdbServer::start().await.unwrap();
    let modern = SimDevice::start(DeviceConfig::modern("sim-sync"))
        .await
        .unwrap();
    let legacy = SimDevice::start(DeviceConfig::legacy("sim-sync-old"))
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let local = tmp.path().join("in put.bin");
    std::fs::write(&local, &data).unwrap();
    for dev in [&modern, &legacy] {
        let serial = server.connect(dev).await.unwrap();
        let remote = "/data/local/tmp/a b'c$d.bin";
        let out = run(
            &server,
            &["-s", &serial, "push", local.to_str().unwrap(), remote],
        );
        assert!(out.status.success(), "push: {}", text(&out.stderr));
        assert_eq!(std::fs::read(dev.path(remote)).unwrap(), data);
        assert_eq!(
            dev.path(remote),
            dev.root().join("data/local/tmp/a b'c$d.bin")
        );

        let back = tmp.path().join(format!("back-{}.bin", dev.port()));
        let out = run(
            &server,
            &["-s", &serial, "pull", remote, back.to_str().unwrap()],
        );
        assert!(out.status.success(), "pull: {}", text(&out.stderr));
        assert_eq!(std::fs::read(&back).unwrap(), data);

        // The shell sees the same sandbox through rewritten paths.
        let out = run(
            &server,
            &[
                "-s",
                &serial,
                "shell",
                "wc -c < '/data/local/tmp/a b'\\''c$d.bin'",
            ],
        );
        assert_eq!(text(&out.stdout).trim(), "300000");

        let out = run(
            &server,
            &[
                "-s",
                &serial,
                "pull",
                "/data/local/tmp/missing",
                back.to_str().unwrap(),
            ],
        );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_devices_answer_in_parallel_each_with_its_own_identity() {
    let server = AdbServer::start().await.unwrap();
    let mut devices = Vec::new();
    for i in 0..20 {
        let config = if i % 5 == 4 {
            DeviceConfig::legacy(format!("farm-{i}"))
        } else {
            DeviceConfig::modern(format!("farm-{i}"))
        };
        let dev = SimDevice::start(config.model(format!("Farm_{i}")))
            .await
            .unwrap();
        server.connect(&dev).await.unwrap();
        devices.push(dev);
    }
    let mut children = Vec::new();
    for dev in &devices {
        let mut cmd = server.adb_async();
        cmd.args([
            "-s",
            &dev.serial(),
            "shell",
            "getprop ro.serialno; getprop ro.product.model",
        ]);
        children.push((dev, cmd.output()));
    }
    for (dev, child) in children {
        let out = child.await.unwrap();
        let expected = format!(
            "{}\n{}\n",
            dev.device_serial(),
            dev.prop("ro.product.model").unwrap()
        );
        let got = text(&out.stdout).replace("\r\n", "\n");
        assert_eq!(got, expected, "device {}", dev.serial());
    }
    let listed = server.devices().await.unwrap();
    assert_eq!(listed.len(), 20);
    assert!(
        listed.iter().all(|(_, state)| state == "device"),
        "{listed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_a_farm_and_connects_it() {
    let server = AdbServer::start().await.unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_adbd-sim"))
        .args([
            "--devices",
            "3",
            "--legacy",
            "1",
            "--connect-to-adb",
            &server.port().to_string(),
            "--fault",
            "2=hang",
            "--fail-install",
            "1=INSTALL_FAILED_INSUFFICIENT_STORAGE",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut rows = Vec::new();
    while rows.len() < 3 {
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        rows.push(line.split('\t').map(str::to_string).collect::<Vec<_>>());
    }
    assert_eq!(rows[0][2], "SimPhone_1");
    assert_eq!(
        (rows[2][2].as_str(), rows[2][3].as_str()),
        ("SimLegacy_3", "legacy")
    );
    for row in &rows {
        assert_eq!(row[0], format!("127.0.0.1:{}", row[1]));
        server
            .wait_for_state(&row[0], "device", std::time::Duration::from_secs(30))
            .await
            .unwrap();
    }
    let long = server.query("host:devices-l").await.unwrap();
    assert!(
        long.contains("model:SimLegacy_3") && long.contains("model:SimPhone_2"),
        "{long}"
    );
    let out = run(
        &server,
        &["-s", &rows[2][0], "shell", "getprop ro.build.version.sdk"],
    );
    assert_eq!(text(&out.stdout), "23\r\n");

    let tmp = tempfile::tempdir().unwrap();
    let apk = tmp.path().join("a.apk");
    std::fs::write(&apk, adbd_sim::build_test_apk("com.example.a")).unwrap();
    let out = run(
        &server,
        &["-s", &rows[0][0], "install", apk.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        (text(&out.stdout) + &text(&out.stderr))
            .contains("Failure [INSTALL_FAILED_INSUFFICIENT_STORAGE]")
    );
    let out = run(
        &server,
        &["-s", &rows[2][0], "install", apk.to_str().unwrap()],
    );
    assert!(
        out.status.success() && text(&out.stdout).contains("Success"),
        "{}",
        text(&out.stdout)
    );

    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_adbd-sim"))
        .args(["--devices", "2", "--fault", "3=hang"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("there is no device 3"),
        "{}",
        text(&bad.stderr)
    );
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_stream_kills_the_command_even_after_it_closed_its_output() {
    let server = AdbServer::start().await.unwrap();
    let dev = SimDevice::start(DeviceConfig::modern("killer"))
        .await
        .unwrap();
    let serial = server.connect(&dev).await.unwrap();
    for (name, script) in [
        ("open", "echo $$ > /data/local/tmp/open.pid; exec sleep 60"),
        (
            "closed",
            "echo $$ > /data/local/tmp/closed.pid; exec >&- 2>&-; exec sleep 60",
        ),
    ] {
        let mut child = server.adb_async();
        child.args(["-s", &serial, "shell", script]);
        let mut child = child.spawn().unwrap();
        let pid_file = dev.path(&format!("/data/local/tmp/{name}.pid"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let pid = loop {
            if let Ok(text) = std::fs::read_to_string(&pid_file)
                && let Ok(pid) = text.trim().parse::<u32>()
            {
                break pid;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: the command never started"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        child.kill().await.unwrap(); // the CLI goes away: the server closes the stream
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| !s.contains(") Z "))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: sleep {pid} outlived its stream"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_push_and_pull_recursively_on_both_generations() {
    let server = AdbServer::start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("sub dir/deeper")).unwrap();
    std::fs::write(tree.join("top.txt"), b"top\n").unwrap();
    std::fs::write(tree.join("sub dir/mid.bin"), vec![9u8; 70_000]).unwrap();
    std::fs::write(tree.join("sub dir/deeper/leaf $x.txt"), b"leaf").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tree.join("top.txt"), std::fs::Permissions::from_mode(0o755)).unwrap();
    for config in [
        DeviceConfig::modern("dir-new"),
        DeviceConfig::legacy("dir-old"),
    ] {
        let dev = SimDevice::start(config).await.unwrap();
        let serial = server.connect(&dev).await.unwrap();
        let out = run(
            &server,
            &["-s", &serial, "push", tree.to_str().unwrap(), "/sdcard/"],
        );
        assert!(
            out.status.success(),
            "push: {}",
            text(&out.stdout) + &text(&out.stderr)
        );
        assert_eq!(
            std::fs::read(dev.path("/sdcard/tree/sub dir/deeper/leaf $x.txt")).unwrap(),
            b"leaf"
        );
        let mode = std::fs::metadata(dev.path("/sdcard/tree/top.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);

        let back = tmp.path().join(format!("back-{}", dev.port()));
        std::fs::create_dir(&back).unwrap();
        let out = run(
            &server,
            &[
                "-s",
                &serial,
                "pull",
                "/sdcard/tree",
                back.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "pull: {}",
            text(&out.stdout) + &text(&out.stderr)
        );
        assert_eq!(
            std::fs::read(back.join("tree/sub dir/mid.bin")).unwrap(),
            vec![9u8; 70_000]
        );
        assert_eq!(std::fs::read(back.join("tree/top.txt")).unwrap(), b"top\n");
        assert_eq!(
            std::fs::read(back.join("tree/sub dir/deeper/leaf $x.txt")).unwrap(),
            b"leaf"
        );

        let out = run(&server, &["-s", &serial, "ls", "/sdcard/tree"]);
        let listing = text(&out.stdout);
        assert!(
            listing.contains(" top.txt\n") && listing.contains(" sub dir\n"),
            "{listing}"
        );
    }
}
