//! Key types, encrypted keys, hashed known_hosts and the `off` policy against a real sshd.

mod common;

use std::process::Command as Process;

use common::{Sshd, SshdOptions, device, keygen, public_key};
use devbatch_core::{DeviceExt, ErrorKind};
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
    let d = device("encrypted", s).await;
    assert_eq!(d.shell_text("echo in").await.unwrap(), "in");

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
async fn hashed_known_hosts_pass_and_off_skips_the_check() {
    let sshd = Sshd::start(SshdOptions {
        addrs: vec!["127.0.0.60".into(), "127.0.0.61".into()],
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

    // `off` connects to a host whose recorded key is wrong, and writes nothing.
    let wrong = sshd.dir.path().join("wrong_known_hosts");
    let impostor = keygen(sshd.dir.path(), "impostor", "ed25519");
    let line = format!("[127.0.0.61]:{} {}\n", sshd.port, public_key(&impostor));
    std::fs::write(&wrong, &line).unwrap();
    let mut s = sshd.settings("127.0.0.61");
    s.insert("user_known_hosts".into(), json!(wrong));
    s.insert("host_key_policy".into(), json!("off"));
    let d = device("off", s).await;
    assert_eq!(d.shell_text("echo unchecked").await.unwrap(), "unchecked");
    assert_eq!(std::fs::read_to_string(&wrong).unwrap(), line);
}
