//! The built-in operations through the engine, on a fake device that records what reaches it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use devbatch_core::{
    BatchError, BatchOperationManager, Capability, Command, CommandOutput, Device, DeviceError,
    DevicePool, Labels, OperationError, Registry, TransferStats,
};
use serde_json::json;

/// Answers every command with exit 0 and writes its own id into whatever it is asked to pull.
#[derive(Debug)]
struct Fake {
    id: String,
    labels: Labels,
    runs: Arc<AtomicUsize>,
}

#[async_trait]
impl Device for Fake {
    fn id(&self) -> &str {
        &self.id
    }
    fn backend(&self) -> &str {
        "fake"
    }
    fn labels(&self) -> &Labels {
        &self.labels
    }
    fn capabilities(&self) -> &[Capability] {
        &[Capability::Exec, Capability::Pull]
    }
    async fn run(&self, _: &Command) -> Result<CommandOutput, DeviceError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(CommandOutput::default())
    }
    async fn push(&self, _: &Path, _: &str) -> Result<TransferStats, DeviceError> {
        Err(DeviceError::Unsupported("no push".into()))
    }
    async fn pull(&self, _: &str, local: &Path) -> Result<TransferStats, DeviceError> {
        std::fs::write(local, &self.id).map_err(|e| DeviceError::io("write", e))?;
        Ok(TransferStats {
            files: 1,
            bytes: self.id.len() as u64,
            skipped: 0,
        })
    }
}

fn manager(ids: &[&str], runs: &Arc<AtomicUsize>) -> BatchOperationManager {
    let devices = ids.iter().map(|id| {
        Arc::new(Fake {
            id: id.to_string(),
            labels: Labels::new(),
            runs: runs.clone(),
        }) as Arc<dyn Device>
    });
    let mut registry = Registry::new();
    devbatch_ops::register_all(&mut registry).unwrap();
    BatchOperationManager::with_registry(DevicePool::from_devices(devices).unwrap(), registry)
}

#[tokio::test]
async fn pulls_from_ids_that_differ_only_in_unsafe_characters_never_collide() {
    let out = tempfile::tempdir().unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let ids = ["a/b", "a_b", "a%2Fb", "..", "_.."];
    let m = manager(&ids, &runs);
    let template = format!("{}/{{device}}/", out.path().display());
    let r = m
        .execute_batch(
            "pull",
            json!({"remote": "/data/f.txt", "local": template}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.summary().succeeded, ids.len(), "{r:?}");
    let mut folders = std::collections::HashSet::new();
    for id in ids {
        let local = r.get(id).unwrap().result["local"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(std::fs::read_to_string(&local).unwrap(), id, "{local}");
        assert!(folders.insert(local.clone()), "{id} shares {local}");
        assert!(
            Path::new(&local).starts_with(out.path()),
            "{local} left the folder"
        );
    }
    assert_eq!(
        r.get("a/b").unwrap().result["local"],
        json!(format!("{}/a%2Fb/f.txt", out.path().display()))
    );
    assert_eq!(
        r.get("a_b").unwrap().result["local"],
        json!(format!("{}/a_b/f.txt", out.path().display()))
    );
}

#[tokio::test]
async fn nul_bytes_and_empty_test_commands_are_refused_before_anything_runs() {
    let runs = Arc::new(AtomicUsize::new(0));
    let m = manager(&["d1", "d2"], &runs);
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let fifo_refused = format!(
        "parameter 'local' of operation 'push' must be an existing local file or directory, got {:?} (neither a regular file nor a directory)",
        fifo.to_str().unwrap()
    );
    let cases = [
        (
            "push",
            json!({"local": fifo, "remote": "/tmp/f"}),
            fifo_refused.as_str(),
        ),
        (
            "push",
            json!({"local": dir.path(), "remote": "/tmp/a\u{0}b"}),
            "parameter 'remote' of operation 'push' must be a non-empty path without NUL bytes, got a path holding a NUL byte",
        ),
        (
            "pull",
            json!({"remote": "/tmp/a\u{0}b", "local": "out/{device}"}),
            "parameter 'remote' of operation 'pull' must be a non-empty path without NUL bytes, got a path holding a NUL byte",
        ),
        (
            "pull",
            json!({"remote": "/tmp/a", "local": "out\u{0}/{device}"}),
            "parameter 'local' of operation 'pull' must be a non-empty path without NUL bytes, got a path holding a NUL byte",
        ),
        (
            "shell",
            json!({"cmd": "echo \u{0}"}),
            "parameter 'cmd' of operation 'shell' must be text without NUL bytes, got a NUL byte at byte 5",
        ),
        (
            "shell",
            json!({"args": ["echo", "a\u{0}"]}),
            "parameter 'args[1]' of operation 'shell' must be text without NUL bytes, got a NUL byte at byte 1",
        ),
        (
            "run_test",
            json!({"cmd": "make test\u{0}"}),
            "parameter 'cmd' of operation 'run_test' must be text without NUL bytes, got a NUL byte at byte 9",
        ),
        (
            "run_test",
            json!({"cmd": ""}),
            "parameter 'cmd' of operation 'run_test' must be a non-empty command line, got an empty string",
        ),
        (
            "shell",
            json!({"cmd": "true", "ok_exit_codes": []}),
            "parameter 'ok_exit_codes' of operation 'shell' must be a non-empty list of exit codes from 0 to 255, got an empty list",
        ),
        (
            "shell",
            json!({"cmd": "true", "ok_exit_codes": [0, 4294967296u64]}),
            "parameter 'ok_exit_codes' of operation 'shell' must be a non-empty list of exit codes from 0 to 255, got 4294967296",
        ),
        (
            "shell",
            json!({"cmd": "true", "ok_exit_codes": [-1]}),
            "parameter 'ok_exit_codes' of operation 'shell' must be a non-empty list of exit codes from 0 to 255, got -1",
        ),
        (
            "shell",
            json!({"cmd": ""}),
            "parameter 'cmd' of operation 'shell' must be a non-empty command line, got an empty string",
        ),
    ];
    for (op, params, message) in cases {
        let err = m.execute_batch(op, params.clone(), None).await.unwrap_err();
        assert!(
            matches!(
                &err,
                BatchError::Operation(OperationError::InvalidParam { .. })
            ),
            "{op} {params}: {err:?}"
        );
        assert_eq!(err.to_string(), message, "{op} {params}");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0, "nothing ran on any device");
    let r = m
        .execute_batch("run_test", json!({"cmd": "true"}), None)
        .await
        .unwrap();
    assert_eq!(r.summary().succeeded, 2);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}
