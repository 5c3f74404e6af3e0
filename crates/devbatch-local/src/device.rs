use std::path::{Path, PathBuf};

use async_trait::async_trait;
use devbatch_core::{
    Capability, Command, CommandOutput, Device, DeviceError, Labels, TransferStats,
};

use crate::{files, process};

/// This machine as a device.
#[derive(Debug, Clone)]
pub struct LocalDevice {
    id: String,
    labels: Labels,
    workdir: Option<PathBuf>,
}

impl LocalDevice {
    /// A local device with this id.
    pub fn new(id: impl Into<String>) -> Self {
        LocalDevice {
            id: id.into(),
            labels: Labels::new(),
            workdir: None,
        }
    }

    /// Sets its labels.
    pub fn with_labels(mut self, labels: Labels) -> Self {
        self.labels = labels;
        self
    }

    /// Runs commands in `dir` instead of the current directory; relative remote paths of
    /// push and pull are taken from there too.
    pub fn with_workdir(mut self, dir: PathBuf) -> Self {
        self.workdir = Some(dir);
        self
    }

    fn remote_path(&self, remote: &str) -> PathBuf {
        match &self.workdir {
            Some(dir) => dir.join(remote),
            None => PathBuf::from(remote),
        }
    }
}

const CAPABILITIES: &[Capability] = &[Capability::Exec, Capability::Push, Capability::Pull];

#[async_trait]
impl Device for LocalDevice {
    fn id(&self) -> &str {
        &self.id
    }

    fn backend(&self) -> &str {
        "local"
    }

    fn labels(&self) -> &Labels {
        &self.labels
    }

    fn capabilities(&self) -> &[Capability] {
        CAPABILITIES
    }

    async fn run(&self, command: &Command) -> Result<CommandOutput, DeviceError> {
        process::run(command, self.workdir.as_deref()).await
    }

    async fn push(&self, local: &Path, remote: &str) -> Result<TransferStats, DeviceError> {
        files::copy_atomically(local, &self.remote_path(remote)).await
    }

    async fn pull(&self, remote: &str, local: &Path) -> Result<TransferStats, DeviceError> {
        files::copy_atomically(&self.remote_path(remote), local).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devbatch_core::conformance::{Suite, run_all};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn local_device_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let device = LocalDevice::new("local");
        run_all(&device, &Suite::new(dir.path().to_str().unwrap())).await;
    }
}
