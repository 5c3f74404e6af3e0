//! The ADB backend against the real adb server (`/usr/bin/adb`, private port) with simulated
//! devices from `adbd-sim`: issue 4's scenarios.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use adbd_sim::{DeviceConfig, Fault, SimDevice};
use common::{SLOW, device, discover, manager, open, run, server};
use devbatch_core::conformance::{Suite, run_all};
use devbatch_core::{BatchOptions, Command, DeviceState, ErrorKind, Status};
use serde_json::json;

fn outcome_error(result: &devbatch_core::BatchResult, id: &str) -> (ErrorKind, String) {
    let o = result
        .get(id)
        .unwrap_or_else(|| panic!("no outcome for {id}"));
    assert_eq!(o.status, Status::Error, "{id}: {o:?}");
    (
        o.error_kind.expect("error kind"),
        o.error.clone().expect("error text"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_modern_device() {
    let server = server().await;
    let (_sim, serial) = device(&server, DeviceConfig::modern("conf-modern")).await;
    let devices = open(&server, json!({"serial": serial})).await;
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].id(), serial);
    let mut suite = Suite::new("/data/local/tmp/conformance");
    suite.timeout_probe = Duration::from_secs(1);
    run_all(devices[0].as_ref(), &suite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_legacy_device_without_shell_v2() {
    let server = server().await;
    let (_sim, serial) = device(&server, DeviceConfig::legacy("conf-legacy")).await;
    let devices = open(&server, json!({"serial": serial})).await;
    let mut suite = Suite::new("/data/local/tmp/conformance");
    // The legacy shell is a pty: stderr merges into stdout and stdin cannot be ended.
    suite.separate_stderr = false;
    suite.stdin = false;
    suite.timeout_probe = Duration::from_secs(1);
    run_all(devices[0].as_ref(), &suite).await;
    // And stdin is refused clearly rather than hanging.
    let err = devices[0]
        .run(&Command::shell("cat").with_stdin(b"x".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("no shell protocol v2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_serials_beside_other_serials_each_answer_for_themselves() {
    let server = server().await;
    let mut expected = BTreeMap::new();
    let mut sims = Vec::new();
    for (i, name) in ["emulator-5554", "R58M 12 (work)", "plain-serial"]
        .iter()
        .enumerate()
    {
        let cfg = if i == 1 {
            DeviceConfig::legacy(*name)
        } else {
            DeviceConfig::modern(*name)
        }
        .model(format!("Model_{i}"));
        let (sim, serial) = device(&server, cfg).await;
        assert!(serial.starts_with("127.0.0.1:"), "{serial}");
        expected.insert(serial, name.to_string());
        sims.push(sim);
    }
    let devices = discover(&server).await;
    let ids: Vec<String> = devices.iter().map(|d| d.id().to_string()).collect();
    assert_eq!(
        ids.iter()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        expected.keys().cloned().collect(),
        "ids are the serials exactly as listed"
    );
    for d in &devices {
        assert_eq!(d.state(), DeviceState::Ready);
        assert_eq!(d.labels()["serial"], d.id());
        assert!(
            d.labels()["model"].starts_with("Model_"),
            "{:?}",
            d.labels()
        );
    }
    let m = manager(devices);
    let result = run(
        &m,
        "shell",
        json!({"cmd": "getprop ro.serialno"}),
        BatchOptions::default().timeout(SLOW),
    )
    .await;
    for (serial, own) in &expected {
        let o = result.get(serial).unwrap();
        assert_eq!(o.status, Status::Success, "{serial}: {o:?}");
        assert_eq!(o.result["stdout"], format!("{own}\n"), "{serial}");
    }
    // `info` (the adb one) reads each device's own properties.
    let result = run(&m, "info", json!({}), BatchOptions::default().timeout(SLOW)).await;
    for (serial, own) in &expected {
        let o = result.get(serial).unwrap();
        assert_eq!(o.status, Status::Success, "{serial}: {o:?}");
        assert_eq!(o.result["serial"], serial.as_str());
        assert_eq!(o.result["serialno"], own.as_str());
        assert_eq!(o.result["manufacturer"], "Devbatch");
        assert!(o.result["model"].as_str().unwrap().starts_with("Model_"));
    }
    let legacy = expected
        .iter()
        .find(|(_, own)| own.as_str() == "R58M 12 (work)")
        .unwrap()
        .0;
    let info = &result.get(legacy).unwrap().result;
    assert_eq!(
        (info["release"].as_str(), info["sdk"].as_u64()),
        (Some("6.0.1"), Some(23))
    );
    assert_eq!(info["abi"], "armeabi-v7a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_devices_at_all() {
    let server = server().await;
    assert!(
        discover(&server).await.is_empty(),
        "an empty server discovers no devices"
    );
    // A serial the server does not know: listed in the pool, and unreachable when used.
    let devices = open(&server, json!({"serial": "ZX1G22"})).await;
    match devices[0].state() {
        DeviceState::NotReady { state, hint } => {
            assert_eq!(state, "absent");
            assert!(hint.contains("does not list this serial"), "{hint}");
        }
        other => panic!("{other:?}"),
    }
    let m = manager(devices);
    let result = run(
        &m,
        "shell",
        json!({"cmd": "true"}),
        BatchOptions::default().timeout(SLOW),
    )
    .await;
    let (kind, text) = outcome_error(&result, "ZX1G22");
    assert_eq!(kind, ErrorKind::Unreachable);
    assert_eq!(
        text,
        format!(
            "unreachable: device 'ZX1G22' is not attached to the adb server at 127.0.0.1:{}",
            server.port()
        )
    );
    // No server at all: a setup error that says how to start one.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = devbatch_core::DeviceSpec {
        settings: json!({"discover": true, "server": format!("127.0.0.1:{port}")})
            .as_object()
            .unwrap()
            .clone(),
        ..Default::default()
    };
    use devbatch_core::Backend;
    let err = devbatch_adb::AdbBackend
        .open(spec)
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("cannot reach the adb server at 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.contains("adb start-server"), "{err}");
}

/// An entry naming its device (`serial`, `connect`) does not need the server to load: with
/// the server down the device is in the pool (state `unknown`), and its operations fail as
/// `unreachable` naming the server, so one dead server never keeps the pool file from loading.
/// `discover = true` cannot know its devices and still fails (see `no_devices_at_all`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_device_on_a_dead_server_loads_and_fails_unreachable_when_used() {
    use devbatch_core::Backend;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("127.0.0.1:{port}");
    let mut devices = Vec::new();
    for (settings, id) in [
        (
            json!({"serial": "R58M12ABCDE", "server": dead}),
            "R58M12ABCDE",
        ),
        (
            json!({"connect": "localhost:6123", "server": dead}),
            "127.0.0.1:6123",
        ),
    ] {
        let spec = devbatch_core::DeviceSpec {
            settings: settings.as_object().unwrap().clone(),
            ..Default::default()
        };
        let opened = devbatch_adb::AdbBackend
            .open(spec)
            .await
            .unwrap_or_else(|e| panic!("{settings}: {e}"));
        assert_eq!(opened.len(), 1, "{settings}");
        assert_eq!(opened[0].id(), id);
        assert_eq!(opened[0].labels()["adb_server"], dead);
        match opened[0].state() {
            DeviceState::NotReady { state, hint } => {
                assert_eq!(state, "unknown");
                assert!(
                    hint.starts_with(&format!(
                        "the adb server at {dead} did not answer when the pool was loaded (cannot reach the adb server at {dead}: "
                    )) && hint.ends_with("); operations ask it again"),
                    "{hint}"
                );
            }
            other => panic!("{other:?}"),
        }
        devices.extend(opened);
    }
    let m = manager(devices);
    let result = run(
        &m,
        "shell",
        json!({"cmd": "true"}),
        BatchOptions::default().timeout(SLOW),
    )
    .await;
    for id in ["R58M12ABCDE", "127.0.0.1:6123"] {
        let (kind, text) = outcome_error(&result, id);
        assert_eq!(kind, ErrorKind::Unreachable, "{id}: {text}");
        assert_eq!(
            text,
            format!(
                "unreachable: cannot reach the adb server at {dead}: Connection refused (os error 111); start it with `adb start-server` (or `adb -P PORT start-server`) or fix the `server` setting"
            ),
            "{id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_and_offline_devices_beside_a_healthy_one() {
    let server = server().await;
    let (_ok, healthy) = device(&server, DeviceConfig::modern("healthy")).await;
    let locked = SimDevice::start(DeviceConfig::modern("locked").fault(Fault::Unauthorized))
        .await
        .unwrap();
    let reply = server.connect_addr(&locked.serial()).await.unwrap();
    assert!(reply.starts_with("failed to authenticate"), "{reply}");
    server
        .wait_for_state(&locked.serial(), "unauthorized", Duration::from_secs(30))
        .await
        .unwrap();
    let silent = SimDevice::start(DeviceConfig::modern("silent").fault(Fault::NeverAnswer))
        .await
        .unwrap();
    // The server waits ~10 s for the handshake before answering; the entry is offline meanwhile.
    let port = server.port();
    let addr = silent.serial();
    let pending = tokio::spawn(async move {
        let _ = adbd_sim_query(port, &format!("host:connect:{addr}")).await;
    });
    server
        .wait_for_state(&silent.serial(), "offline", Duration::from_secs(30))
        .await
        .unwrap();

    let devices = discover(&server).await;
    let states: BTreeMap<String, String> = devices
        .iter()
        .map(|d| (d.id().to_string(), d.state().as_str().to_string()))
        .collect();
    assert_eq!(states[&healthy], "ready");
    assert_eq!(states[&locked.serial()], "unauthorized");
    assert_eq!(states[&silent.serial()], "offline");
    let m = manager(devices);
    let result = run(
        &m,
        "shell",
        json!({"cmd": "echo hi"}),
        BatchOptions::default().timeout(SLOW),
    )
    .await;
    assert_eq!(result.get(&healthy).unwrap().status, Status::Success);
    assert_eq!(result.get(&healthy).unwrap().result["stdout"], "hi\n");
    let (kind, text) = outcome_error(&result, &locked.serial());
    assert_eq!(kind, ErrorKind::NotReady);
    assert!(
        text.starts_with("device is unauthorized: accept the \"Allow USB debugging?\" prompt"),
        "{text}"
    );
    let (kind, text) = outcome_error(&result, &silent.serial());
    assert_eq!(kind, ErrorKind::NotReady);
    assert!(text.starts_with("device is offline: "), "{text}");
    assert!(text.contains("reconnect"), "{text}");
    pending.abort();
}

/// One host request straight to the server (what the harness does, without waiting for it).
async fn adbd_sim_query(port: u16, request: &str) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("{:04x}{request}", request.len()).as_bytes())
        .await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_streams_and_line_ends_with_and_without_shell_v2() {
    let server = server().await;
    let (_m, modern) = device(&server, DeviceConfig::modern("v2")).await;
    let (_l, legacy) = device(&server, DeviceConfig::legacy("v1")).await;
    let devices = discover(&server).await;
    let get = |s: &str| devices.iter().find(|d| d.id() == s).unwrap().clone();
    let (modern, legacy) = (get(&modern), get(&legacy));

    let out = modern
        .run(&Command::shell("echo out; echo err >&2; exit 3"))
        .await
        .unwrap();
    assert_eq!(
        (out.exit_code, out.stdout.as_slice(), out.stderr.as_slice()),
        (3, b"out\n".as_slice(), b"err\n".as_slice())
    );

    // Legacy: the exit code comes from the marker, which never shows; the pty's CRLF is undone.
    let out = legacy
        .run(&Command::shell("printf 'a\\nb\\n'; echo c; exit 42"))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 42);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a\nb\nc\n");
    assert!(out.stderr.is_empty());
    let out = legacy
        .run(&Command::shell("printf 'no newline'"))
        .await
        .unwrap();
    assert_eq!(
        (out.exit_code, out.stdout.as_slice()),
        (0, b"no newline".as_slice())
    );
    let out = legacy
        .run(&Command::shell("echo merged >&2; false"))
        .await
        .unwrap();
    assert_eq!(
        (out.exit_code, out.stdout.as_slice()),
        (1, b"merged\n".as_slice())
    );
    let out = legacy
        .run(&Command::argv(["echo", "it's", "$HOME"]))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"it's $HOME\n");
}

/// A line the shell cannot parse is the command's own failure (status 2, the shell's message)
/// on a legacy device too: the exit-code wrapper runs the line in a shell of its own, so a
/// stray `)`, an open quote or a trailing backslash cannot break the wrapper itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_shell_syntax_errors_are_the_commands_own_failure() {
    let server = server().await;
    let (_m, modern) = device(&server, DeviceConfig::modern("syntax-v2")).await;
    let (_l, legacy) = device(&server, DeviceConfig::legacy("syntax-v1")).await;
    let devices = discover(&server).await;
    let get = |s: &str| devices.iter().find(|d| d.id() == s).unwrap().clone();
    let (modern, legacy) = (get(&modern), get(&legacy));

    for (line, message) in [
        ("echo hi )", "Syntax error: \")\" unexpected"),
        (
            "echo 'unterminated",
            "Syntax error: Unterminated quoted string",
        ),
    ] {
        let old = legacy
            .run(&Command::shell(line))
            .await
            .unwrap_or_else(|e| panic!("legacy {line:?}: {e}"));
        let new = modern
            .run(&Command::shell(line))
            .await
            .unwrap_or_else(|e| panic!("modern {line:?}: {e}"));
        // The device's own shell says what is wrong; a legacy device merges it into stdout.
        assert_eq!(
            (old.exit_code, String::from_utf8_lossy(&old.stdout).as_ref()),
            (2, format!("sh: 1: {message}\n").as_str()),
            "legacy {line:?}"
        );
        assert!(old.stderr.is_empty());
        assert_eq!(
            (new.exit_code, String::from_utf8_lossy(&new.stderr).as_ref()),
            (2, format!("/bin/sh: 1: {message}\n").as_str()),
            "modern {line:?}"
        );
    }
    // A trailing backslash stays the line's: the same output as with shell protocol v2.
    let old = legacy.run(&Command::shell("echo a \\")).await.unwrap();
    let new = modern.run(&Command::shell("echo a \\")).await.unwrap();
    assert_eq!(
        (old.exit_code, old.stdout.as_slice()),
        (0, b"a \\\n".as_slice())
    );
    assert_eq!(
        (new.exit_code, new.stdout.as_slice()),
        (0, b"a \\\n".as_slice())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_over_the_cap_fails_with_output_limit() {
    let server = server().await;
    let (_m, modern) = device(&server, DeviceConfig::modern("cap-v2")).await;
    let (_l, legacy) = device(&server, DeviceConfig::legacy("cap-v1")).await;
    let m = manager(discover(&server).await);
    let result = run(
        &m,
        "shell",
        json!({"cmd": "head -c 100000 /dev/zero | tr '\\000' z"}),
        BatchOptions::default().timeout(SLOW).max_output(1000),
    )
    .await;
    for id in [&modern, &legacy] {
        let (kind, text) = outcome_error(&result, id);
        assert_eq!(kind, ErrorKind::OutputLimit, "{id}");
        assert_eq!(text, "output exceeded the per-device limit of 1000 bytes");
    }
    // Just under the cap is fine, on both.
    let result = run(
        &m,
        "shell",
        json!({"cmd": "head -c 900 /dev/zero | tr '\\000' z"}),
        BatchOptions::default().timeout(SLOW).max_output(1000),
    )
    .await;
    for id in [&modern, &legacy] {
        assert_eq!(result.get(id).unwrap().status, Status::Success, "{id}");
        assert_eq!(
            result.get(id).unwrap().result["stdout"]
                .as_str()
                .unwrap()
                .len(),
            900
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_device_times_out_and_the_others_are_unaffected() {
    let server = server().await;
    let mut sims = Vec::new();
    for i in 0..3 {
        sims.push(device(&server, DeviceConfig::modern(format!("h{i}"))).await);
    }
    let hung = sims[1].1.clone();
    sims[1].0.set_fault(Fault::Hang);
    let m = manager(discover(&server).await);
    let started = Instant::now();
    let result = run(
        &m,
        "shell",
        json!({"cmd": "echo alive"}),
        BatchOptions::default().timeout(Duration::from_secs(3)),
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the hang was waited for"
    );
    let (kind, text) = outcome_error(&result, &hung);
    assert_eq!(kind, ErrorKind::Timeout);
    assert_eq!(text, "timed out after 3s");
    for (_, serial) in [&sims[0], &sims[2]] {
        let o = result.get(serial).unwrap();
        assert_eq!(o.status, Status::Success, "{serial}: {o:?}");
        assert_eq!(o.result["stdout"], "alive\n");
    }
    // Once healthy again, the same device works (the dropped stream was closed).
    sims[1].0.set_fault(Fault::None);
    let result = run(
        &m,
        "shell",
        json!({"cmd": "echo back"}),
        BatchOptions::default().timeout(SLOW),
    )
    .await;
    assert_eq!(
        result.get(&hung).unwrap().status,
        Status::Success,
        "{:?}",
        result.get(&hung)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_with_spaces_quotes_and_dollars_stay_literal() {
    let server = server().await;
    let (sim, serial) = device(&server, DeviceConfig::modern("paths")).await;
    let (lsim, lserial) = device(&server, DeviceConfig::legacy("paths-old")).await;
    let devices = discover(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("src file.txt");
    std::fs::write(&local, b"literal content\n").unwrap();
    let remote = "/data/local/tmp/it's a \"$HOME\" dir/f $x `id`.txt";
    for (handle, id) in [(&sim, &serial), (&lsim, &lserial)] {
        let d = devices.iter().find(|d| d.id() == id.as_str()).unwrap();
        let stats = d
            .push(&local, remote)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!((stats.files, stats.bytes), (1, 16));
        assert_eq!(
            std::fs::read(handle.path(remote)).unwrap(),
            b"literal content\n",
            "{id}"
        );
        let out = d.run(&Command::argv(["cat", remote])).await.unwrap();
        assert_eq!(
            (out.exit_code, out.stdout.as_slice()),
            (0, b"literal content\n".as_slice()),
            "{id}"
        );
        let back = dir.path().join(format!("back {}", id.replace(':', "_")));
        d.pull(remote, &back).await.unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), b"literal content\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_dropped_mid_push_and_mid_pull_is_an_error_and_leaves_nothing() {
    let server = server().await;
    let (sim, serial) = device(&server, DeviceConfig::modern("dropper")).await;
    let devices = open(&server, json!({"serial": serial})).await;
    let d = &devices[0];
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    let data: Vec<u8> = (0..1_048_576u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&big, &data).unwrap();

    // Warm the feature cache so the fault only hits the transfer.
    d.run(&Command::shell("true")).await.unwrap();
    sim.set_fault(Fault::DropAfterBytes(300_000));
    let err = d.push(&big, "/data/local/tmp/big.bin").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Disconnected, "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("connection lost: the device link was lost after handing "),
        "{text}"
    );
    assert!(
        text.contains(" of 1048576 bytes of ")
            && text.contains(" to the adb server, on their way to '/data/local/tmp/big.bin' ("),
        "{text}"
    );
    assert!(err.is_retryable());

    // Wait for the server to re-attach the device, put a file there, and break the pull.
    server
        .wait_for_state(&serial, "device", Duration::from_secs(60))
        .await
        .unwrap();
    std::fs::create_dir_all(sim.path("/sdcard")).unwrap();
    std::fs::write(sim.path("/sdcard/big.bin"), &data).unwrap();
    d.run(&Command::shell("true")).await.unwrap();
    sim.set_fault(Fault::DropAfterBytes(300_000));
    let out = dir.path().join("pulled").join("big.bin");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let err = d.pull("/sdcard/big.bin", &out).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Disconnected, "{err}");
    assert!(err.to_string().contains("lost after receiving"), "{err}");
    assert!(err.to_string().contains("'/sdcard/big.bin'"), "{err}");
    let left: Vec<_> = std::fs::read_dir(out.parent().unwrap()).unwrap().collect();
    assert!(left.is_empty(), "a broken pull left {left:?}");

    // After the reconnect the same pull succeeds.
    server
        .wait_for_state(&serial, "device", Duration::from_secs(60))
        .await
        .unwrap();
    let stats = d.pull("/sdcard/big.bin", &out).await.unwrap();
    assert_eq!(stats.bytes, 1_048_576);
    assert!(std::fs::read(&out).unwrap() == data);
}

/// A push dropped by a timeout must not complete on the device later: the sync connection is
/// reset, so the adb server relays at most what it had already read (its first read plus one
/// socket buffer, a few hundred KiB on loopback) and never the rest, DONE included; the slow
/// device is free again soon after. The file is many times that size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_dropped_by_a_timeout_never_completes_on_the_device() {
    const RATE: u64 = 256 * 1024;
    const SIZE: usize = 2 * 1024 * 1024; // 8 s at RATE
    let server = server().await;
    let (sim, serial) = device(&server, DeviceConfig::legacy("slowpoke")).await;
    let devices = open(&server, json!({"serial": serial})).await;
    let d = &devices[0];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slow.bin");
    std::fs::write(&file, vec![7u8; SIZE]).unwrap();
    d.run(&Command::shell("true")).await.unwrap(); // features cached

    sim.set_fault(Fault::SlowLink(RATE));
    let started = Instant::now();
    let pushed = tokio::time::timeout(
        Duration::from_secs(1),
        d.push(&file, "/data/local/tmp/slow.bin"),
    )
    .await;
    assert!(pushed.is_err(), "the push finished in time: {pushed:?}");
    // Longer than the whole file needs at RATE: a relayed push would be complete by now.
    let drain = Duration::from_secs(SIZE as u64 / RATE + 4);
    tokio::time::sleep(drain.saturating_sub(started.elapsed())).await;
    let remote = sim.path("/data/local/tmp/slow.bin");
    assert!(
        !remote.exists(),
        "the dropped push completed on the device: {} bytes",
        std::fs::metadata(&remote).map(|m| m.len()).unwrap_or(0)
    );
    let asked = Instant::now();
    let out = d
        .run(&Command::shell("ls /data/local/tmp; echo ok"))
        .await
        .unwrap();
    assert_eq!(
        (out.exit_code, out.stdout.as_slice()),
        (0, b"ok\n".as_slice())
    );
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "the device was still busy: {:?}",
        asked.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_devices_at_once_each_result_attributed_to_its_device() {
    let server = server().await;
    let mut own = BTreeMap::new();
    let mut sims = Vec::new();
    for i in 0..50 {
        let cfg = if i % 5 == 0 {
            DeviceConfig::legacy(format!("fleet-{i:02}"))
        } else {
            DeviceConfig::modern(format!("fleet-{i:02}"))
        };
        let (sim, serial) = device(&server, cfg).await;
        own.insert(serial, format!("fleet-{i:02}"));
        sims.push(sim);
    }
    let devices = discover(&server).await;
    assert_eq!(devices.len(), 50);
    let m = manager(devices);
    let started = Instant::now();
    let result = run(
        &m,
        "shell",
        json!({"cmd": "echo \"$(getprop ro.serialno) $(getprop ro.product.model)\"; exit 7"}),
        BatchOptions::default().concurrency(50).timeout(SLOW),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(result.len(), 50);
    for (serial, name) in &own {
        let o = result.get(serial).unwrap();
        // The shell op reports a non-zero exit as an error with the output kept.
        assert_eq!(o.result["exit_code"], 7, "{serial}: {o:?}");
        let model = if name.ends_with('0') || name.ends_with('5') {
            "SimLegacy"
        } else {
            "SimPhone"
        };
        assert_eq!(o.result["stdout"], format!("{name} {model}\n"), "{serial}");
    }
    eprintln!("50 devices: shell in {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_entries_attach_network_devices_and_report_failures() {
    let server = server().await;
    let sim = SimDevice::start(DeviceConfig::modern("net")).await.unwrap();
    // `localhost` is normalised so the server does not list the device twice.
    let mut spec = common::entry(
        &server,
        json!({"connect": format!("localhost:{}", sim.port())}),
    );
    spec.id = Some("net-1".into());
    use devbatch_core::Backend;
    let devices = devbatch_adb::AdbBackend.open(spec).await.unwrap();
    assert_eq!(devices[0].id(), "net-1");
    assert_eq!(
        devices[0].labels()["serial"],
        format!("127.0.0.1:{}", sim.port())
    );
    let out = devices[0]
        .run(&Command::shell("getprop ro.serialno"))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"net\n");
    assert_eq!(server.devices().await.unwrap().len(), 1);

    // A device that refuses connections: the pool still opens, the device is unreachable and
    // the error carries the server's own words.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let devices = open(&server, json!({"connect": format!("127.0.0.1:{port}")})).await;
    assert_eq!(devices[0].state().as_str(), "absent");
    let m = manager(devices);
    let result = run(
        &m,
        "shell",
        json!({"cmd": "true"}),
        BatchOptions::default().timeout(SLOW),
    )
    .await;
    let (kind, text) = outcome_error(&result, &format!("127.0.0.1:{port}"));
    assert_eq!(kind, ErrorKind::Unreachable);
    assert!(text.contains("failed to connect to"), "{text}");
    assert!(text.contains("Connection refused"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_limits_requests_in_flight_to_one_server() {
    let server = server().await;
    let mut sims = Vec::new();
    for i in 0..4 {
        sims.push(device(&server, DeviceConfig::modern(format!("lim{i}"))).await);
    }
    let devices = open(&server, json!({"discover": true, "max_requests": 2})).await;
    let m = manager(devices);
    let started = Instant::now();
    let result = run(
        &m,
        "shell",
        json!({"cmd": "sleep 1; echo done"}),
        BatchOptions::default().concurrency(4).timeout(SLOW),
    )
    .await;
    let elapsed = started.elapsed();
    assert!(result.failed_ids().is_empty(), "{:?}", result.failed_ids());
    // Four 1-second commands, two at a time: at least two rounds.
    assert!(
        elapsed >= Duration::from_secs(2),
        "ran in {elapsed:?}; the limit was not applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_stream_that_ends_without_exit_status_is_disconnected_never_success() {
    let server = server().await;
    let (modern_sim, modern) = device(&server, DeviceConfig::modern("cut-v2")).await;
    let (legacy_sim, legacy) = device(&server, DeviceConfig::legacy("cut-v1")).await;
    let devices = discover(&server).await;
    for (sim, serial) in [(&modern_sim, &modern), (&legacy_sim, &legacy)] {
        let d = devices.iter().find(|d| d.id() == serial.as_str()).unwrap();
        d.run(&Command::shell("true")).await.unwrap(); // features cached
        sim.set_fault(Fault::DropAfterBytes(20_000));
        let err = d
            .run(&Command::shell(
                "head -c 200000 /dev/zero | tr '\\000' q; exit 0",
            ))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Disconnected, "{serial}: {err}");
        assert!(err.is_retryable());
        assert_eq!(
            err.to_string(),
            format!(
                "connection lost: the shell stream of {serial} ended without an exit status (the device disconnected or the command was killed)"
            )
        );
        server
            .wait_for_state(serial, "device", Duration::from_secs(60))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_device_dropped_by_the_server_is_connected_again() {
    let server = server().await;
    let (_sim, serial) = device(&server, DeviceConfig::modern("comeback")).await;
    let devices = discover(&server).await;
    let reply = server.disconnect(&serial).await.unwrap();
    assert!(reply.starts_with("disconnected"), "{reply}");
    assert_eq!(server.state(&serial).await.unwrap(), None);
    let out = devices[0]
        .run(&Command::shell("getprop ro.serialno"))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"comeback\n");
    assert_eq!(
        server.state(&serial).await.unwrap().as_deref(),
        Some("device")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_of_two_adb_servers_in_one_pool() {
    let first = server().await;
    let second = server().await;
    let (_a, a) = device(&first, DeviceConfig::modern("on-first")).await;
    let (_b, b) = device(&second, DeviceConfig::legacy("on-second")).await;
    let mut devices = discover(&first).await;
    devices.extend(discover(&second).await);
    assert_eq!(devices.len(), 2);
    let servers: Vec<String> = devices
        .iter()
        .map(|d| d.labels()["adb_server"].clone())
        .collect();
    assert_eq!(
        servers,
        [
            format!("127.0.0.1:{}", first.port()),
            format!("127.0.0.1:{}", second.port())
        ]
    );
    let m = manager(devices);
    let result = run(
        &m,
        "shell",
        json!({"cmd": "getprop ro.serialno"}),
        BatchOptions::default().timeout(SLOW),
    )
    .await;
    assert_eq!(result.get(&a).unwrap().result["stdout"], "on-first\n");
    assert_eq!(result.get(&b).unwrap().result["stdout"], "on-second\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_behind_a_symlink_is_pulled_from_old_and_new_devices() {
    let server = server().await;
    let (_n, new) = device(&server, DeviceConfig::modern("link-new")).await;
    let (_o, old) = device(&server, DeviceConfig::legacy("link-old")).await;
    let devices = discover(&server).await;
    let dir = tempfile::tempdir().unwrap();
    for serial in [&new, &old] {
        let d = devices.iter().find(|d| d.id() == serial.as_str()).unwrap();
        let out = d
            .run(&Command::shell(
                "mkdir -p /data/local/tmp/real/sub && echo one > /data/local/tmp/real/a.txt && echo two > /data/local/tmp/real/sub/b.txt && cd /data/local/tmp && ln -s real link",
            ))
            .await
            .unwrap();
        assert_eq!(out.exit_code, 0, "{serial}: {out:?}");
        let dest = dir.path().join(serial.replace(':', "_"));
        let stats = d
            .pull("/data/local/tmp/link", &dest)
            .await
            .unwrap_or_else(|e| panic!("{serial}: {e}"));
        assert_eq!((stats.files, stats.bytes), (2, 8), "{serial}");
        assert_eq!(std::fs::read(dest.join("sub/b.txt")).unwrap(), b"two\n");
    }
}
