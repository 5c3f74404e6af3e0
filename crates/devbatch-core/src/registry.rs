//! The [`Registry`] of operations and backends.
//!
//! Crates linked into the program register with [`register_operation!`](crate::register_operation)
//! and [`register_backend!`](crate::register_backend) (built on `inventory`); [`Registry::linked`]
//! collects them. A registry can also be built by hand (tests) and extended at run time (dynamic
//! plugins). Names are unique: a second registration of a name is an error naming both sources.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::device::{Device, Labels};
use crate::operation::Operation;

/// One entry of a pool file (a device, or a discovery source that yields many), as handed to
/// its [`Backend`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceSpec {
    /// The `id` the entry gives, if any.
    pub id: Option<String>,
    /// The entry's `labels`.
    pub labels: Labels,
    /// Every other key of the entry: the backend's own settings.
    pub settings: Map<String, Value>,
    /// The folder that relative paths in the settings are relative to: the pool file's
    /// folder. `None` (a spec built in code) leaves them relative to the current directory.
    pub base_dir: Option<PathBuf>,
}

impl DeviceSpec {
    /// Reads the backend's settings into its own config type. Backends should put
    /// `#[serde(deny_unknown_fields)]` on it so that a misspelt key is an error.
    /// A wrong value is named by its key (`count: invalid type: ...`).
    pub fn settings<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        serde_path_to_error::deserialize(Value::Object(self.settings.clone())).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().to_string();
            // (An unknown key's message names it already.)
            ConfigError::Settings(if key == "." || inner.starts_with("unknown field") {
                inner
            } else {
                format!("{key}: {inner}")
            })
        })
    }

    /// A path from the settings as the entry means it: `~` and `~/...` are in the home folder
    /// (`$HOME`), another relative path is joined to [`base_dir`](Self::base_dir), an absolute
    /// one is left as it is.
    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        if let Ok(rest) = path.strip_prefix("~")
            && let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty())
        {
            return PathBuf::from(home).join(rest);
        }
        match &self.base_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path.to_path_buf(),
        }
    }
}

/// A backend could not build devices from a pool-file entry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The settings do not fit the backend's config (missing, misspelt or mistyped key).
    #[error("invalid settings: {0}")]
    Settings(String),
    /// A required setting is absent.
    #[error("missing setting '{key}' ({expected})")]
    Missing {
        /// The key.
        key: String,
        /// What it should hold.
        expected: String,
    },
    /// The settings were fine but the devices could not be set up (discovery failed, a key
    /// file is unreadable, ...).
    #[error("{0}")]
    Setup(String),
}

/// A kind of device that a pool file can name with `backend = "..."`.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The name used in pool files.
    fn name(&self) -> &str;

    /// One line saying what devices it drives.
    fn description(&self) -> &str;

    /// Builds the devices one pool-file entry describes: one device for most backends, every
    /// device found for a discovery source.
    async fn open(&self, spec: DeviceSpec) -> Result<Vec<Arc<dyn Device>>, ConfigError>;
}

/// A registry could not be built or asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Two registrations share a name.
    #[error("{what} '{name}' is registered twice: by {first} and by {second}")]
    Duplicate {
        /// `operation` or `backend`.
        what: &'static str,
        /// The name (with `@backend` for backend-specific operations).
        name: String,
        /// Where the first came from.
        first: String,
        /// Where the second came from.
        second: String,
    },
    /// No backend by that name.
    #[error("unknown backend '{name}'; known backends: {}", known.join(", "))]
    UnknownBackend {
        /// The name asked for.
        name: String,
        /// Every registered backend.
        known: Vec<String>,
    },
}

/// A link-time registration of an operation; made by [`register_operation!`](crate::register_operation).
pub struct OperationRegistration {
    build: fn() -> Arc<dyn Operation>,
    source: &'static str,
}

impl OperationRegistration {
    /// A registration; `source` names where it comes from (a module path).
    pub const fn new(build: fn() -> Arc<dyn Operation>, source: &'static str) -> Self {
        OperationRegistration { build, source }
    }
}

/// A link-time registration of a backend; made by [`register_backend!`](crate::register_backend).
pub struct BackendRegistration {
    build: fn() -> Arc<dyn Backend>,
    source: &'static str,
}

impl BackendRegistration {
    /// A registration; `source` names where it comes from (a module path).
    pub const fn new(build: fn() -> Arc<dyn Backend>, source: &'static str) -> Self {
        BackendRegistration { build, source }
    }
}

inventory::collect!(OperationRegistration);
inventory::collect!(BackendRegistration);

/// Registers an operation at link time: `register_operation!(|| Arc::new(MyOp));`.
#[macro_export]
macro_rules! register_operation {
    ($build:expr) => {
        $crate::__private::inventory::submit! {
            $crate::registry::OperationRegistration::new($build, ::core::module_path!())
        }
    };
}

/// Registers a backend at link time: `register_backend!(|| Arc::new(MyBackend));`.
#[macro_export]
macro_rules! register_backend {
    ($build:expr) => {
        $crate::__private::inventory::submit! {
            $crate::registry::BackendRegistration::new($build, ::core::module_path!())
        }
    };
}

struct Entry<T: ?Sized> {
    item: Arc<T>,
    source: String,
}

impl<T: ?Sized> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Entry {
            item: self.item.clone(),
            source: self.source.clone(),
        }
    }
}

/// Operations and backends by name.
#[derive(Clone, Default)]
pub struct Registry {
    /// Keyed by (name, backend it is specific to).
    operations: BTreeMap<(String, Option<String>), Entry<dyn Operation>>,
    backends: BTreeMap<String, Entry<dyn Backend>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("operations", &self.operations.keys().collect::<Vec<_>>())
            .field("backends", &self.backends.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every operation and backend registered by crates linked into this program.
    pub fn linked() -> Result<Self, RegistryError> {
        let mut r = Registry::new();
        for reg in inventory::iter::<OperationRegistration> {
            r.add_operation((reg.build)(), reg.source)?;
        }
        for reg in inventory::iter::<BackendRegistration> {
            r.add_backend((reg.build)(), reg.source)?;
        }
        Ok(r)
    }

    /// Adds an operation; `source` says where it came from, for clash messages.
    pub fn add_operation(
        &mut self,
        op: Arc<dyn Operation>,
        source: impl Into<String>,
    ) -> Result<(), RegistryError> {
        let key = (op.name().to_string(), op.backend().map(str::to_string));
        let source = source.into();
        if let Some(existing) = self.operations.get(&key) {
            return Err(RegistryError::Duplicate {
                what: "operation",
                name: match &key.1 {
                    Some(b) => format!("{}@{b}", key.0),
                    None => key.0,
                },
                first: existing.source.clone(),
                second: source,
            });
        }
        self.operations.insert(key, Entry { item: op, source });
        Ok(())
    }

    /// Adds a backend; `source` says where it came from, for clash messages.
    pub fn add_backend(
        &mut self,
        backend: Arc<dyn Backend>,
        source: impl Into<String>,
    ) -> Result<(), RegistryError> {
        let source = source.into();
        if let Some(existing) = self.backends.get(backend.name()) {
            return Err(RegistryError::Duplicate {
                what: "backend",
                name: backend.name().to_string(),
                first: existing.source.clone(),
                second: source,
            });
        }
        self.backends.insert(
            backend.name().to_string(),
            Entry {
                item: backend,
                source,
            },
        );
        Ok(())
    }

    /// Every operation name, sorted, each once.
    pub fn operation_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.operations.keys().map(|(n, _)| n.clone()).collect();
        names.dedup();
        names
    }

    /// Whether any implementation of `name` is registered.
    pub fn has_operation(&self, name: &str) -> bool {
        self.operations.keys().any(|(n, _)| n == name)
    }

    /// Every registered operation implementation with its source, by name.
    pub fn operations(&self) -> impl Iterator<Item = (&Arc<dyn Operation>, &str)> {
        self.operations
            .values()
            .map(|e| (&e.item, e.source.as_str()))
    }

    /// The implementation of `name` for devices of `backend`: the backend's own if it has one,
    /// else the generic one.
    pub fn resolve(&self, name: &str, backend: &str) -> Option<&Arc<dyn Operation>> {
        self.operations
            .get(&(name.to_string(), Some(backend.to_string())))
            .or_else(|| self.operations.get(&(name.to_string(), None)))
            .map(|e| &e.item)
    }

    /// Some implementation of `name`: the generic one if there is one, else the first
    /// backend-specific one.
    pub fn any_implementation(&self, name: &str) -> Option<&Arc<dyn Operation>> {
        self.operations
            .get(&(name.to_string(), None))
            .or_else(|| {
                self.operations
                    .iter()
                    .find(|((n, _), _)| n == name)
                    .map(|(_, e)| e)
            })
            .map(|e| &e.item)
    }

    /// The backends that have their own implementation of `name`.
    pub fn backends_providing(&self, name: &str) -> Vec<&str> {
        self.operations
            .keys()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, b)| b.as_deref())
            .collect()
    }

    /// The backend called `name`.
    pub fn backend(&self, name: &str) -> Result<&Arc<dyn Backend>, RegistryError> {
        self.backends
            .get(name)
            .map(|e| &e.item)
            .ok_or_else(|| RegistryError::UnknownBackend {
                name: name.to_string(),
                known: self.backends.keys().cloned().collect(),
            })
    }

    /// Every registered backend with its source, by name.
    pub fn backends(&self) -> impl Iterator<Item = (&Arc<dyn Backend>, &str)> {
        self.backends.values().map(|e| (&e.item, e.source.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_are_relative_to_the_pool_file_or_home() {
        let spec = DeviceSpec {
            base_dir: Some(PathBuf::from("/etc/fleet")),
            ..DeviceSpec::default()
        };
        assert_eq!(
            spec.resolve_path(Path::new("keys/id")),
            Path::new("/etc/fleet/keys/id")
        );
        assert_eq!(spec.resolve_path(Path::new("/abs")), Path::new("/abs"));
        let home = PathBuf::from(std::env::var_os("HOME").expect("tests run with HOME set"));
        assert_eq!(spec.resolve_path(Path::new("~")), home);
        assert_eq!(spec.resolve_path(Path::new("~/x")), home.join("x"));
        // A name that only starts with `~` is an ordinary relative name.
        assert_eq!(
            spec.resolve_path(Path::new("~x")),
            Path::new("/etc/fleet/~x")
        );
        let in_code = DeviceSpec::default();
        assert_eq!(in_code.resolve_path(Path::new("rel")), Path::new("rel"));
    }
}
