//! This machine as a devbatch device (`backend = "local"`, id `local` by default).
//!
//! Commands run through `tokio::process` in their own process group; when an operation times
//! out or is cancelled, the whole group is killed, grandchildren included. Push and pull are
//! file copies; each file is written under a temporary name and renamed when complete. Inside a
//! copied folder, symbolic links, FIFOs, sockets and device nodes are not copied but counted as
//! skipped (and logged). `reboot` is unsupported on purpose: devbatch never restarts the
//! machine it runs on.

mod device;
mod files;
mod process;

pub use device::LocalDevice;
pub use process::kill_running;

use std::sync::Arc;

use async_trait::async_trait;
use devbatch_core::{Backend, ConfigError, Device, DeviceSpec};
use serde::Deserialize;

/// The `local` backend: builds [`LocalDevice`]s from pool-file entries.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalBackend;

/// Settings of a `local` pool-file entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalSettings {
    /// Working directory of commands (default: the current directory); relative to the pool
    /// file.
    workdir: Option<std::path::PathBuf>,
}

#[async_trait]
impl Backend for LocalBackend {
    fn name(&self) -> &str {
        "local"
    }

    fn description(&self) -> &str {
        "this machine: commands run as local processes, push/pull copy files"
    }

    async fn open(&self, spec: DeviceSpec) -> Result<Vec<Arc<dyn Device>>, ConfigError> {
        let settings: LocalSettings = spec.settings()?;
        let workdir = settings.workdir.map(|dir| spec.resolve_path(&dir));
        let mut device =
            LocalDevice::new(spec.id.as_deref().unwrap_or("local")).with_labels(spec.labels);
        if let Some(dir) = workdir {
            if !dir.is_dir() {
                return Err(ConfigError::Setup(format!(
                    "workdir {} is not a directory",
                    dir.display()
                )));
            }
            device = device.with_workdir(dir);
        }
        Ok(vec![Arc::new(device)])
    }
}

devbatch_core::register_backend!(|| Arc::new(LocalBackend));
