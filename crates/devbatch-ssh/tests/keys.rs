//! Key types, encrypted keys, hashed known_hosts and the `off` policy against a real sshd.

mod common;

use std::process::Command as Process;

use common::{Sshd, SshdOptions, device, fingerprint, keygen, public_key};
use devbatch_core::{Command, DeviceExt, ErrorKind};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_ecdsa_and_encrypted_keys_authenticate() {
    let sshd = Sshd::start(SshdOptions::default());
    let dir = sshd.dir.path();
    let rsa = keygen(dir, "id_rsa", "rsa");
    let ecdsa = keygen(dir, "id_ecdsa", "ecdsa");
    // An encrypted key whose passphrase is the value of an environment variable every test
    // process has (HOME), so that the test needs no process-wide set_var.
    let passphrase = std::env::var("HOME").unwrap();
    let encrypted = dir.join("id_encrypted");
    let status = Process::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", &passphrase, "-f"])
        .arg(&encrypted)
        .status()
        .unwrap();
    assert!(status.success());
    let keys: String = [&rsa, &ecdsa, &encrypted]
        .iter()
        .map(|k| format!("{}\n", public_key(k)))
        .collect();
    std::fs::write(dir.join("authorized_keys"), keys).unwrap();

    for (id, key) in [("rsa", &rsa), ("ecdsa", &ecdsa)] {
        let mut s = sshd.settings("127.0.0.1");
        s.insert("identity_files".into(), json!([key]));
        let d = device(id, s).await;
        assert_eq!(d.shell_text("echo in").await.unwrap(), "in", "{id}");
    }
    let mut s = sshd.settings("127.0.0.1");
    s.insert("identity_files".into(), json!([encrypted]));
    s.insert("passphrase_env".into(), json!("HOME"));
    let unlocked = device("encrypted", s).await;
    assert_eq!(unlocked.shell_text("echo in").await.unwrap(), "in");

    // The same host, user and key without the passphrase does not ride on the connection the
    // entry with the passphrase opened: it fails on its own, whatever ran before.
    let mut s = sshd.settings("127.0.0.1");
    s.insert("identity_files".into(), json!([encrypted]));
    let locked = device("same-key-no-passphrase", s).await;
    let err = locked.shell_text("true").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert_eq!(unlocked.shell_text("echo still").await.unwrap(), "still");

    // Without the passphrase the key is skipped, and the error says why.
    let mut s = sshd.settings("127.0.0.1");
    s.insert("identity_files".into(), json!([encrypted]));
    s.insert("port".into(), json!(sshd.port));
    s.insert("host".into(), json!("localhost"));
    s.insert("host_key_policy".into(), json!("accept-new"));
    let d = device("no-passphrase", s).await;
    let err = d.shell_text("true").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth);
    assert!(
        err.to_string().ends_with(&format!(
            "refused every method tried: publickey {} (encrypted; set passphrase_env or load it into the agent)",
            encrypted.display()
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_known_hosts_pass() {
    let sshd = Sshd::start(SshdOptions {
        addrs: vec!["127.0.0.60".into()],
        ..Default::default()
    });
    let kh = sshd.trusted_known_hosts();
    let status = Process::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&kh)
        .output()
        .unwrap();
    assert!(status.status.success());
    let text = std::fs::read_to_string(&kh).unwrap();
    assert!(
        text.starts_with("|1|") && !text.contains("127.0.0.60"),
        "{text}"
    );
    let mut s = sshd.settings("127.0.0.60");
    s.insert("user_known_hosts".into(), json!(kh));
    let d = device("hashed", s).await;
    assert_eq!(d.shell_text("echo hashed").await.unwrap(), "hashed");
}

/// `off` skips the check for hosts with no recorded key only: a recorded key that differs, or
/// a revoked one, is refused as under `strict`, before anything runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_accepts_an_unknown_host_but_refuses_a_changed_or_revoked_key() {
    let sshd = Sshd::start(SshdOptions {
        addrs: vec!["127.0.0.61".into(), "127.0.0.62".into()],
        ..Default::default()
    });
    let marker = sshd.dir.path().join("ran");
    let touch = Command::shell(format!("touch {}", marker.display()));
    let off = |host: &str, kh: &std::path::Path| {
        let mut s = sshd.settings(host);
        s.insert("user_known_hosts".into(), json!(kh));
        s.insert("host_key_policy".into(), json!("off"));
        s
    };

    // A changed key: refused, nothing runs, known_hosts untouched.
    let wrong = sshd.dir.path().join("wrong_known_hosts");
    let impostor = keygen(sshd.dir.path(), "impostor", "ed25519");
    let line = format!("[127.0.0.61]:{} {}\n", sshd.port, public_key(&impostor));
    std::fs::write(&wrong, &line).unwrap();
    let d = device("changed", off("127.0.0.61", &wrong)).await;
    let err = d.run(&touch).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HostKey);
    assert_eq!(
        err.to_string(),
        format!(
            "host key verification failed: 127.0.0.61:{} presented a host key that differs from the one recorded in {}:1 (possible man-in-the-middle attack); presented key {}; nothing was run",
            sshd.port,
            wrong.display(),
            fingerprint(&sshd.host_key)
        )
    );
    assert!(
        !marker.exists(),
        "a command ran on a host with a changed key"
    );
    assert_eq!(std::fs::read_to_string(&wrong).unwrap(), line);

    // A revoked key: refused the same way.
    let revoked = sshd.dir.path().join("revoked_known_hosts");
    let text = format!(
        "@revoked [127.0.0.62]:{} {}\n",
        sshd.port,
        public_key(&sshd.host_key)
    );
    std::fs::write(&revoked, &text).unwrap();
    let d = device("revoked", off("127.0.0.62", &revoked)).await;
    let err = d.run(&touch).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HostKey);
    assert_eq!(
        err.to_string(),
        format!(
            "host key verification failed: 127.0.0.62:{} presented key {}, which {}:1 marks @revoked; nothing was run",
            sshd.port,
            fingerprint(&sshd.host_key),
            revoked.display()
        )
    );
    assert!(
        !marker.exists(),
        "a command ran on a host with a revoked key"
    );
    assert_eq!(std::fs::read_to_string(&revoked).unwrap(), text);
    assert_eq!(
        sshd.accepted(),
        0,
        "we authenticated to a host with a changed or revoked key"
    );

    // An unknown host: accepted (with a warning), and not recorded.
    let empty = sshd.dir.path().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let d = device("unknown", off("127.0.0.61", &empty)).await;
    assert_eq!(d.shell_text("echo unchecked").await.unwrap(), "unchecked");
    d.run(&touch).await.unwrap();
    assert!(marker.exists());
    assert_eq!(
        std::fs::read_to_string(&empty).unwrap(),
        "",
        "off recorded a key"
    );
    // A known_hosts file that does not exist is not created either.
    let missing = sshd.dir.path().join("missing_known_hosts");
    let d = device("missing", off("127.0.0.62", &missing)).await;
    assert_eq!(d.shell_text("echo unchecked").await.unwrap(), "unchecked");
    assert!(!missing.exists(), "off created known_hosts");
}
