//! [`SshDevice`]: one SSH target as a devbatch device.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use devbatch_core::{
    Capability, Command, CommandOutput, Device, DeviceError, Labels, RebootMode, TransferStats,
};

use crate::config::Target;
use crate::connect::{self, Connection};
use crate::error::SshError;
use crate::{exec, sftp};

/// One SSH target. Cheap to hold: the connection is made on first use and shared through a
/// process-wide cache, so every operation and batch in the process reuses it.
#[derive(Debug, Clone)]
pub struct SshDevice {
    id: String,
    labels: Labels,
    target: Arc<Target>,
}

const CAPABILITIES: &[Capability] = &[
    Capability::Exec,
    Capability::Push,
    Capability::Pull,
    Capability::Reboot,
];

impl SshDevice {
    pub(crate) fn new(id: String, labels: Labels, target: Target) -> Self {
        SshDevice {
            id,
            labels,
            target: Arc::new(target),
        }
    }

    /// `host:port` of the target (after `~/.ssh/config` resolution).
    pub fn address(&self) -> String {
        self.target.hop.display()
    }

    /// The SHA256 fingerprint of the host key, connecting first if needed.
    pub async fn host_key_fingerprint(&self) -> Result<String, DeviceError> {
        Ok(self.connection().await?.host_key.clone())
    }

    async fn connection(&self) -> Result<Arc<Connection>, SshError> {
        connect::get(&self.target).await
    }

    /// Runs `f` on the connection; when it fails because the connection broke, forgets the
    /// connection so that the next operation reconnects.
    async fn with_connection<T, F, Fut>(&self, f: F) -> Result<T, DeviceError>
    where
        F: FnOnce(Arc<Connection>) -> Fut,
        Fut: Future<Output = Result<T, SshError>>,
    {
        let conn = self.connection().await?;
        let result = f(conn.clone()).await;
        if let Err(e) = &result
            && (e.is_link_failure() || conn.is_closed())
        {
            connect::forget(&self.target, &conn);
        }
        result.map_err(DeviceError::from)
    }
}

#[async_trait]
impl Device for SshDevice {
    fn id(&self) -> &str {
        &self.id
    }

    fn backend(&self) -> &str {
        "ssh"
    }

    fn labels(&self) -> &Labels {
        &self.labels
    }

    fn capabilities(&self) -> &[Capability] {
        CAPABILITIES
    }

    async fn run(&self, command: &Command) -> Result<CommandOutput, DeviceError> {
        self.with_connection(|conn| async move { exec::run(&conn, command).await })
            .await
    }

    async fn push(&self, local: &Path, remote: &str) -> Result<TransferStats, DeviceError> {
        self.with_connection(|conn| async move { sftp::push(&conn, local, remote).await })
            .await
    }

    async fn pull(&self, remote: &str, local: &Path) -> Result<TransferStats, DeviceError> {
        self.with_connection(|conn| async move { sftp::pull(&conn, remote, local).await })
            .await
    }

    /// Reboots with `reboot` as root, else `sudo -n reboot` (never prompts: a password-protected
    /// sudo fails with its own message). With `wait`, polls until the host answers again with
    /// a new boot id.
    async fn reboot(&self, mode: RebootMode, wait: bool) -> Result<(), DeviceError> {
        if mode != RebootMode::System {
            return Err(DeviceError::Unsupported(format!(
                "SSH hosts reboot into the normal system only, not {mode:?}"
            )));
        }
        const BOOT_ID: &str = "cat /proc/sys/kernel/random/boot_id 2>/dev/null || true";
        let before = if wait {
            let out = self.run(&Command::shell(BOOT_ID)).await?;
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        } else {
            String::new()
        };
        let line = "if [ \"$(id -u)\" = 0 ]; then reboot; else sudo -n reboot; fi";
        match self.run(&Command::shell(line)).await {
            Ok(out) if out.exit_code != 0 => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                return Err(DeviceError::Failed(format!(
                    "reboot exited with status {}: {}",
                    out.exit_code,
                    stderr.trim()
                )));
            }
            Ok(_) => {}
            // The host may drop the link before it reports the command's end.
            Err(e) if e.kind() == devbatch_core::ErrorKind::Disconnected => {}
            Err(e) => return Err(e),
        }
        connect::close(&self.target).await;
        if !wait {
            return Ok(());
        }
        // Give the host time to go down, then poll until it is back with a new boot id. The
        // engine's timeout bounds the whole wait.
        tokio::time::sleep(Duration::from_secs(3)).await;
        loop {
            if let Ok(out) = self.run(&Command::shell(BOOT_ID)).await {
                let now = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if now != before || before.is_empty() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    async fn close(&self) {
        connect::close(&self.target).await;
    }
}
