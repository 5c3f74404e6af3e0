//! Fleet scenarios through the batch engine against real OpenSSH servers: authentication
//! failures beside a good host, unreachable hosts, host-key policies, sshd's MaxStartups,
//! jump hosts, operations.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::{Sshd, SshdOptions, device, fingerprint, keygen};
use devbatch_core::{
    BatchOperationManager, BatchOptions, BatchResult, Device, DevicePool, ErrorKind, Operation,
    OperationContext, OperationFailure, ParamSpec, Params, Registry, RetryPolicy,
};
use serde_json::{Value, json};

fn registry() -> Registry {
    let mut r = Registry::new();
    devbatch_ops::register_all(&mut r).unwrap();
    r
}

fn manager(devices: Vec<Arc<dyn Device>>) -> BatchOperationManager {
    BatchOperationManager::with_registry(DevicePool::from_devices(devices).unwrap(), registry())
}

fn options() -> BatchOptions {
    BatchOptions::default()
        .retry(RetryPolicy::retries(0))
        .concurrency(64)
        .timeout(Duration::from_secs(60))
}

async fn shell(m: &BatchOperationManager, cmd: &str) -> BatchResult {
    m.execute_batch_with("shell", json!({"cmd": cmd}), None, &options())
        .await
        .unwrap()
}

fn error_of<'a>(r: &'a BatchResult, id: &str) -> (&'a str, ErrorKind) {
    let o = r.get(id).unwrap_or_else(|| panic!("no outcome for {id}"));
    assert!(!o.is_success(), "{id} succeeded: {o:?}");
    (o.error.as_deref().unwrap(), o.error_kind.unwrap())
}

fn addrs(prefix: &str, range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_and_wrong_password_beside_a_good_host() {
    let sshd = Sshd::start(SshdOptions {
        addrs: addrs("127.0.0.", 2..=4),
        ..Default::default()
    });
    let good = device("good", sshd.settings("127.0.0.2")).await;
    let other_key = keygen(sshd.dir.path(), "not_authorized", "ed25519");
    let mut s = sshd.settings("127.0.0.3");
    s.insert("identity_files".into(), json!([other_key]));
    let wrong_key = device("wrong-key", s).await;
    let mut s = sshd.settings("127.0.0.4");
    s.insert(
        "identity_files".into(),
        json!([sshd.dir.path().join("no-such-key")]),
    );
    s.insert("password".into(), json!("Not-The-Password-93"));
    let wrong_password = device("wrong-password", s).await;
    let m = manager(vec![good, wrong_key, wrong_password]);
    let r = shell(&m, "echo hi").await;
    assert_eq!(r.len(), 3);
    let ok = r.get("good").unwrap();
    assert!(ok.is_success(), "{ok:?}");
    assert_eq!(ok.result["stdout"], "hi\n");
    let port = sshd.port;
    let (msg, kind) = error_of(&r, "wrong-key");
    assert_eq!(kind, ErrorKind::Auth);
    assert_eq!(
        msg,
        format!(
            "authentication failed: {}@127.0.0.3:{port} refused every method tried: publickey {}",
            sshd.user,
            other_key.display()
        )
    );
    let (msg, kind) = error_of(&r, "wrong-password");
    assert_eq!(kind, ErrorKind::Auth);
    assert_eq!(
        msg,
        format!(
            "authentication failed: {}@127.0.0.4:{port} refused every method tried: publickey {} (no such file); password",
            sshd.user,
            sshd.dir.path().join("no-such-key").display()
        )
    );
    assert!(!msg.contains("Not-The-Password"));
    // Auth failures are not retryable: a retry policy does not repeat them.
    assert_eq!(r.get("wrong-key").unwrap().attempts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_and_silent_port_are_unreachable() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // A port that accepts TCP and never sends a banner.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            held.push(sock);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let settings = |port: u16| {
        let mut m = serde_json::Map::new();
        m.insert("host".into(), json!("127.0.0.1"));
        m.insert("port".into(), json!(port));
        m.insert("ssh_config".into(), json!("none"));
        m.insert("user_known_hosts".into(), json!(dir.path().join("kh")));
        m.insert("connect_timeout".into(), json!("1s"));
        m
    };
    let m = manager(vec![
        device("closed", settings(closed)).await,
        device("silent", settings(silent_port)).await,
    ]);
    let started = Instant::now();
    let r = shell(&m, "true").await;
    let (msg, kind) = error_of(&r, "closed");
    assert_eq!(kind, ErrorKind::Unreachable);
    assert_eq!(
        msg,
        format!("unreachable: connection refused by 127.0.0.1:{closed}")
    );
    let (msg, kind) = error_of(&r, "silent");
    assert_eq!(kind, ErrorKind::Unreachable);
    assert_eq!(
        msg,
        format!(
            "unreachable: 127.0.0.1:{silent_port} did not complete the SSH banner exchange within 1s (connect timeout)"
        )
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    holder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_host_key_runs_nothing_and_leaves_known_hosts_alone() {
    let sshd = Sshd::start(SshdOptions {
        addrs: addrs("127.0.0.", 5..=6),
        ..Default::default()
    });
    let impostor = keygen(sshd.dir.path(), "impostor", "ed25519");
    let kh = sshd.dir.path().join("changed_known_hosts");
    // A comment, another host, then the recorded (different) key for 127.0.0.5.
    let text = format!(
        "# fleet\n{}[127.0.0.5]:{} {}\n",
        sshd.known_hosts_line("127.0.0.6"),
        sshd.port,
        common::public_key(&impostor)
    );
    std::fs::write(&kh, &text).unwrap();
    let marker = sshd.dir.path().join("ran");
    let mut devices = Vec::new();
    for (id, policy) in [
        ("strict", "strict"),
        ("accept-new", "accept-new"),
        ("off", "off"),
    ] {
        let mut s = sshd.settings("127.0.0.5");
        s.insert("user_known_hosts".into(), json!(kh));
        s.insert("host_key_policy".into(), json!(policy));
        devices.push(device(id, s).await);
    }
    let m = manager(devices);
    let r = shell(&m, &format!("touch {}", marker.display())).await;
    for id in ["strict", "accept-new", "off"] {
        let (msg, kind) = error_of(&r, id);
        assert_eq!(kind, ErrorKind::HostKey, "{id}");
        assert_eq!(
            msg,
            format!(
                "host key verification failed: 127.0.0.5:{} presented a host key that differs from the one recorded in {}:3 (possible man-in-the-middle attack); presented key {}; nothing was run",
                sshd.port,
                kh.display(),
                fingerprint(&sshd.host_key)
            ),
            "{id}"
        );
    }
    assert!(
        !marker.exists(),
        "a command ran on a host with a changed key"
    );
    assert_eq!(
        std::fs::read_to_string(&kh).unwrap(),
        text,
        "known_hosts was modified"
    );
    assert_eq!(
        sshd.accepted(),
        0,
        "we authenticated to a host with a changed key"
    );

    // An unknown host under the default strict policy: refused, with the key to check.
    let mut s = sshd.settings("127.0.0.5");
    s.insert(
        "user_known_hosts".into(),
        json!(sshd.dir.path().join("empty")),
    );
    let d = device("unknown", s).await;
    let err = d
        .run(&devbatch_core::Command::shell("true"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HostKey);
    assert!(
        err.to_string().contains("is not in known_hosts")
            && err.to_string().contains(&fingerprint(&sshd.host_key)),
        "{err}"
    );
    assert!(
        !sshd.dir.path().join("empty").exists(),
        "strict must not write known_hosts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_new_records_twenty_unknown_hosts_once_each() {
    let hosts = addrs("127.0.0.", 10..=29);
    let sshd = Sshd::start(SshdOptions {
        addrs: hosts.clone(),
        ..Default::default()
    });
    let kh = sshd.dir.path().join("fresh/known_hosts");
    let mut devices = Vec::new();
    for h in &hosts {
        let mut s = sshd.settings(h);
        s.insert("user_known_hosts".into(), json!(kh));
        s.insert("host_key_policy".into(), json!("accept-new"));
        devices.push(device(h, s).await);
    }
    let m = manager(devices);
    let r = shell(&m, "echo ok").await;
    assert!(r.failed_ids().is_empty(), "{:?}", r.failed_ids());
    let text = std::fs::read_to_string(&kh).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    let mut expected: Vec<String> = hosts
        .iter()
        .map(|h| sshd.known_hosts_line(h).trim_end().to_string())
        .collect();
    expected.sort();
    assert_eq!(lines, expected);
    // The recorded keys now pass the strict policy.
    let mut s = sshd.settings("127.0.0.17");
    s.insert("user_known_hosts".into(), json!(kh));
    let d = device("strict", s).await;
    assert_eq!(
        devbatch_core::DeviceExt::shell_text(d.as_ref(), "echo strict-ok")
            .await
            .unwrap(),
        "strict-ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_four_targets_against_a_low_max_startups() {
    let hosts = addrs("127.0.1.", 1..=24);
    let sshd = Sshd::start(SshdOptions {
        addrs: hosts.clone(),
        extra_config: "MaxStartups 2:100:2\n".into(),
        ..Default::default()
    });
    let mut devices = Vec::new();
    for h in &hosts {
        devices.push(device(h, sshd.settings(h)).await);
    }
    let m = manager(devices);
    let r = shell(&m, "echo up").await;
    assert!(
        r.failed_ids().is_empty(),
        "{:?}",
        r.iter()
            .filter(|(_, o)| !o.is_success())
            .map(|(id, o)| (id, o.error.clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!(r.len(), 24);
    assert!(
        sshd.log().contains("past MaxStartups"),
        "the server never dropped a connection, so the test proved nothing:\n{}",
        sshd.log()
    );
    assert_eq!(sshd.accepted(), 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jump_host_forwards_to_the_target() {
    let target = Sshd::start(SshdOptions {
        addrs: vec!["127.0.0.41".into()],
        ..Default::default()
    });
    let jump = Sshd::start(SshdOptions {
        addrs: vec!["127.0.0.40".into()],
        extra_config: "LogLevel DEBUG1\n".into(),
        ..Default::default()
    });
    // One client key for both; one known_hosts for both.
    std::fs::write(
        jump.dir.path().join("authorized_keys"),
        format!("{}\n", common::public_key(&target.client_key)),
    )
    .unwrap();
    let kh = target.dir.path().join("both_known_hosts");
    std::fs::write(
        &kh,
        format!(
            "{}{}",
            target.known_hosts_line("127.0.0.41"),
            jump.known_hosts_line("127.0.0.40")
        ),
    )
    .unwrap();

    let mut s = target.settings("127.0.0.41");
    s.insert("user_known_hosts".into(), json!(kh));
    s.insert(
        "jump".into(),
        json!(format!("{}@127.0.0.40:{}", jump.user, jump.port)),
    );
    let d = device("via-jump", s).await;
    let out = devbatch_core::DeviceExt::shell_text(d.as_ref(), "echo through")
        .await
        .unwrap();
    assert_eq!(out, "through");
    let needle = format!("target 127.0.0.41 port {}", target.port);
    assert!(
        jump.log().contains(&needle),
        "the jump host forwarded nothing:\n{}",
        jump.log()
    );

    // The same through an ssh_config alias with ProxyJump, device id from the alias.
    let cfg = target.dir.path().join("ssh_config");
    std::fs::write(
        &cfg,
        format!(
            "Host board\n  HostName 127.0.0.41\n  Port {}\n  User {}\n  IdentityFile {}\n  ProxyJump bastion\nHost bastion\n  HostName 127.0.0.40\n  Port {}\n",
            target.port,
            target.user,
            target.client_key.display(),
            jump.port
        ),
    )
    .unwrap();
    let mut settings = serde_json::Map::new();
    settings.insert("host".into(), json!("board"));
    settings.insert("ssh_config".into(), json!(cfg));
    settings.insert("user_known_hosts".into(), json!(kh));
    settings.insert("use_agent".into(), json!(false));
    let spec = devbatch_core::DeviceSpec {
        id: None,
        labels: Default::default(),
        settings,
        base_dir: None,
    };
    let mut opened = devbatch_core::Backend::open(&devbatch_ssh::SshBackend, spec)
        .await
        .unwrap();
    let d = opened.pop().unwrap();
    assert_eq!(d.id(), "board");
    let m = manager(vec![d]);
    let r = shell(&m, "echo alias").await;
    assert_eq!(
        r.get("board").unwrap().result["stdout"],
        "alias\n",
        "{:?}",
        r.get("board")
    );
    assert_eq!(jump.log().matches(&needle).count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_reused_across_batches() {
    let hosts = addrs("127.0.0.", 50..=52);
    let sshd = Sshd::start(SshdOptions {
        addrs: hosts.clone(),
        ..Default::default()
    });
    let mut devices = Vec::new();
    for h in &hosts {
        devices.push(device(h, sshd.settings(h)).await);
    }
    let m = manager(devices);
    for _ in 0..3 {
        assert!(shell(&m, "true").await.failed_ids().is_empty());
    }
    assert_eq!(
        sshd.accepted(),
        3,
        "one connection per target across three batches"
    );
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_push_leaves_no_temporary_file_after_shutdown() {
    let sshd = Sshd::start(SshdOptions {
        addrs: vec!["127.0.0.7".into()],
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    // Sparse: cheap to read here, far too much to send in a second.
    let big = dir.path().join("big.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(8 * 1024 * 1024 * 1024)
        .unwrap();
    let remote_dir = dir.path().join("remote");
    std::fs::create_dir(&remote_dir).unwrap();
    let dest = remote_dir.join("big.bin");
    let m = manager(vec![device("box", sshd.settings("127.0.0.7")).await]);
    // The CLI's path: the engine's timeout drops the push, then the process shuts down.
    let r = m
        .execute_batch_with(
            "push",
            json!({"local": big, "remote": dest}),
            None,
            &options().timeout(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    let (msg, kind) = error_of(&r, "box");
    assert_eq!(kind, ErrorKind::Timeout);
    assert_eq!(msg, "timed out after 1s");
    m.shutdown().await;
    let left: Vec<_> = std::fs::read_dir(&remote_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        left.is_empty(),
        "a timed-out push left files on the host after shutdown: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_and_run_test_work_and_install_app_is_unsupported() {
    let sshd = Sshd::start(SshdOptions::default());
    let d = device("box", sshd.settings("127.0.0.1")).await;

    /// Stands in for the adb backend's own `install_app`.
    struct AdbInstall;
    #[async_trait]
    impl Operation for AdbInstall {
        fn name(&self) -> &str {
            "install_app"
        }
        fn description(&self) -> &str {
            "install an apk"
        }
        fn backend(&self) -> Option<&str> {
            Some("adb")
        }
        fn params(&self) -> Vec<ParamSpec> {
            vec![ParamSpec::required(
                "app_path",
                devbatch_core::ParamType::String,
                "apk",
            )]
        }
        fn idempotent(&self) -> bool {
            true
        }
        fn default_timeout(&self) -> Duration {
            Duration::from_secs(5)
        }
        async fn execute(
            &self,
            _: &dyn Device,
            _: &Params,
            _: &OperationContext,
        ) -> Result<Value, OperationFailure> {
            unreachable!("never called for ssh devices")
        }
    }
    let mut reg = registry();
    reg.add_operation(Arc::new(AdbInstall), "test").unwrap();
    let m = BatchOperationManager::with_registry(DevicePool::from_devices(vec![d]).unwrap(), reg);

    let r = m
        .execute_batch_with("info", json!({}), None, &options())
        .await
        .unwrap();
    let info = &r.get("box").unwrap().result;
    let uname = |flag: &str| {
        let out = std::process::Command::new("uname")
            .arg(flag)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(info["hostname"], uname("-n"), "{info}");
    assert_eq!(info["kernel"], uname("-r"));
    assert_eq!(info["arch"], uname("-m"));
    assert_eq!(
        info["cpus"],
        std::thread::available_parallelism().unwrap().get() as u64
    );
    assert!(info["mem_total_kb"].as_u64().unwrap() > 0);
    assert!(info["uptime_s"].as_u64().is_some());

    let r = m
        .execute_batch_with(
            "run_test",
            json!({"cmd": "echo checking; exit 0", "test_name": "smoke"}),
            None,
            &options(),
        )
        .await
        .unwrap();
    let o = r.get("box").unwrap();
    assert!(o.is_success(), "{o:?}");
    assert_eq!(o.result["passed"], true);
    assert_eq!(o.result["stdout"], "checking\n");
    let r = m
        .execute_batch_with(
            "run_test",
            json!({"cmd": "echo broken >&2; exit 4", "test_name": "smoke"}),
            None,
            &options(),
        )
        .await
        .unwrap();
    let (msg, kind) = error_of(&r, "box");
    assert_eq!(kind, ErrorKind::Failed);
    assert!(
        msg.contains("test smoke failed with exit status 4"),
        "{msg}"
    );
    assert_eq!(r.get("box").unwrap().result["stderr"], "broken\n");

    let r = m
        .execute_batch_with(
            "install_app",
            json!({"app_path": "x.apk"}),
            None,
            &options(),
        )
        .await
        .unwrap();
    let (msg, kind) = error_of(&r, "box");
    assert_eq!(kind, ErrorKind::Unsupported);
    assert_eq!(
        msg,
        "unsupported: operation 'install_app' is not available for ssh devices (it is provided for: adb)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_keeps_dropping_handshakes_is_given_up_on() {
    let sshd = Sshd::start(SshdOptions {
        addrs: vec!["127.0.0.70".into()],
        extra_config: "MaxStartups 1:100:1\n".into(),
        ..Default::default()
    });
    // One unauthenticated connection that never answers fills the only startup slot. It may
    // itself be dropped while the harness's readiness probe still counts: retry until sshd
    // greets it.
    let hog_deadline = Instant::now() + Duration::from_secs(20);
    let _hog = loop {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(("127.0.0.70", sshd.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut banner = [0u8; 4];
        if s.read_exact(&mut banner).is_ok() && &banner == b"SSH-" {
            break s;
        }
        assert!(
            Instant::now() < hog_deadline,
            "sshd never accepted the hog connection"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut s = sshd.settings("127.0.0.70");
    s.insert("handshake_attempts".into(), json!(4));
    let d = device("busy", s).await;
    let started = Instant::now();
    let err = d
        .run(&devbatch_core::Command::shell("true"))
        .await
        .err()
        .unwrap_or_else(|| panic!("connected to a full server:\n{}", sshd.log()));
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert!(err.is_retryable() && err.never_started());
    let msg = err.to_string();
    let prefix = format!(
        "unreachable: 127.0.0.70:{} closed the connection during the SSH banner exchange 4 time(s) (server overloaded, see sshd MaxStartups): ",
        sshd.port
    );
    assert!(
        msg.starts_with(&prefix) && msg.ends_with(" after saying \"Exceeded MaxStartups\""),
        "{msg}"
    );
    // It backed off between attempts: at least 50 + 100 + 200 ms between the four tries.
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
    assert!(
        sshd.log().matches("past MaxStartups").count() >= 4,
        "{}",
        sshd.log()
    );
}
