//! The example plugins (`plugins/disk-usage`, `plugins/dir`), loaded from their built libraries
//! and run in batches through `BatchOperationManager`.

mod support;

use std::path::Path;
use std::sync::Arc;

use devbatch_core::{
    BatchError, BatchOperationManager, Device, DevicePool, DeviceSpec, DeviceState, ErrorKind,
    Registry, Status,
};
use devbatch_mock::{CommandScript, MockDevice};
use devbatch_plugin::{LoadedPlugin, load_plugin, load_plugins};
use serde_json::{Value, json};

/// The built-in operations plus both example plugins.
fn registry() -> (Registry, LoadedPlugin, LoadedPlugin) {
    let built = support::plugins();
    let mut registry = Registry::new();
    devbatch_ops::register_all(&mut registry).unwrap();
    let disk = load_plugin(&built.library("devbatch_disk_usage"), &mut registry).unwrap();
    let dir = load_plugin(&built.library("devbatch_dir"), &mut registry).unwrap();
    (registry, disk, dir)
}

async fn open_dir_device(registry: &Registry, id: &str, root: &Path) -> Arc<dyn Device> {
    let spec = DeviceSpec {
        id: Some(id.into()),
        labels: [("tier".to_string(), "staging".to_string())].into(),
        settings: json!({"root": root, "create": true, "env": {"APP_ENV": "staging"}})
            .as_object()
            .unwrap()
            .clone(),
        base_dir: None,
    };
    let mut devices = registry.backend("dir").unwrap().open(spec).await.unwrap();
    assert_eq!(devices.len(), 1);
    devices.pop().unwrap()
}

const DF_SAMPLE: &str = "\
Filesystem     1024-blocks      Used Available Capacity Mounted on
/dev/sda1         41152736  15522324  23517588      40% /
//nas/share     1000000000 950000000  50000000      95% /mnt/my backups
";

#[test]
fn both_plugins_describe_what_they_add() {
    let (registry, disk, dir) = registry();
    assert_eq!(disk.name, "disk_usage");
    assert_eq!(disk.version, "0.1.0");
    assert_eq!(disk.operations, vec!["disk_usage"]);
    assert!(disk.backends.is_empty());
    assert!(disk.path.is_absolute() && disk.path.ends_with("libdevbatch_disk_usage.so"));
    assert_eq!(dir.name, "dir");
    assert!(dir.operations.is_empty());
    assert_eq!(dir.backends, vec!["dir"]);

    let (op, source) = registry
        .operations()
        .find(|(op, _)| op.name() == "disk_usage")
        .unwrap();
    assert_eq!(
        source,
        format!("plugin `disk_usage` 0.1.0 ({})", disk.path.display())
    );
    assert!(op.idempotent());
    let params: Vec<&str> = op.params().iter().map(|p| p.name).collect();
    assert_eq!(params, ["paths", "max_use_percent"]);
    let (backend, _) = registry
        .backends()
        .find(|(b, _)| b.name() == "dir")
        .unwrap();
    assert!(
        backend
            .description()
            .starts_with("directories of this machine")
    );
    // The built-ins are still there, side by side.
    assert!(registry.has_operation("shell") && registry.has_operation("disk_usage"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_usage_reports_df_of_every_device_in_a_batch() {
    let (registry, _, _) = registry();
    let pool = DevicePool::from_devices([
        Arc::new(devbatch_local::LocalDevice::new("local")) as Arc<dyn Device>,
        Arc::new(MockDevice::new("m1").on_command(CommandScript::new("df").stdout(DF_SAMPLE))),
    ])
    .unwrap();
    let manager = BatchOperationManager::with_registry(pool, registry);

    let result = manager
        .execute_batch("disk_usage", json!({"paths": ["/"]}), None)
        .await
        .unwrap();
    assert_eq!(result.len(), 2);

    // The mock answers `df` with a fixed text: the whole report is known.
    let mock = result.get("m1").unwrap();
    assert_eq!(mock.status, Status::Success, "{mock:?}");
    assert_eq!(
        mock.result,
        json!({
            "filesystems": [
                {"filesystem": "/dev/sda1", "size_kib": 41152736, "used_kib": 15522324,
                 "available_kib": 23517588, "use_percent": 40, "mounted_on": "/"},
                {"filesystem": "//nas/share", "size_kib": 1000000000u64, "used_kib": 950000000u64,
                 "available_kib": 50000000, "use_percent": 95, "mounted_on": "/mnt/my backups"},
            ],
            "fullest": "/mnt/my backups",
        })
    );

    // This machine: compare with df run here (sizes do not move; used space may).
    let local = result.get("local").unwrap();
    assert_eq!(local.status, Status::Success, "{local:?}");
    let here = std::process::Command::new("df")
        .args(["-Pk", "--", "/"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&here.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    let cols: Vec<&str> = line.split_whitespace().collect();
    let fs = &local.result["filesystems"];
    assert_eq!(fs.as_array().unwrap().len(), 1, "{fs}");
    assert_eq!(fs[0]["filesystem"], cols[0]);
    assert_eq!(fs[0]["size_kib"], cols[1].parse::<u64>().unwrap());
    assert_eq!(fs[0]["mounted_on"], "/");
    let used = fs[0]["used_kib"].as_u64().unwrap();
    let available = fs[0]["available_kib"].as_u64().unwrap();
    assert!(used + available <= fs[0]["size_kib"].as_u64().unwrap());
    assert!(fs[0]["use_percent"].as_u64().unwrap() <= 100);
}

#[tokio::test]
async fn disk_usage_fails_devices_over_the_limit_and_checks_its_params() {
    let (registry, _, _) = registry();
    let pool = DevicePool::from_devices([
        Arc::new(MockDevice::new("m1").on_command(CommandScript::new("df").stdout(DF_SAMPLE)))
            as Arc<dyn Device>,
        Arc::new(
            MockDevice::new("m2").on_command(
                CommandScript::new("df")
                    .exit_code(1)
                    .stderr("df: /nope: No such file or directory\n"),
            ),
        ),
    ])
    .unwrap();
    let manager = BatchOperationManager::with_registry(pool, registry);

    let result = manager
        .execute_batch("disk_usage", json!({"max_use_percent": 90}), None)
        .await
        .unwrap();
    let m1 = result.get("m1").unwrap();
    assert_eq!(m1.status, Status::Error);
    assert_eq!(m1.error_kind, Some(ErrorKind::Failed));
    assert_eq!(
        m1.error.as_deref(),
        Some("/mnt/my backups is 95% full (limit 90%)")
    );
    // The report is kept as the partial result.
    assert_eq!(m1.result["fullest"], "/mnt/my backups");
    let m2 = result.get("m2").unwrap();
    assert_eq!(m2.error_kind, Some(ErrorKind::Failed));
    assert_eq!(
        m2.error.as_deref(),
        Some("`df -Pk` exited with status 1: df: /nope: No such file or directory")
    );

    let err = manager
        .execute_batch("disk_usage", json!({"max_use_percent": 150}), None)
        .await
        .unwrap_err();
    assert!(matches!(err, BatchError::Operation(_)));
    assert_eq!(
        err.to_string(),
        "parameter 'max_use_percent' of operation 'disk_usage' must be a percentage from 0 to 100, got number 150"
    );
    let err = manager
        .execute_batch("disk_usage", json!({"paths": "/"}), None)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "parameter 'paths' of operation 'disk_usage' must be a list of strings, got string \"/\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_devices_run_built_in_and_plugin_operations_in_a_batch() {
    let (registry, _, _) = registry();
    let tmp = tempfile::tempdir().unwrap();
    let (root1, root2) = (tmp.path().join("one"), tmp.path().join("two"));
    let d1 = open_dir_device(&registry, "stage-1", &root1).await;
    let d2 = open_dir_device(&registry, "stage-2", &root2).await;
    assert!(
        root1.is_dir() && root2.is_dir(),
        "create = true makes the roots"
    );
    assert_eq!(d1.backend(), "dir");
    assert_eq!(d1.labels().get("tier").map(String::as_str), Some("staging"));
    assert_eq!(d1.state(), DeviceState::Ready);
    let manager = BatchOperationManager::with_registry(
        DevicePool::from_devices([d1.clone(), d2]).unwrap(),
        registry,
    );

    // `shell` (built in) runs in each device's root, with its environment.
    let result = manager
        .execute_batch(
            "shell",
            json!({"cmd": "pwd; echo \"$APP_ENV $DEVBATCH_DEVICE_ID $HOME\"; echo err >&2; exit 3", "ok_exit_codes": [3]}),
            None,
        )
        .await
        .unwrap();
    for (id, root) in [("stage-1", &root1), ("stage-2", &root2)] {
        let outcome = result.get(id).unwrap();
        assert_eq!(outcome.status, Status::Success, "{outcome:?}");
        let root = root.display();
        assert_eq!(
            outcome.result["stdout"],
            format!("{root}\nstaging {id} {root}\n")
        );
        assert_eq!(outcome.result["stderr"], "err\n");
        assert_eq!(outcome.result["exit_code"], 3);
    }

    // `push` and `pull` (built in) stay inside the root.
    let local = tmp.path().join("app.conf");
    std::fs::write(&local, b"mode=staging\n").unwrap();
    let pushed = manager
        .execute_batch(
            "push",
            json!({"local": local, "remote": "/etc/app/app.conf"}),
            None,
        )
        .await
        .unwrap();
    assert!(pushed.summary().all_succeeded(), "{pushed:?}");
    assert_eq!(pushed.get("stage-2").unwrap().result["bytes"], 13);
    assert_eq!(
        std::fs::read(root2.join("etc/app/app.conf")).unwrap(),
        b"mode=staging\n"
    );
    let pulled_dir = tmp.path().join("pulled");
    let pulled = manager
        .execute_batch(
            "pull",
            json!({"remote": "etc/app", "local": format!("{}/{{device}}", pulled_dir.display())}),
            None,
        )
        .await
        .unwrap();
    assert!(pulled.summary().all_succeeded(), "{pulled:?}");
    assert_eq!(
        std::fs::read(pulled_dir.join("stage-1/app.conf")).unwrap(),
        b"mode=staging\n"
    );
    let escaped = manager
        .execute_batch(
            "pull",
            json!({"remote": "../../etc/passwd"}),
            Some(&["stage-1"]),
        )
        .await
        .unwrap();
    let outcome = escaped.get("stage-1").unwrap();
    assert_eq!(
        outcome.error_kind,
        Some(ErrorKind::InvalidInput),
        "{outcome:?}"
    );
    assert_eq!(
        outcome.error.as_deref(),
        Some(
            "invalid input: device path \"../../etc/passwd\" uses `..`; paths of dir devices stay inside the root"
        )
    );

    // `disk_usage` (one plugin) on `dir` devices (another plugin).
    let usage = manager
        .execute_batch("disk_usage", json!({"paths": ["."]}), None)
        .await
        .unwrap();
    let outcome = usage.get("stage-1").unwrap();
    assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    let here = std::process::Command::new("df")
        .args(["-Pk", "--"])
        .arg(&root1)
        .output()
        .unwrap();
    let mount = String::from_utf8_lossy(&here.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(5).map(str::to_string))
        .unwrap();
    assert_eq!(
        outcome.result["filesystems"][0]["mounted_on"],
        mount.as_str()
    );

    // A removed root makes the device not ready.
    std::fs::remove_dir_all(&root1).unwrap();
    assert_eq!(
        d1.state(),
        DeviceState::NotReady {
            state: "missing".into(),
            hint: format!("create the directory {}", root1.display()),
        }
    );
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_devices_pass_the_conformance_suite() {
    let (registry, _, _) = registry();
    let tmp = tempfile::tempdir().unwrap();
    let device = open_dir_device(&registry, "conform", &tmp.path().join("root")).await;
    // Commands run on this machine, outside the root that files go to.
    let suite = devbatch_core::conformance::Suite {
        commands_see_files: false,
        ..devbatch_core::conformance::Suite::new("/scratch")
    };
    devbatch_core::conformance::run_all(device.as_ref(), &suite).await;
    // The suite's files landed inside the root.
    assert!(tmp.path().join("root/scratch/tree/a.txt").is_file());
}

#[tokio::test]
async fn dir_settings_errors_name_the_setting() {
    let (registry, _, _) = registry();
    let backend = registry.backend("dir").unwrap();
    let open = |settings: Value| {
        let spec = DeviceSpec {
            id: Some("d".into()),
            labels: Default::default(),
            settings: settings.as_object().unwrap().clone(),
            base_dir: None,
        };
        backend.open(spec)
    };
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let cases = [
        (
            json!({}),
            "invalid settings: missing field `root`".to_string(),
        ),
        (
            json!({"root": tmp.path(), "roots": 1}),
            "invalid settings: unknown field `roots`, expected one of `root`, `create`, `env`"
                .to_string(),
        ),
        (
            json!({"root": "relative/dir"}),
            "invalid settings: root relative/dir must be an absolute path".to_string(),
        ),
        (
            json!({"root": missing}),
            format!(
                "root {} is not a directory (set create = true to create it)",
                missing.display()
            ),
        ),
    ];
    for (settings, expected) in cases {
        let err = open(settings.clone()).await.expect_err("an error");
        assert_eq!(err.to_string(), expected, "settings {settings}");
    }
}

#[test]
fn a_directory_of_plugins_loads_each_library_once_by_name() {
    let built = support::plugins();
    let tmp = tempfile::tempdir().unwrap();
    for lib in ["devbatch_dir", "devbatch_disk_usage"] {
        let name = devbatch_plugin::library_file_name(lib);
        std::fs::copy(built.library(lib), tmp.path().join(&name)).unwrap();
    }
    std::fs::write(tmp.path().join("README.txt"), "not a library").unwrap();
    let mut registry = Registry::new();
    let direct = tmp
        .path()
        .join(devbatch_plugin::library_file_name("devbatch_dir"));
    let loaded = load_plugins(&[tmp.path().to_path_buf(), direct], &mut registry).unwrap();
    let names: Vec<&str> = loaded.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["dir", "disk_usage"]);
    assert_eq!(registry.operation_names(), ["disk_usage"]);
    assert!(registry.backend("dir").is_ok());
}

#[test]
fn loading_a_plugin_twice_into_one_registry_is_a_clash() {
    let built = support::plugins();
    let path = built.library("devbatch_disk_usage");
    let mut registry = Registry::new();
    let first = load_plugin(&path, &mut registry).unwrap();
    let before = format!("{registry:?}");
    let err = load_plugin(&path, &mut registry).unwrap_err();
    assert_eq!(format!("{registry:?}"), before);
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {}: its operation 'disk_usage' clashes with the operation 'disk_usage' registered by plugin `disk_usage` 0.1.0 ({})",
            path.display(),
            first.path.display()
        )
    );
}

#[test]
fn a_second_backend_of_the_same_name_is_a_clash() {
    let path = support::plugins().library("devbatch_dir");
    let mut registry = Registry::new();
    let first = load_plugin(&path, &mut registry).unwrap();
    let err = load_plugin(&path, &mut registry).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {}: its backend 'dir' clashes with the backend 'dir' registered by plugin `dir` 0.1.0 ({})",
            path.display(),
            first.path.display()
        )
    );
}

/// Host processes (the `local` backend, the host's tokio) and plugin processes (`dir` devices,
/// the plugin's own tokio) run side by side: each copy of tokio reaps its own children.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_plugin_processes_run_side_by_side() {
    let (registry, _, _) = registry();
    let tmp = tempfile::tempdir().unwrap();
    let mut devices: Vec<Arc<dyn Device>> = Vec::new();
    for i in 0..4 {
        devices.push(
            open_dir_device(
                &registry,
                &format!("dir-{i}"),
                &tmp.path().join(format!("d{i}")),
            )
            .await,
        );
        devices.push(Arc::new(
            devbatch_local::LocalDevice::new(format!("local-{i}"))
                .with_workdir(tmp.path().to_path_buf()),
        ));
    }
    let manager =
        BatchOperationManager::with_registry(DevicePool::from_devices(devices).unwrap(), registry);
    for round in 0..3 {
        let result = manager
            .execute_batch(
                "shell",
                json!({"cmd": format!("sleep 0.1; echo round {round} $(basename \"$PWD\")")}),
                None,
            )
            .await
            .unwrap();
        assert_eq!(result.len(), 8);
        for (id, outcome) in result.iter() {
            assert_eq!(outcome.status, Status::Success, "{id}: {outcome:?}");
            let dir = match id.strip_prefix("dir-") {
                Some(i) => format!("d{i}"),
                None => tmp
                    .path()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            };
            assert_eq!(
                outcome.result["stdout"],
                format!("round {round} {dir}\n"),
                "{id}"
            );
        }
    }
}
