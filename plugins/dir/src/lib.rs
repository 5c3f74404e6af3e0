//! A backend plugin: `dir` devices. Each device is a directory of this machine used as the
//! device's root — a staging area to try deployment scripts on, or many cheap "devices" for a
//! dry run of a batch:
//!
//! ```toml
//! plugins = ["../target/debug/libdevbatch_dir.so"]
//!
//! [[devices]]
//! backend = "dir"
//! id = "stage-1"                 # default: the root directory's name
//! root = "/srv/stage-1"          # required
//! create = true                  # create the root if missing (default: false)
//! env = { APP_ENV = "staging" }  # extra environment for commands (default: none)
//! labels = { tier = "staging" }
//! ```
//!
//! * Commands run in the root, through `/bin/sh -c` or as an argv, with `HOME`,
//!   `DEVBATCH_DEVICE_ID` and `DEVBATCH_DEVICE_ROOT` set, in their own process group, which is
//!   killed when the command is dropped (timeout, cancellation).
//! * Device paths are inside the root: `/etc/app.conf` and `etc/app.conf` are both
//!   `<root>/etc/app.conf`; a path with `..` is refused. This keeps transfers in the root, but
//!   it is not a security boundary: commands run as the user, and may go anywhere.
//! * Push and pull write a temporary sibling and rename it into place, so an interrupted
//!   transfer leaves nothing under the final name.
//!
//! # How it does I/O
//!
//! This library has its own copy of tokio, whose runtime context the host's runtime never sets:
//! `tokio::process` or `tokio::fs` called directly from the futures the host polls would panic
//! with "no reactor running". So every device method hands its work to the plugin's own
//! runtime ([`PluginRuntime`]) and awaits the result; dropping the method's future aborts the
//! work there (and the process group dies with it).

mod files;
mod process;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use devbatch_core::{
    Backend, Capability, Command, CommandOutput, ConfigError, Device, DeviceError, DeviceSpec,
    DeviceState, Labels, TransferStats,
};
use devbatch_plugin::{PluginRegistrar, PluginRuntime};
use serde::Deserialize;

devbatch_plugin::export_plugin!("dir", env!("CARGO_PKG_VERSION"), register);

fn register(registrar: &mut PluginRegistrar) {
    registrar.add_backend(DirBackend);
}

/// The plugin's runtime: all of its I/O runs here.
static IO: PluginRuntime = PluginRuntime::new("devbatch-dir-io", 1);

/// The `dir` backend.
struct DirBackend;

/// Settings of a `dir` pool-file entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirSettings {
    /// The device's root directory.
    root: PathBuf,
    /// Create the root when it does not exist.
    #[serde(default)]
    create: bool,
    /// Extra environment variables for commands.
    #[serde(default)]
    env: BTreeMap<String, String>,
}

#[async_trait]
impl Backend for DirBackend {
    fn name(&self) -> &str {
        "dir"
    }

    fn description(&self) -> &str {
        "directories of this machine as devices: commands run in the root, paths are inside it"
    }

    async fn open(&self, spec: DeviceSpec) -> Result<Vec<Arc<dyn Device>>, ConfigError> {
        let settings: DirSettings = spec.settings()?;
        if !settings.root.is_absolute() {
            return Err(ConfigError::Settings(format!(
                "root {} must be an absolute path",
                settings.root.display()
            )));
        }
        if !settings.root.is_dir() {
            if settings.create {
                std::fs::create_dir_all(&settings.root).map_err(|e| {
                    ConfigError::Setup(format!("cannot create {}: {e}", settings.root.display()))
                })?;
            } else {
                return Err(ConfigError::Setup(format!(
                    "root {} is not a directory (set create = true to create it)",
                    settings.root.display()
                )));
            }
        }
        let id = match spec.id {
            Some(id) => id,
            None => settings
                .root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| ConfigError::Missing {
                    key: "id".into(),
                    expected: "a device id (the root / has no name to use)".into(),
                })?,
        };
        Ok(vec![Arc::new(DirDevice {
            id,
            labels: spec.labels,
            root: settings.root,
            env: settings.env,
        })])
    }
}

/// A directory used as a device.
#[derive(Debug)]
struct DirDevice {
    id: String,
    labels: Labels,
    root: PathBuf,
    env: BTreeMap<String, String>,
}

impl DirDevice {
    /// The local path of a device path: inside the root, `..` refused.
    fn resolve(&self, remote: &str) -> Result<PathBuf, DeviceError> {
        let mut path = self.root.clone();
        for component in Path::new(remote).components() {
            match component {
                Component::Normal(c) => path.push(c),
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(DeviceError::InvalidInput(format!(
                        "device path {remote:?} uses `..`; paths of dir devices stay inside the root"
                    )));
                }
            }
        }
        if path == self.root {
            return Err(DeviceError::InvalidInput(format!(
                "device path {remote:?} is the root itself; name a file or directory in it"
            )));
        }
        Ok(path)
    }
}

#[async_trait]
impl Device for DirDevice {
    fn id(&self) -> &str {
        &self.id
    }

    fn backend(&self) -> &str {
        "dir"
    }

    fn labels(&self) -> &Labels {
        &self.labels
    }

    fn capabilities(&self) -> &[Capability] {
        &[Capability::Exec, Capability::Push, Capability::Pull]
    }

    fn state(&self) -> DeviceState {
        if self.root.is_dir() {
            DeviceState::Ready
        } else {
            DeviceState::NotReady {
                state: "missing".into(),
                hint: format!("create the directory {}", self.root.display()),
            }
        }
    }

    async fn run(&self, command: &Command) -> Result<CommandOutput, DeviceError> {
        let command = command.clone();
        let mut env = self.env.clone();
        env.insert("HOME".into(), self.root.display().to_string());
        env.insert("DEVBATCH_DEVICE_ID".into(), self.id.clone());
        env.insert(
            "DEVBATCH_DEVICE_ROOT".into(),
            self.root.display().to_string(),
        );
        let root = self.root.clone();
        IO.spawn(async move { process::run(&command, &root, &env).await })
            .await?
    }

    async fn push(&self, local: &Path, remote: &str) -> Result<TransferStats, DeviceError> {
        let src = local.to_path_buf();
        let dst = self.resolve(remote)?;
        let remote = remote.to_string();
        IO.spawn(async move {
            files::copy_atomically(&src, &dst)
                .await
                .map_err(|e| e.into_device_error(&format!("push {} to {remote}", src.display())))
        })
        .await?
    }

    async fn pull(&self, remote: &str, local: &Path) -> Result<TransferStats, DeviceError> {
        let src = self.resolve(remote)?;
        let dst = local.to_path_buf();
        let remote = remote.to_string();
        IO.spawn(async move {
            files::copy_atomically(&src, &dst)
                .await
                .map_err(|e| e.into_device_error(&format!("pull {remote} to {}", dst.display())))
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> DirDevice {
        DirDevice {
            id: "d".into(),
            labels: Labels::new(),
            root: PathBuf::from("/srv/d"),
            env: BTreeMap::new(),
        }
    }

    #[test]
    fn device_paths_stay_in_the_root() {
        let d = device();
        assert_eq!(
            d.resolve("/etc/app.conf").unwrap(),
            Path::new("/srv/d/etc/app.conf")
        );
        assert_eq!(
            d.resolve("etc/./app.conf").unwrap(),
            Path::new("/srv/d/etc/app.conf")
        );
        let e = d.resolve("/etc/../../x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid input: device path \"/etc/../../x\" uses `..`; paths of dir devices stay inside the root"
        );
        assert!(
            d.resolve("/")
                .unwrap_err()
                .to_string()
                .contains("is the root itself")
        );
    }
}
