//! The mock device honours the Device contract, and its scripts do what they say.

use std::sync::Arc;
use std::time::Duration;

use devbatch_core::conformance::{Suite, run_all};
use devbatch_core::{Backend, Command, Device, DeviceSpec, ErrorKind};
use devbatch_mock::{CommandScript, MockBackend, MockDevice};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_device_conforms() {
    let device = MockDevice::new("m1");
    run_all(&device, &Suite::new("/scratch")).await;
    // Remote paths live in the device's own sandbox, not on this machine.
    assert!(
        device
            .sandbox()
            .unwrap()
            .join("scratch/tree/a.txt")
            .exists()
    );
    assert!(!std::path::Path::new("/scratch").exists());
}

#[tokio::test]
async fn command_scripts_answer_matching_commands() {
    let d = MockDevice::new("m")
        .on_command(CommandScript::new("getprop").stdout("14\n"))
        .on_command(
            CommandScript::new("flaky-link")
                .stdout("half")
                .disconnecting(),
        )
        .on_command(CommandScript::new("boom").exit_code(7).stderr("bad"));
    let out = d
        .run(&Command::shell("getprop ro.build.version.release"))
        .await
        .unwrap();
    assert_eq!(
        (out.exit_code, out.stdout.as_slice()),
        (0, b"14\n".as_slice())
    );
    let out = d.run(&Command::shell("boom now")).await.unwrap();
    assert_eq!(
        (out.exit_code, out.stderr.as_slice()),
        (7, b"bad".as_slice())
    );
    let err = d.run(&Command::shell("flaky-link")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Disconnected);
    assert_eq!(
        err.to_string(),
        "connection lost: mock link dropped after 4 bytes of output"
    );
    let hang = MockDevice::new("h").on_command(CommandScript::new("").hanging());
    assert!(
        tokio::time::timeout(Duration::from_millis(50), hang.run(&Command::shell("x")))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_backend_builds_fleets_from_pool_settings() {
    let spec = DeviceSpec {
        id: Some("phone".into()),
        labels: [("os".to_string(), "android".to_string())].into(),
        settings: json!({
            "count": 12,
            "latency_ms": [1, 3],
            "ops": {"info": {"result": {"android": "14"}}, "install_app": {"error": {"kind": "failed", "message": "Failure [INSTALL_FAILED_VERSION_DOWNGRADE]"}}},
            "commands": [{"contains": "uname", "stdout": "Linux\n"}]
        })
        .as_object()
        .unwrap()
        .clone(),
    };
    let devices = MockBackend.open(spec).await.unwrap();
    let ids: Vec<&str> = devices.iter().map(|d| d.id()).collect();
    assert_eq!(ids.len(), 12);
    assert_eq!((ids[0], ids[11]), ("phone-001", "phone-012"));
    assert_eq!(
        devices[3].labels().get("os").map(String::as_str),
        Some("android")
    );
    let out = devices[0].run(&Command::shell("uname")).await.unwrap();
    assert_eq!(out.stdout, b"Linux\n");

    let bad = DeviceSpec {
        id: Some("x".into()),
        settings: json!({"latency": 5}).as_object().unwrap().clone(),
        ..DeviceSpec::default()
    };
    let err = MockBackend
        .open(bad)
        .await
        .expect_err("a misspelt key is refused");
    assert!(
        err.to_string()
            .starts_with("invalid settings: unknown field `latency`, expected one of"),
        "{err}"
    );
    let _: Arc<dyn Device> = devices[0].clone();
}
