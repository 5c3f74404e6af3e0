//! The test harness itself: a clear error without adb, and orphaned servers of killed tests swept.

use std::time::{Duration, Instant};

use adbd_sim::testing::{AdbServer, HarnessError};

#[tokio::test]
async fn a_missing_adb_says_what_to_install() {
    let err = AdbServer::start_with("/nonexistent/adb").await.unwrap_err();
    assert!(matches!(err, HarnessError::AdbMissing(_)));
    assert_eq!(
        err.to_string(),
        "adb server binary /nonexistent/adb not found: install adb (apt-get install adb) or set ADBD_SIM_ADB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_orphaned_by_a_killed_test_are_killed() {
    // What a test killed on a timeout leaves behind: a server and its HOME, owner gone.
    let home = tempfile::Builder::new()
        .prefix("adbd-sim-adb-")
        .tempdir()
        .unwrap()
        .keep();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut orphan = std::process::Command::new(adbd_sim::testing::DEFAULT_ADB)
        .args(["-P", &port.to_string(), "nodaemon", "server"])
        .env("HOME", &home)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the real adb is needed: apt-get install adb");
    std::fs::write(home.join("owner.pid"), "4194305").unwrap(); // never a live pid
    std::fs::write(home.join("server.pid"), orphan.id().to_string()).unwrap();

    let _server = AdbServer::start().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while orphan.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the orphaned server still runs");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!home.exists(), "its HOME was not removed");
}
