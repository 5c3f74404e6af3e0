//! [`MockDevice`]: a device that answers from scripts and runs everything else for real in a
//! sandbox directory of its own.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use async_trait::async_trait;
use devbatch_core::{
    Capability, Command, CommandOutput, Device, DeviceError, DeviceState, Labels, OperationContext,
    OperationFailure, Params, RebootMode, TransferStats,
};
use devbatch_local::LocalDevice;
use serde_json::Value;

use crate::log::CallLog;
use crate::script::{CommandScript, Latency, Script};

/// A scriptable device for tests.
///
/// * Operations with a [`Script`] are answered from it (latency, flaky failures, hang, panic,
///   error, result), whatever the operation, even one whose real implementation is for another
///   backend (`install_app`).
/// * Commands matching a [`CommandScript`] get its exit code and output.
/// * Everything else runs for real: commands through `/bin/sh` in the device's own temporary
///   sandbox directory (made on first use), push and pull into that sandbox (a remote path
///   `/sdcard/x` is `SANDBOX/sdcard/x`). So the generic operations work on mock devices as on
///   real ones.
#[derive(Debug)]
pub struct MockDevice {
    id: String,
    labels: Labels,
    state: DeviceState,
    latency: Option<Latency>,
    scripts: HashMap<String, Script>,
    commands: Vec<CommandScript>,
    log: Option<CallLog>,
    attempts: Mutex<HashMap<String, u32>>,
    sandbox: OnceLock<Result<(tempfile::TempDir, LocalDevice), String>>,
}

const CAPABILITIES: &[Capability] = &[
    Capability::Exec,
    Capability::Push,
    Capability::Pull,
    Capability::Reboot,
];

impl MockDevice {
    /// A mock device with no scripts: every operation runs for real in its sandbox.
    pub fn new(id: impl Into<String>) -> Self {
        MockDevice {
            id: id.into(),
            labels: Labels::new(),
            state: DeviceState::Ready,
            latency: None,
            scripts: HashMap::new(),
            commands: Vec::new(),
            log: None,
            attempts: Mutex::new(HashMap::new()),
            sandbox: OnceLock::new(),
        }
    }

    /// Answers `operation` from `script`.
    pub fn on(mut self, operation: impl Into<String>, script: Script) -> Self {
        self.scripts.insert(operation.into(), script);
        self
    }

    /// Answers commands containing the script's text from it (first match wins).
    pub fn on_command(mut self, script: CommandScript) -> Self {
        self.commands.push(script);
        self
    }

    /// Waits this long before every operation that has no script of its own.
    pub fn with_latency(mut self, latency: Latency) -> Self {
        self.latency = Some(latency);
        self
    }

    /// Adds a label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Sets every label.
    pub fn with_labels(mut self, labels: Labels) -> Self {
        self.labels = labels;
        self
    }

    /// Plays a device that is listed but not usable: every operation fails with `not_ready`.
    pub fn not_ready(mut self, state: impl Into<String>, hint: impl Into<String>) -> Self {
        self.state = DeviceState::NotReady {
            state: state.into(),
            hint: hint.into(),
        };
        self
    }

    /// Records calls in `log`.
    pub fn with_log(mut self, log: &CallLog) -> Self {
        self.log = Some(log.clone());
        self
    }

    /// The sandbox directory standing for the device's file system (made on first use).
    pub fn sandbox(&self) -> Result<&Path, DeviceError> {
        self.local().map(|_| self.sandbox_dir())
    }

    fn sandbox_dir(&self) -> &Path {
        match self.sandbox.get() {
            Some(Ok((dir, _))) => dir.path(),
            _ => Path::new("/nonexistent"),
        }
    }

    fn local(&self) -> Result<&LocalDevice, DeviceError> {
        let made = self.sandbox.get_or_init(|| {
            let dir = tempfile::Builder::new()
                .prefix("devbatch-mock-")
                .tempdir()
                .map_err(|e| format!("cannot make the mock sandbox: {e}"))?;
            let local = LocalDevice::new(self.id.clone()).with_workdir(dir.path().to_path_buf());
            Ok((dir, local))
        });
        made.as_ref()
            .map(|(_, l)| l)
            .map_err(|e| DeviceError::Failed(e.clone()))
    }

    /// A remote path inside the sandbox: absolute paths are taken from the sandbox root, and a
    /// path with a `..` component is refused, so push and pull never reach outside it.
    fn remote(&self, remote: &str) -> Result<String, DeviceError> {
        if Path::new(remote)
            .components()
            .any(|c| c == Component::ParentDir)
        {
            return Err(DeviceError::InvalidInput(format!(
                "device path {remote:?} uses `..`; paths of mock devices stay inside their sandbox"
            )));
        }
        Ok(remote.trim_start_matches('/').to_string())
    }

    fn record(&self, what: impl FnOnce() -> String) {
        if let Some(log) = &self.log {
            log.record(&self.id, what());
        }
    }

    fn check_ready(&self) -> Result<(), DeviceError> {
        match &self.state {
            DeviceState::Ready => Ok(()),
            DeviceState::NotReady { state, hint } => Err(DeviceError::NotReady {
                state: state.clone(),
                hint: hint.clone(),
            }),
        }
    }

    fn next_attempt(&self, operation: &str) -> u32 {
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let n = attempts.entry(operation.to_string()).or_insert(0);
        *n += 1;
        *n
    }
}

#[async_trait]
impl Device for MockDevice {
    fn id(&self) -> &str {
        &self.id
    }

    fn backend(&self) -> &str {
        "mock"
    }

    fn labels(&self) -> &Labels {
        &self.labels
    }

    fn capabilities(&self) -> &[Capability] {
        CAPABILITIES
    }

    fn state(&self) -> DeviceState {
        self.state.clone()
    }

    async fn intercept(
        &self,
        operation: &str,
        _params: &Params,
        _ctx: &OperationContext,
    ) -> Option<Result<Value, OperationFailure>> {
        self.record(|| format!("op:{operation}"));
        let _in_flight = self.log.as_ref().map(CallLog::enter);
        if let Err(e) = self.check_ready() {
            return Some(Err(e.into()));
        }
        let Some(script) = self.scripts.get(operation) else {
            if let Some(latency) = self.latency {
                latency.wait().await;
            }
            return None;
        };
        if let Some(latency) = script.latency.or(self.latency) {
            latency.wait().await;
        }
        let attempt = self.next_attempt(operation);
        if attempt <= script.fail_first {
            let err = match &script.error {
                Some(e) => e.to_device_error(),
                None => DeviceError::Unreachable(format!(
                    "flaky mock: attempt {attempt} of the first {} fails",
                    script.fail_first
                )),
            };
            return Some(Err(err.into()));
        }
        if script.hang {
            std::future::pending::<()>().await;
        }
        if let Some(message) = &script.panic {
            panic!("{message}");
        }
        if script.fail_first == 0
            && let Some(e) = &script.error
        {
            return Some(Err(OperationFailure {
                error: e.to_device_error(),
                partial: e.partial.clone(),
            }));
        }
        script.result.clone().map(Ok)
    }

    async fn run(&self, command: &Command) -> Result<CommandOutput, DeviceError> {
        let line = command.to_shell_line();
        self.record(|| format!("run:{line}"));
        self.check_ready()?;
        if let Some(script) = self.commands.iter().find(|s| line.contains(&s.contains)) {
            if let Some(latency) = script.latency {
                latency.wait().await;
            }
            if script.hang {
                std::future::pending::<()>().await;
            }
            if script.stdout.len() + script.stderr.len() > command.max_output {
                return Err(DeviceError::OutputLimit {
                    limit: command.max_output,
                });
            }
            if script.disconnect {
                return Err(DeviceError::Disconnected(format!(
                    "mock link dropped after {} bytes of output",
                    script.stdout.len()
                )));
            }
            return Ok(CommandOutput {
                exit_code: script.exit_code,
                stdout: script.stdout.clone().into_bytes(),
                stderr: script.stderr.clone().into_bytes(),
            });
        }
        self.local()?.run(command).await
    }

    async fn push(&self, local: &Path, remote: &str) -> Result<TransferStats, DeviceError> {
        self.record(|| format!("push:{remote}"));
        self.check_ready()?;
        let target = self.remote(remote)?;
        let device = self.local()?;
        if let Some(parent) = PathBuf::from(&target)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            let dir = self.sandbox_dir().join(parent);
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| DeviceError::io(format!("create {remote}"), e))?;
        }
        device.push(local, &target).await
    }

    async fn pull(&self, remote: &str, local: &Path) -> Result<TransferStats, DeviceError> {
        self.record(|| format!("pull:{remote}"));
        self.check_ready()?;
        let target = self.remote(remote)?;
        self.local()?
            .pull(&target, local)
            .await
            .map_err(|e| match e {
                // Name the path as the caller gave it, not the sandbox path.
                DeviceError::Io { source, .. } => DeviceError::io(format!("read {remote}"), source),
                other => other,
            })
    }

    async fn reboot(&self, mode: RebootMode, wait: bool) -> Result<(), DeviceError> {
        self.record(|| format!("reboot:{mode:?}:{wait}"));
        self.check_ready()?;
        if let Some(latency) = self.latency {
            latency.wait().await;
        }
        Ok(())
    }
}
