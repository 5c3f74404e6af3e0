//! What every command needs: the registry (linked crates plus plugins), the pool and the
//! pool file's defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use devbatch_core::{BatchOperationManager, DevicePool, Registry};

use crate::error::CliError;
use crate::pool_file::{self, Defaults, PoolFile};

/// A loaded plugin, for `devbatch plugins`.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct PluginInfo {
    pub name: String,
    pub version: String,
    pub path: PathBuf,
    pub operations: Vec<String>,
    pub backends: Vec<String>,
}

pub(crate) struct Context {
    manager: BatchOperationManager,
    pub defaults: Defaults,
    pub plugins: Vec<PluginInfo>,
    /// Where the pool came from, for messages.
    pub pool_source: String,
}

impl Context {
    pub(crate) async fn load(
        pool: Option<&Path>,
        cli_plugins: &[PathBuf],
        connect_timeout: Option<Duration>,
    ) -> Result<Self, CliError> {
        let mut registry = Registry::linked().map_err(|e| CliError::Usage(e.to_string()))?;
        let file = pool_file::find(pool)
            .map(|p| PoolFile::read(&p))
            .transpose()?;
        let mut plugin_paths: Vec<PathBuf> = cli_plugins.to_vec();
        if let Some(var) = std::env::var_os("DEVBATCH_PLUGIN_PATH") {
            plugin_paths.extend(std::env::split_paths(&var).filter(|p| !p.as_os_str().is_empty()));
        }
        if let Some(f) = &file {
            plugin_paths.extend(f.plugins.iter().cloned());
        }
        let plugins = load_plugins(&plugin_paths, &mut registry)?;
        let mut defaults = file
            .as_ref()
            .map(|f| f.defaults.clone())
            .unwrap_or_default();
        if connect_timeout.is_some() {
            defaults.connect_timeout = connect_timeout;
        }
        let (pool, pool_source) = match &file {
            Some(f) => (
                f.build(&registry, &defaults).await?,
                format!("pool file {}", f.path().display()),
            ),
            None => (
                pool_file::embedded_default(&registry, &defaults).await?,
                "the embedded default pool".to_string(),
            ),
        };
        let manager = BatchOperationManager::with_registry(pool, registry);
        Ok(Context {
            manager,
            defaults,
            plugins,
            pool_source,
        })
    }

    pub(crate) fn manager(&self) -> &BatchOperationManager {
        &self.manager
    }

    pub(crate) fn pool(&self) -> &DevicePool {
        self.manager.pool()
    }

    pub(crate) fn registry(&self) -> &Registry {
        self.manager.registry()
    }
}

/// Loads plugin libraries (files, or every library in a directory) into the registry.
fn load_plugins(paths: &[PathBuf], _registry: &mut Registry) -> Result<Vec<PluginInfo>, CliError> {
    match paths.first() {
        None => Ok(Vec::new()),
        Some(p) => Err(CliError::Plugin(format!(
            "cannot load plugin {}: this build has no plugin loader yet",
            p.display()
        ))),
    }
}
