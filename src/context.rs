//! What every command needs: the registry (linked crates plus plugins), the pool and the
//! pool file's defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use devbatch_core::{BatchOperationManager, DevicePool, Registry};
use devbatch_plugin::LoadedPlugin;

use crate::error::CliError;
use crate::pool_file::{self, Defaults, PoolFile};

pub(crate) struct Context {
    manager: BatchOperationManager,
    pub defaults: Defaults,
    pub plugins: Vec<LoadedPlugin>,
    /// Where the pool came from, for messages.
    pub pool_source: String,
    /// The pool file, when there is one.
    pub pool_path: Option<PathBuf>,
}

impl Context {
    /// Reads the pool file and loads plugins; builds the devices only when `with_devices` (the
    /// commands that list operations or plugins need no device, nor the servers behind them).
    pub(crate) async fn load(
        pool: Option<&Path>,
        cli_plugins: &[PathBuf],
        connect_timeout: Option<Duration>,
        with_devices: bool,
    ) -> Result<Self, CliError> {
        let mut registry = Registry::linked().map_err(|e| CliError::Usage(e.to_string()))?;
        let file = pool_file::find(pool)
            .map(|p| PoolFile::read(&p))
            .transpose()?;
        // Plugins first: they may provide backends the pool file names. `--plugin` names a
        // library; a folder would silently load whatever it holds, or nothing.
        if let Some(dir) = cli_plugins.iter().find(|p| p.is_dir()) {
            return Err(CliError::Plugin(format!(
                "--plugin {}: it is a folder, not a library (put folders in $DEVBATCH_PLUGIN_PATH, which loads every library in them)",
                dir.display()
            )));
        }
        let mut plugin_paths: Vec<PathBuf> = cli_plugins.to_vec();
        plugin_paths.extend(devbatch_plugin::plugin_paths_from_env());
        if let Some(f) = &file {
            plugin_paths.extend(f.plugins.iter().cloned());
        }
        let plugins = devbatch_plugin::load_plugins(&plugin_paths, &mut registry)
            .map_err(|e| CliError::Plugin(e.to_string()))?;
        let mut defaults = file
            .as_ref()
            .map(|f| f.defaults.clone())
            .unwrap_or_default();
        if connect_timeout.is_some() {
            defaults.connect_timeout = connect_timeout;
        }
        let (pool, pool_source) = match &file {
            _ if !with_devices => (DevicePool::new(), "no pool (not needed)".to_string()),
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
            pool_path: file.map(|f| f.path().to_path_buf()),
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
