//! The loader: open a library, check its declaration, let it register, add what it registered
//! to a [`Registry`].

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use devbatch_core::{Registry, RegistryError};
use serde::Serialize;

use crate::declaration::{
    CORE_VERSION, DECLARATION_SYMBOL, INTERFACE_SOURCES, LAYOUT_FINGERPRINT, MAGIC, PANIC_STRATEGY,
    PLUGIN_ABI_VERSION, PluginDeclaration, RUSTC_VERSION, TARGET,
};
use crate::foreign::Panicked;
use crate::proxy::{HostBackend, HostOperation};
use crate::registrar::PluginRegistrar;

/// The environment variable listing plugins to load: files or directories, separated like
/// `PATH` (`:` on Unix).
pub const PLUGIN_PATH_ENV: &str = "DEVBATCH_PLUGIN_PATH";

/// A plugin that was loaded, and what it added to the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadedPlugin {
    /// The name the plugin declares.
    pub name: String,
    /// The version the plugin declares.
    pub version: String,
    /// The library, as loaded (absolute, symlinks resolved).
    pub path: PathBuf,
    /// The operations it provides (`name@backend` for backend-specific ones), in the order it
    /// registered them.
    pub operations: Vec<String>,
    /// The backends it provides.
    pub backends: Vec<String>,
}

/// A plugin could not be loaded. The registry is left as it was, and the process goes on.
#[derive(Debug, thiserror::Error)]
#[error("plugin {}: {reason}", path.display())]
pub struct PluginError {
    /// The path as given.
    pub path: PathBuf,
    /// Why it was refused.
    pub reason: LoadFailure,
}

/// Why a plugin was refused. Messages are lowercase fragments naming what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadFailure {
    /// Nothing at that path.
    #[error("no such file")]
    NotFound,
    /// A directory where a library file was expected.
    #[error(
        "it is a directory, not a library (a directory in $DEVBATCH_PLUGIN_PATH loads every library in it)"
    )]
    IsDirectory,
    /// A file or directory could not be read.
    #[error("cannot read it: {0}")]
    Io(#[source] std::io::Error),
    /// The dynamic loader refused the file.
    #[error("cannot be loaded as a shared library: {0}")]
    NotALibrary(String),
    /// The library has no declaration symbol.
    #[error(
        "not a devbatch plugin: it exports no `{DECLARATION_SYMBOL}` symbol (a plugin declares itself with devbatch_plugin::export_plugin!)"
    )]
    MissingDeclaration,
    /// The declaration symbol does not start with [`MAGIC`].
    #[error(
        "not a devbatch plugin: its `{DECLARATION_SYMBOL}` does not start with the devbatch plugin magic bytes (found {found:?})"
    )]
    BadMagic {
        /// The bytes found, escaped.
        found: String,
    },
    /// The declaration symbol is too small to hold even the fixed start of a declaration.
    #[error(
        "not a devbatch plugin: its `{DECLARATION_SYMBOL}` is {size} bytes, smaller than any plugin declaration"
    )]
    TooSmall {
        /// The symbol's size.
        size: usize,
    },
    /// Another plugin ABI version.
    #[error(
        "it was built for plugin ABI version {found}, this devbatch loads version {expected}; rebuild it against devbatch-plugin {CORE_VERSION}"
    )]
    AbiVersion {
        /// The plugin's.
        found: u32,
        /// Ours.
        expected: u32,
    },
    /// The declaration's size is not the one its ABI version defines.
    #[error(
        "its declaration is corrupt: {found} bytes where plugin ABI version {PLUGIN_ABI_VERSION} defines {expected}"
    )]
    HeaderSize {
        /// The size the plugin declares.
        found: u32,
        /// The size of ours.
        expected: u32,
    },
    /// Built for another target.
    #[error("it was built for target {found}, this devbatch runs on {expected}")]
    Target {
        /// The plugin's.
        found: String,
        /// Ours.
        expected: String,
    },
    /// Built with another panic strategy.
    #[error(
        "it was built with panic={found}, this devbatch with panic={expected}; build it with the same panic strategy so that its panics can be caught"
    )]
    PanicStrategy {
        /// The plugin's.
        found: String,
        /// Ours.
        expected: String,
    },
    /// Built by another compiler.
    #[error(
        "it was built with {found}, this devbatch with {expected}; Rust has no stable ABI, so rebuild the plugin with the same compiler"
    )]
    Rustc {
        /// The plugin's.
        found: String,
        /// Ours.
        expected: String,
    },
    /// Built against another devbatch-core version.
    #[error(
        "it was built against devbatch-core {found}, this devbatch uses devbatch-core {expected}; rebuild the plugin against this version"
    )]
    CoreVersion {
        /// The plugin's.
        found: String,
        /// Ours.
        expected: String,
    },
    /// Built against other devbatch-core sources of the same version.
    #[error(
        "it was built from other sources of devbatch-core {CORE_VERSION} (interface {found}, this devbatch has {expected}); rebuild the plugin together with devbatch"
    )]
    InterfaceSources {
        /// The plugin's.
        found: String,
        /// Ours.
        expected: String,
    },
    /// The types shared with the host have other layouts in the plugin.
    #[error(
        "the types it shares with devbatch have other sizes in it (layout fingerprint {found:016x}, this devbatch has {expected:016x}): its serde_json or tokio-util resolved to other versions or features; build it in the devbatch workspace or with devbatch's Cargo.lock"
    )]
    Layout {
        /// The plugin's.
        found: u64,
        /// Ours.
        expected: u64,
    },
    /// The plugin's register function panicked.
    #[error("its register function panicked: {0}")]
    RegisterPanicked(String),
    /// An operation or backend panicked when asked its name.
    #[error("its {what} #{index} panicked while describing itself: {message}")]
    DescribePanicked {
        /// `operation` or `backend`.
        what: &'static str,
        /// Its position in registration order, from 1.
        index: usize,
        /// The panic message.
        message: String,
    },
    /// A name is already taken.
    #[error("{}", clash_message(.0))]
    Clash(RegistryError),
}

fn clash_message(e: &RegistryError) -> String {
    match e {
        RegistryError::Duplicate {
            what, name, first, ..
        } => format!("its {what} '{name}' clashes with the {what} '{name}' registered by {first}"),
        other => other.to_string(),
    }
}

/// The file name a library called `name` has on this platform: `libname.so` on Linux.
pub fn library_file_name(name: &str) -> String {
    format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// The paths listed in `$DEVBATCH_PLUGIN_PATH` (files or directories), empty entries skipped.
pub fn plugin_paths_from_env() -> Vec<PathBuf> {
    std::env::var_os(PLUGIN_PATH_ENV)
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The libraries `path` stands for: itself if it is a file, else every file in the directory
/// (not recursively) with this platform's library extension (`.so`), by name.
pub fn plugin_files(path: &Path) -> Result<Vec<PathBuf>, PluginError> {
    let fail = |reason| PluginError {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| fail(LoadFailure::Io(e)))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| fail(LoadFailure::Io(e)))?;
        let p = entry.path();
        if p.is_file() && p.extension() == Some(OsStr::new(std::env::consts::DLL_EXTENSION)) {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads every plugin `paths` name (files, or directories of libraries: see [`plugin_files`])
/// into `registry`, each library once, in order. Stops at the first plugin that cannot be
/// loaded; the plugins loaded before it stay registered.
pub fn load_plugins(
    paths: &[PathBuf],
    registry: &mut Registry,
) -> Result<Vec<LoadedPlugin>, PluginError> {
    let mut seen = HashSet::new();
    let mut loaded = Vec::new();
    for path in paths {
        for file in plugin_files(path)? {
            let key = file.canonicalize().unwrap_or_else(|_| file.clone());
            if seen.insert(key) {
                loaded.push(load_plugin(&file, registry)?);
            }
        }
    }
    Ok(loaded)
}

/// Loads the plugin library at `path` and adds its operations and backends to `registry`.
///
/// In order, and stopping at the first failure: the file is opened with `dlopen` (which runs
/// the library's initializers, as any library load does, and resolves all its symbols now);
/// its `DEVBATCH_PLUGIN_DECLARATION` symbol is found; the declaration's magic bytes, ABI version
/// and size are read on their own; then its target, panic strategy, compiler, core version,
/// interface sources and layout fingerprint are compared with this program's. Only then is the
/// plugin's register function called. If anything it registers clashes with a name already
/// in `registry` (or with each other), nothing of the plugin is added.
///
/// The library is never unloaded, whether it was accepted or refused: code from it may be
/// referenced for the rest of the process (and unloading a refused one would run its
/// destructors, code that was just judged untrustworthy).
pub fn load_plugin(path: &Path, registry: &mut Registry) -> Result<LoadedPlugin, PluginError> {
    let fail = |reason| PluginError {
        path: path.to_path_buf(),
        reason,
    };
    if !path.exists() {
        return Err(fail(LoadFailure::NotFound));
    }
    if path.is_dir() {
        return Err(fail(LoadFailure::IsDirectory));
    }
    // An absolute path, so that dlopen does not search its own library path.
    let absolute = path.canonicalize().map_err(|e| fail(LoadFailure::Io(e)))?;
    let declaration = open_and_check(&absolute).map_err(fail)?;

    let mut registrar = PluginRegistrar::new();
    (declaration.register)(&mut registrar).map_err(|m| fail(LoadFailure::RegisterPanicked(m)))?;

    let name = declaration.name.to_string_lossy();
    let version = declaration.version.to_string_lossy();
    let source: Arc<str> = format!("plugin `{name}` {version} ({})", absolute.display()).into();
    let mut trial = registry.clone();
    let mut operations = Vec::new();
    for (i, op) in registrar.operations.into_iter().enumerate() {
        let info = op.info().map_err(|Panicked(message)| {
            fail(LoadFailure::DescribePanicked {
                what: "operation",
                index: i + 1,
                message,
            })
        })?;
        operations.push(match &info.backend {
            Some(b) => format!("{}@{b}", info.name),
            None => info.name.clone(),
        });
        trial
            .add_operation(
                Arc::new(HostOperation::new(op, info, source.clone())),
                &*source,
            )
            .map_err(|e| fail(LoadFailure::Clash(e)))?;
    }
    let mut backends = Vec::new();
    for (i, backend) in registrar.backends.into_iter().enumerate() {
        let (backend_name, description) = backend.info().map_err(|Panicked(message)| {
            fail(LoadFailure::DescribePanicked {
                what: "backend",
                index: i + 1,
                message,
            })
        })?;
        backends.push(backend_name.clone());
        trial
            .add_backend(
                Arc::new(HostBackend::new(
                    backend,
                    backend_name,
                    description,
                    source.clone(),
                )),
                &*source,
            )
            .map_err(|e| fail(LoadFailure::Clash(e)))?;
    }
    *registry = trial;
    tracing::debug!(plugin = %name, %version, path = %absolute.display(), ?operations, ?backends, "plugin loaded");
    Ok(LoadedPlugin {
        name,
        version,
        path: absolute,
        operations,
        backends,
    })
}

/// The bytes every declaration starts with, in any ABI version: magic, ABI version, size.
const PREFIX_SIZE: usize = 24;

/// Opens the library and checks its declaration; calls nothing in it.
fn open_and_check(path: &Path) -> Result<&'static PluginDeclaration, LoadFailure> {
    let library = open(path)?;
    // SAFETY: the symbol is looked up as an opaque address (`*const u8`): `get` only calls
    // `dlsym`, and nothing is read through the address here.
    let symbol = unsafe { library.get::<*const u8>(DECLARATION_SYMBOL.as_bytes()) }
        .map_err(|_| LoadFailure::MissingDeclaration)?;
    let address = symbol.into_raw() as *const u8;
    if address.is_null() {
        return Err(LoadFailure::MissingDeclaration);
    }

    // Every declaration, of any ABI version, starts with 16 magic bytes, a u32 ABI version and
    // a u32 size: 24 bytes. A symbol of that name that is smaller is something else.
    let symbol_size = crate::symbol::size_at(address);
    if let Some(size) = symbol_size
        && size < PREFIX_SIZE
    {
        return Err(LoadFailure::TooSmall { size });
    }
    // SAFETY: `address` is the address of a symbol in a library that stays mapped for the rest
    // of the process (leaked above), and the symbol is at least 24 bytes long (checked above
    // where the platform tells symbol sizes; elsewhere a smaller symbol of that name would
    // still be followed by more of the library's mapped, readable sections in practice). The
    // reads are unaligned byte copies, valid for any bit pattern. Nothing else is read until
    // the magic bytes, version and size match.
    let (magic, abi_version, header_size) = unsafe {
        (
            std::ptr::read_unaligned(address.cast::<[u8; 16]>()),
            std::ptr::read_unaligned(address.add(16).cast::<u32>()),
            std::ptr::read_unaligned(address.add(20).cast::<u32>()),
        )
    };
    if magic != MAGIC {
        return Err(LoadFailure::BadMagic {
            found: magic.escape_ascii().to_string(),
        });
    }
    if abi_version != PLUGIN_ABI_VERSION {
        return Err(LoadFailure::AbiVersion {
            found: abi_version,
            expected: PLUGIN_ABI_VERSION,
        });
    }
    let expected_size = std::mem::size_of::<PluginDeclaration>() as u32;
    if header_size != expected_size
        || symbol_size.is_some_and(|s| s < expected_size as usize)
        || !address.cast::<PluginDeclaration>().is_aligned()
    {
        return Err(LoadFailure::HeaderSize {
            found: header_size,
            expected: expected_size,
        });
    }
    // SAFETY: the magic, ABI version and size say this is a `PluginDeclaration` of our layout
    // (`repr(C)`, fixed across compilers for this ABI version: byte arrays, integers and one
    // function pointer), the address is aligned for it, and the library is never unloaded, so
    // the reference is valid for `'static`. Reading its fields calls no plugin code.
    let declaration: &'static PluginDeclaration = unsafe { &*address.cast::<PluginDeclaration>() };
    check(declaration)?;
    Ok(declaration)
}

/// Compares the declaration's build facts with this program's.
fn check(d: &PluginDeclaration) -> Result<(), LoadFailure> {
    let target = d.target.to_string_lossy();
    if target != TARGET {
        return Err(LoadFailure::Target {
            found: target,
            expected: TARGET.into(),
        });
    }
    let panic = d.panic_strategy.to_string_lossy();
    if panic != PANIC_STRATEGY {
        return Err(LoadFailure::PanicStrategy {
            found: panic,
            expected: PANIC_STRATEGY.into(),
        });
    }
    let rustc = d.rustc_version.to_string_lossy();
    if rustc != RUSTC_VERSION {
        return Err(LoadFailure::Rustc {
            found: rustc,
            expected: RUSTC_VERSION.into(),
        });
    }
    let core = d.core_version.to_string_lossy();
    if core != CORE_VERSION {
        return Err(LoadFailure::CoreVersion {
            found: core,
            expected: CORE_VERSION.into(),
        });
    }
    // Only comparable when both sides were built in a workspace that has the core sources.
    let sources = d.interface_sources.to_string_lossy();
    if !sources.is_empty() && !INTERFACE_SOURCES.is_empty() && sources != INTERFACE_SOURCES {
        return Err(LoadFailure::InterfaceSources {
            found: sources,
            expected: INTERFACE_SOURCES.into(),
        });
    }
    if d.layout_fingerprint != LAYOUT_FINGERPRINT {
        return Err(LoadFailure::Layout {
            found: d.layout_fingerprint,
            expected: LAYOUT_FINGERPRINT,
        });
    }
    Ok(())
}

/// Opens a library and leaks it: it stays loaded for the life of the process.
fn open(path: &Path) -> Result<&'static libloading::os::unix::Library, LoadFailure> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: loading a library runs its initializers, which is the one thing that cannot be
    // checked beforehand; a devbatch plugin's are those of a Rust cdylib (its std's and any
    // `ctor`s of its dependencies). RTLD_NOW resolves every symbol now, so a library missing a
    // symbol fails here rather than when a function is first called; RTLD_LOCAL keeps its
    // symbols out of the global namespace, so two plugins (or a plugin and the host) never
    // bind to each other's symbols. The library is never closed, so its termination routines
    // do not run while the process lives.
    let library = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
        .map_err(|e| LoadFailure::NotALibrary(dl_message(&e)))?;
    Ok(Box::leak(Box::new(library)))
}

/// The loader's own words: the innermost error of libloading's chain.
fn dl_message(e: &libloading::Error) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(source) = inner.source() {
        inner = source;
    }
    inner.to_string()
}
