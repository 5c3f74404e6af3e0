//! Faults on demand, as the real adb server and CLI see them.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use adbd_sim::testing::AdbServer;
use adbd_sim::{DeviceConfig, Fault, SimDevice};

fn run(server: &AdbServer, args: &[&str]) -> Output {
    server.adb().args(args).output().expect("run adb")
}

fn said(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_and_offline_devices_beside_a_healthy_one() {
    let server = AdbServer::start().await.unwrap();
    let healthy = SimDevice::start(DeviceConfig::modern("ok")).await.unwrap();
    let unauthorized = SimDevice::start(DeviceConfig::modern("unauth").fault(Fault::Unauthorized))
        .await
        .unwrap();
    let offline = SimDevice::start(DeviceConfig::modern("off").fault(Fault::NeverAnswer))
        .await
        .unwrap();
    let ok = server.connect(&healthy).await.unwrap();

    let reply = server.connect_addr(&unauthorized.serial()).await.unwrap();
    assert_eq!(
        reply,
        format!("failed to authenticate to {}", unauthorized.serial())
    );
    server
        .wait_for_state(
            &unauthorized.serial(),
            "unauthorized",
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    let started = Instant::now();
    let reply = server.connect_addr(&offline.serial()).await.unwrap();
    assert_eq!(reply, format!("failed to connect to {}", offline.serial()));
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        server.state(&offline.serial()).await.unwrap().as_deref(),
        Some("offline")
    );

    let out = run(&server, &["-s", &ok, "shell", "echo fine"]);
    assert_eq!((said(&out), out.status.code()), ("fine\n".into(), Some(0)));
    let out = run(&server, &["-s", &unauthorized.serial(), "shell", "echo no"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(said(&out).contains("device unauthorized"), "{}", said(&out));
    let out = run(&server, &["-s", &offline.serial(), "shell", "echo no"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(said(&out).contains("device offline"), "{}", said(&out));

    // Once the fault is lifted, a reconnect finds the device healthy.
    unauthorized.set_fault(Fault::None);
    server.disconnect(&unauthorized.serial()).await.unwrap();
    server.connect(&unauthorized).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_device_never_answers_while_others_do() {
    let server = AdbServer::start().await.unwrap();
    let hung = SimDevice::start(DeviceConfig::modern("hung"))
        .await
        .unwrap();
    let other = SimDevice::start(DeviceConfig::modern("other"))
        .await
        .unwrap();
    let hung_serial = server.connect(&hung).await.unwrap();
    let other_serial = server.connect(&other).await.unwrap();
    hung.set_fault(Fault::Hang);

    let mut stuck = server.adb_async();
    stuck
        .args(["-s", &hung_serial, "shell", "echo never"])
        .stdout(Stdio::piped());
    let stuck = stuck.spawn().unwrap();
    let out = run(&server, &["-s", &other_serial, "shell", "echo other"]);
    assert_eq!(said(&out), "other\n");
    let waited = tokio::time::timeout(Duration::from_secs(3), stuck.wait_with_output()).await;
    assert!(waited.is_err(), "the hung device answered: {waited:?}");
    // Still listed as a healthy device: only a timeout reveals it.
    assert_eq!(
        server.state(&hung_serial).await.unwrap().as_deref(),
        Some("device")
    );

    hung.set_fault(Fault::None);
    let out = run(&server, &["-s", &hung_serial, "shell", "echo back"]);
    assert_eq!(said(&out), "back\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_dropped_in_the_middle_of_a_push_and_of_a_pull() {
    let server = AdbServer::start().await.unwrap();
    let dev = SimDevice::start(DeviceConfig::modern("drop"))
        .await
        .unwrap();
    let serial = server.connect(&dev).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    let local = tmp.path().join("big.bin");
    std::fs::write(&local, &big).unwrap();

    dev.set_fault(Fault::DropAfterBytes(500_000));
    let out = run(
        &server,
        &[
            "-s",
            &serial,
            "push",
            local.to_str().unwrap(),
            "/data/local/tmp/big.bin",
        ],
    );
    eprintln!("push: {}", said(&out));
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    // Like adbd, the device writes the final name and removes it when the link drops; that
    // clean-up runs as the link task ends, which may be just after the client has exited.
    let partial = dev.path("/data/local/tmp/big.bin");
    let since = Instant::now();
    while partial.exists() && since.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!partial.exists(), "partial file left on the device");
    assert_eq!(dev.fault(), Fault::None, "DropAfterBytes is one-shot");

    // The server reconnects by itself; the next push goes through.
    server
        .wait_for_state(&serial, "device", Duration::from_secs(30))
        .await
        .unwrap();
    let out = run(
        &server,
        &[
            "-s",
            &serial,
            "push",
            local.to_str().unwrap(),
            "/data/local/tmp/big.bin",
        ],
    );
    assert!(out.status.success(), "{}", said(&out));

    dev.set_fault(Fault::DropAfterBytes(500_000));
    let back = tmp.path().join("back.bin");
    let out = run(
        &server,
        &[
            "-s",
            &serial,
            "pull",
            "/data/local/tmp/big.bin",
            back.to_str().unwrap(),
        ],
    );
    eprintln!("pull: {}", said(&out));
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(!back.exists(), "the CLI removes its partial file");
    server
        .wait_for_state(&serial, "device", Duration::from_secs(30))
        .await
        .unwrap();
    let out = run(
        &server,
        &[
            "-s",
            &serial,
            "pull",
            "/data/local/tmp/big.bin",
            back.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(std::fs::read(&back).unwrap(), big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_link_limits_the_transfer_rate() {
    let server = AdbServer::start().await.unwrap();
    let dev = SimDevice::start(DeviceConfig::modern("slow").fault(Fault::SlowLink(200_000)))
        .await
        .unwrap();
    let serial = server.connect(&dev).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("f.bin");
    std::fs::write(&local, vec![7u8; 600_000]).unwrap();
    let started = Instant::now();
    let out = run(
        &server,
        &[
            "-s",
            &serial,
            "push",
            local.to_str().unwrap(),
            "/sdcard/f.bin",
        ],
    );
    assert!(out.status.success(), "{}", said(&out));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(2500),
        "600 kB at 200 kB/s took only {elapsed:?}"
    );
    assert_eq!(
        std::fs::read(dev.path("/sdcard/f.bin")).unwrap().len(),
        600_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_closes_every_link() {
    let server = AdbServer::start().await.unwrap();
    let dev = SimDevice::start(DeviceConfig::modern("closer").fault(Fault::CloseImmediately))
        .await
        .unwrap();
    let reply = server.connect_addr(&dev.serial()).await.unwrap();
    assert!(
        reply.starts_with(&format!("failed to connect to {}", dev.serial())),
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_refuses_services_answers_fail_closed() {
    let server = AdbServer::start().await.unwrap();
    let dev = SimDevice::start(DeviceConfig::modern("refuser"))
        .await
        .unwrap();
    let serial = server.connect(&dev).await.unwrap();
    dev.set_fault(Fault::RefuseServices);
    let err = server
        .device_service(&serial, "shell,v2,raw:echo hi")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, adbd_sim::testing::HarnessError::Refused { message, .. } if message == "closed"),
        "{err}"
    );
    assert_eq!(
        server.state(&serial).await.unwrap().as_deref(),
        Some("device")
    );
    dev.set_fault(Fault::None);
    let body = server
        .device_service(&serial, "exec:echo hi")
        .await
        .unwrap();
    assert_eq!(body, b"hi\n");
}
