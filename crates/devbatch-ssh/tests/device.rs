//! The SSH device against a real OpenSSH server: the conformance suite, exec semantics,
//! remote clean-up on timeout, reuse and reconnection, transfers.

mod common;

use std::time::Duration;

use common::{Sshd, SshdOptions, device, gone_within};
use devbatch_core::conformance::{Suite, run_all};
use devbatch_core::{Command, ErrorKind};

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
