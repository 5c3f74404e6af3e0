//! The SSH device against a real OpenSSH server: the conformance suite, exec semantics,
//! remote clean-up on timeout, reuse and reconnection, transfers.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{Sshd, SshdOptions, device, gone_within};
use devbatch_core::conformance::{Suite, run_all};
use devbatch_core::{Command, DeviceExt, ErrorKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_device_conforms() {
    let sshd = Sshd::start(SshdOptions::default());
    let d = device("box", sshd.settings("127.0.0.1")).await;
    let scratch = tempfile::tempdir().unwrap();
    let mut suite = Suite::new(scratch.path().to_str().unwrap());
    suite.timeout_probe = Duration::from_secs(1);
    run_all(d.as_ref(), &suite).await;
    // Everything above went over one connection.
    assert_eq!(sshd.accepted(), 1, "{}", sshd.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_signals_and_separate_streams() {
    let sshd = Sshd::start(SshdOptions::default());
    let d = device("box", sshd.settings("127.0.0.1")).await;
    for code in [0, 1, 7] {
        let out = d
            .shell(&format!("echo out; echo err >&2; exit {code}"))
            .await
            .unwrap();
        assert_eq!(out.exit_code, code);
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }
    // The exit status often comes after EOF: close the streams first, then exit later.
    let out = d
        .shell("exec >/dev/null 2>&1 </dev/null; sleep 0.3; exit 3")
        .await
        .unwrap();
    assert_eq!(out.exit_code, 3);
    let err = d.shell("echo partial; kill -TERM $$").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Failed, "{err}");
    assert_eq!(err.to_string(), "the command was killed by signal SIGTERM");
    let err = d.shell("kill -KILL $$").await.unwrap_err();
    assert_eq!(err.to_string(), "the command was killed by signal SIGKILL");
    // Argv arguments stay literal, stdin arrives whole.
    let out = d
        .run(
            &Command::argv(["sh", "-c", "wc -c; printf '%s' \"$0\"", "x; id"])
                .with_stdin(vec![7u8; 3 * 1024 * 1024]),
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "3145728\nx; id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_binary_output_arrives_whole() {
    let sshd = Sshd::start(SshdOptions::default());
    let d = device("box", sshd.settings("127.0.0.1")).await;
    let dir = tempfile::tempdir().unwrap();
    let mut x: u32 = 12345;
    let data: Vec<u8> = (0..6 * 1024 * 1024 + 3)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let path = dir.path().join("blob");
    std::fs::write(&path, &data).unwrap();
    let line = format!("cat {p}; cat {p} >&2", p = path.display());
    let out = d
        .run(&Command::shell(line).with_max_output(16 * 1024 * 1024))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    assert!(
        out.stdout == data,
        "stdout differs ({} bytes)",
        out.stdout.len()
    );
    assert!(
        out.stderr == data,
        "stderr differs ({} bytes)",
        out.stderr.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_command_leaves_no_remote_process() {
    let sshd = Sshd::start(SshdOptions::default());
    let d = device("box", sshd.settings("127.0.0.1")).await;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let childfile = dir.path().join("child");
    // A background child in the same group, and the command itself as `sleep 300`.
    let line = format!(
        "sleep 301 & echo $! > {c}; echo $$ > {p}; exec sleep 300",
        c = childfile.display(),
        p = pidfile.display()
    );
    let r = tokio::time::timeout(Duration::from_millis(1500), d.shell(&line)).await;
    assert!(r.is_err(), "sleep 300 finished: {r:?}");
    let read = |p: &std::path::Path| -> u32 {
        std::fs::read_to_string(p).unwrap().trim().parse().unwrap()
    };
    let (pid, child) = (read(&pidfile), read(&childfile));
    assert!(
        gone_within(pid, Duration::from_secs(30)).await,
        "the remote `sleep 300` (pid {pid}) survived the timeout"
    );
    assert!(
        gone_within(child, Duration::from_secs(30)).await,
        "its background child (pid {child}) survived the timeout"
    );
    // The output cap stops the command too.
    let line = format!("echo $$ > {p}; yes", p = pidfile.display());
    let err = d
        .run(&Command::shell(line).with_max_output(100_000))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutputLimit);
    let pid = read(&pidfile);
    assert!(
        gone_within(pid, Duration::from_secs(30)).await,
        "`yes` (pid {pid}) kept running past the output cap"
    );
    assert_eq!(d.shell_text("echo ok").await.unwrap(), "ok");
    d.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_connection_is_an_error_then_reconnects() {
    let sshd = Sshd::start(SshdOptions::default());
    let d = device("box", sshd.settings("127.0.0.1")).await;
    assert_eq!(d.shell_text("echo one").await.unwrap(), "one");
    // Kill the sshd process serving this connection: the channel ends with no exit status.
    let err = d.shell("kill -KILL $PPID; sleep 5").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Disconnected, "{err}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("127.0.0.1:"), "{err}");
    // The next operation connects again.
    assert_eq!(d.shell_text("echo two").await.unwrap(), "two");
    assert_eq!(sshd.accepted(), 2, "{}", sshd.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_refused_by_max_sessions_are_retried() {
    let sshd = Sshd::start(SshdOptions {
        extra_config: "MaxSessions 2\n".into(),
        ..Default::default()
    });
    let mut settings = sshd.settings("127.0.0.1");
    settings.insert("max_channels".into(), serde_json::json!(8));
    let d = device("box", settings).await;
    let runs = (0..16).map(|i| {
        let d = d.clone();
        async move { d.shell_text(&format!("sleep 0.2; echo {i}")).await }
    });
    let results = futures_util::future::join_all(runs).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), i.to_string());
    }
    assert_eq!(sshd.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_file_names_and_modes_survive_a_round_trip() {
    let sshd = Sshd::start(SshdOptions::default());
    let d = device("box", sshd.settings("127.0.0.1")).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src tree");
    let names = [
        "with space.txt",
        "it's \"quoted\".txt",
        "naïve ünïcødé ✓.txt",
        "$(id) `x`;.txt",
    ];
    std::fs::create_dir_all(src.join("sub dir ä")).unwrap();
    for n in names {
        std::fs::write(src.join(n), n.as_bytes()).unwrap();
    }
    let script = src.join("sub dir ä/run me.sh");
    std::fs::write(&script, b"#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::set_permissions(src.join(names[0]), std::fs::Permissions::from_mode(0o600)).unwrap();

    let remote = dir.path().join("remote ' side");
    let remote = remote.to_str().unwrap();
    let pushed = d.push(&src, remote).await.unwrap();
    assert_eq!(pushed.files, 5);
    // The pushed script runs remotely with its mode.
    let out = d
        .run(&Command::argv([format!("{remote}/sub dir ä/run me.sh")]))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"ran\n");
    let back = dir.path().join("back ✓");
    let pulled = d.pull(remote, &back).await.unwrap();
    assert_eq!(pulled.files, 5);
    for n in names {
        assert_eq!(std::fs::read(back.join(n)).unwrap(), n.as_bytes(), "{n}");
    }
    let mode = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(back.join("sub dir ä/run me.sh")), 0o750);
    assert_eq!(mode(back.join(names[0])), 0o600);
    // Pushing a file over an existing one replaces it, leaving no temporary files behind.
    std::fs::write(dir.path().join("new"), b"v2").unwrap();
    d.push(&dir.path().join("new"), &format!("{remote}/{}", names[1]))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(format!("{remote}/{}", names[1])).unwrap(),
        b"v2"
    );
    let leftovers: Vec<_> = std::fs::read_dir(remote)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".devbatch-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_pull_leaves_no_partial_file() {
    let sshd = Sshd::start(SshdOptions::default());
    let d = device("box", sshd.settings("127.0.0.1")).await;
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(400 * 1024 * 1024)
        .unwrap();
    let local_dir = dir.path().join("local");
    std::fs::create_dir(&local_dir).unwrap();
    let dest = local_dir.join("big.bin");
    // Warm the connection, then cut the pull short.
    d.shell_text("true").await.unwrap();
    let r = tokio::time::timeout(
        Duration::from_millis(300),
        d.pull(big.to_str().unwrap(), &dest),
    )
    .await;
    assert!(r.is_err(), "a 400 MiB pull finished in 300 ms");
    assert!(
        !dest.exists(),
        "a partial file was left under the final name"
    );
    let left: Vec<_> = std::fs::read_dir(&local_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "temporary files were left: {left:?}");
    // A missing remote file is an io error naming it, and leaves nothing.
    let err = d.pull("/nonexistent dir/x", &dest).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(
        err.to_string().contains("/nonexistent dir/x") && err.to_string().contains("no such file"),
        "{err}"
    );
}

/// The `.NAME.devbatch-*.part` files in `dir`.
fn part_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".devbatch-") && n.ends_with(".part"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_push_leaves_no_temporary_file_after_close() {
    let sshd = Sshd::start(SshdOptions::default());
    let d = device("box", sshd.settings("127.0.0.1")).await;
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(2 * 1024 * 1024 * 1024)
        .unwrap();
    let remote_dir = dir.path().join("remote");
    std::fs::create_dir(&remote_dir).unwrap();
    let dest = remote_dir.join("big.bin");
    d.shell_text("true").await.unwrap();
    // Drop the push (as a timeout or Ctrl-C does) once its temporary file holds data, then
    // close the device at once, as the CLI does on its way out.
    let push = d.push(&big, dest.to_str().unwrap());
    let started = async {
        loop {
            let partial = std::fs::read_dir(&remote_dir).unwrap().flatten().any(|e| {
                e.file_name().to_string_lossy().ends_with(".part")
                    && e.metadata().is_ok_and(|m| m.len() > 1024 * 1024)
            });
            if partial {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::select! {
        r = push => panic!("a 2 GiB push finished before it could be cancelled: {r:?}"),
        () = started => {}
        () = tokio::time::sleep(Duration::from_secs(30)) => panic!("the push wrote nothing in 30 s"),
    }
    d.close().await;
    assert_eq!(
        part_files(&remote_dir),
        Vec::<String>::new(),
        "a cancelled push left its temporary file after close"
    );
    assert!(
        !dest.exists(),
        "a partial file was left under the final name"
    );
    // The device reconnects, and a push that completes leaves only its file.
    std::fs::write(dir.path().join("small"), b"small").unwrap();
    let stats = d
        .push(&dir.path().join("small"), dest.to_str().unwrap())
        .await
        .unwrap();
    assert_eq!((stats.files, stats.bytes), (1, 5));
    assert_eq!(std::fs::read(&dest).unwrap(), b"small");
    assert_eq!(part_files(&remote_dir), Vec::<String>::new());
    d.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_into_another_mode_is_unsupported_and_runs_nothing() {
    let sshd = Sshd::start(SshdOptions::default());
    let d = device("box", sshd.settings("127.0.0.1")).await;
    let err = d
        .reboot(devbatch_core::RebootMode::Bootloader, false)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert_eq!(
        err.to_string(),
        "unsupported: SSH hosts reboot into the normal system only, not Bootloader"
    );
    assert_eq!(sshd.accepted(), 0, "nothing should have connected");
}

/// A server without the sftp subsystem refuses it, and a transfer says so at once instead of
/// waiting out the SFTP handshake; commands still work on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_sftp_fails_transfers_at_once() {
    let sshd = Sshd::start(SshdOptions {
        sftp: false,
        ..Default::default()
    });
    let d = device("no-sftp", sshd.settings("127.0.0.1")).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.txt");
    std::fs::write(&file, b"x").unwrap();
    let started = std::time::Instant::now();
    let err = d
        .push(&file, &format!("{}/f.txt", sshd.dir.path().display()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Failed, "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "127.0.0.1:{} refused the sftp subsystem; is the server's Subsystem sftp configured?",
            sshd.port
        )
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "waited {:?} for the refusal",
        started.elapsed()
    );
    assert_eq!(d.shell_text("echo still").await.unwrap(), "still");
}
