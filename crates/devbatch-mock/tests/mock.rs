//! The mock device honours the Device contract, and its scripts do what they say.

use std::sync::Arc;
use std::time::Duration;

use devbatch_core::conformance::{Suite, run_all};
use devbatch_core::{Backend, Command, Device, DeviceSpec, DeviceState, ErrorKind};
use devbatch_mock::{CommandScript, MockBackend, MockDevice};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_device_conforms() {
    let device = MockDevice::new("m1");
    // Unscripted commands run on this machine, outside the sandbox that files go to.
    let suite = Suite {
        commands_see_files: false,
        ..Suite::new("/scratch")
    };
    run_all(&device, &suite).await;
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
        base_dir: None,
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

fn spec(settings: serde_json::Value) -> DeviceSpec {
    DeviceSpec {
        id: Some("phone".into()),
        settings: settings.as_object().unwrap().clone(),
        ..DeviceSpec::default()
    }
}

#[tokio::test]
async fn counts_above_the_maximum_are_refused_before_anything_is_made() {
    assert_eq!(devbatch_mock::MAX_COUNT, 1_000_000);
    for count in [
        9_223_372_036_854_775_807_u64,
        50_000_000,
        devbatch_mock::MAX_COUNT as u64 + 1,
    ] {
        let err = MockBackend
            .open(spec(json!({ "count": count })))
            .await
            .expect_err("too many devices");
        assert_eq!(
            err.to_string(),
            format!("invalid settings: count must be at most 1000000, got {count}")
        );
    }
    let err = MockBackend
        .open(spec(json!({"count": 0})))
        .await
        .expect_err("no devices");
    assert_eq!(
        err.to_string(),
        "invalid settings: count must be at least 1"
    );
    let devices = MockBackend.open(spec(json!({"count": 3}))).await.unwrap();
    assert_eq!(devices.len(), 3);
}

#[tokio::test]
async fn the_state_setting_is_ready_or_a_known_not_ready_state() {
    for settings in [json!({}), json!({"state": "ready"})] {
        let devices = MockBackend.open(spec(settings.clone())).await.unwrap();
        assert_eq!(devices[0].state(), DeviceState::Ready, "{settings}");
        let out = devices[0].run(&Command::shell("echo hi")).await.unwrap();
        assert_eq!(out.stdout, b"hi\n", "{settings}");
    }

    let devices = MockBackend
        .open(spec(json!({"state": "unauthorized"})))
        .await
        .unwrap();
    assert_eq!(devices[0].state().as_str(), "unauthorized");
    let err = devices[0]
        .run(&Command::shell("echo hi"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotReady);
    assert_eq!(
        err.to_string(),
        "device is unauthorized: this mock device is configured as not ready"
    );

    let accepted = "\"ready\", \"offline\", \"unauthorized\", \"authorizing\", \"connecting\", \
                    \"no permissions\", \"bootloader\", \"recovery\", \"sideload\", \"rescue\", \"absent\"";
    for bad in ["", "Ready", "bogus"] {
        let err = MockBackend
            .open(spec(json!({ "state": bad })))
            .await
            .expect_err("an unknown state is refused");
        assert_eq!(
            err.to_string(),
            format!("invalid settings: state must be one of {accepted}; got {bad:?}")
        );
    }
}

#[tokio::test]
async fn push_and_pull_cannot_leave_the_sandbox() {
    let outside = tempfile::tempdir().unwrap();
    let device = MockDevice::new("m");
    let sandbox = device.sandbox().unwrap().to_path_buf();
    let escape = |rest: &str| {
        let ups = "../".repeat(sandbox.components().count() + 2);
        format!("{ups}{}{rest}", outside.path().display())
    };
    let source = outside.path().join("source.txt");
    std::fs::write(&source, "secret").unwrap();

    for remote in [
        escape("/pushed.txt"),
        "../../../../tmp/x".to_string(),
        "/sdcard/../../x".to_string(),
        "a/..".to_string(),
    ] {
        let err = device.push(&source, &remote).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{remote}");
        assert_eq!(
            err.to_string(),
            format!(
                "invalid input: device path {remote:?} uses `..`; paths of mock devices stay inside their sandbox"
            )
        );
    }
    assert!(!outside.path().join("pushed.txt").exists());

    let local = outside.path().join("pulled.txt");
    for remote in [
        escape("/source.txt"),
        "../../../../etc/hostname".to_string(),
    ] {
        let err = device.pull(&remote, &local).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{remote}");
        assert_eq!(
            err.to_string(),
            format!(
                "invalid input: device path {remote:?} uses `..`; paths of mock devices stay inside their sandbox"
            )
        );
    }
    assert!(!local.exists());

    // Paths inside the sandbox still work, `.` and repeated slashes included.
    device.push(&source, "//sdcard/./in.txt").await.unwrap();
    assert_eq!(
        std::fs::read_to_string(sandbox.join("sdcard/in.txt")).unwrap(),
        "secret"
    );
    device.pull("/sdcard/in.txt", &local).await.unwrap();
    assert_eq!(std::fs::read_to_string(&local).unwrap(), "secret");
}
