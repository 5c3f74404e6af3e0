//! Dynamic plugins for devbatch: operations and backends loaded from shared libraries at run
//! time, next to the ones linked into the program.
//!
//! # Why it looks this way
//!
//! Rust has no stable ABI. A plugin hands the host trait objects, `Arc`s, `String`s and
//! `serde_json::Value`s, whose layouts and calling conventions are only the same on both sides
//! when both were compiled by the same compiler build, for the same target, against the same
//! sources of the shared crates. A loader that trusts a library blindly turns any mismatch into
//! memory corruption far from its cause. So this crate splits a plugin in two:
//!
//! * a **declaration**, the one exported symbol `DEVBATCH_PLUGIN_DECLARATION`: a `#[repr(C)]`
//!   [`PluginDeclaration`] made of magic bytes, the plugin ABI version, the header's size, and
//!   fixed-size strings naming the rustc build, the target, the panic strategy, the
//!   devbatch-core version and sources, plus a fingerprint of the shared types' layouts. Its
//!   layout does not depend on the compiler, and reading it runs no plugin code;
//! * a **register function** the declaration points to, called only once every check passed
//!   — so by then the Rust ABI is the same on both sides, and the plugin can register ordinary
//!   [`Operation`](devbatch_core::Operation)s and [`Backend`](devbatch_core::Backend)s.
//!
//! [`export_plugin!`] writes both for the plugin author; [`load_plugin`] reads them.
//!
//! # Panics never cross the boundary
//!
//! A plugin carries its own copy of the standard library. A panic raised by one copy cannot be
//! caught by the other: the unwinder sees a foreign exception and aborts the process. So every
//! object a plugin registers is wrapped, inside the plugin, in a guard that catches panics
//! (`catch_unwind` compiled into the plugin); the host receives them as values and raises them
//! again as host panics, which the batch engine turns into a `panicked` outcome for that
//! device. In the other direction, a host device lent to a plugin operation is shielded the
//! same way. A register function that panics is a load error.
//!
//! # What plugin code may rely on
//!
//! * The [`devbatch_core`] types it receives and returns, exactly as linked crates do.
//! * Its statics are its own: it has its own copy of every crate, so the host's globals are
//!   invisible to it. In particular:
//!   - **tokio**: the host's runtime polls the plugin's futures, but the plugin's copy of tokio
//!     does not know it: `Handle::current()` panics, and `tokio::net`, `process`, `fs`, `time`
//!     and `spawn` panic with "no reactor running". `tokio::sync` works. A backend that does
//!     I/O runs it on its own [`PluginRuntime`] (see the `dir` example plugin).
//!   - **tracing**: the plugin's events go to its own dispatcher, which has no subscriber;
//!     report through results and errors instead.
//!   - **inventory**: `register_operation!`/`register_backend!` in a plugin register into the
//!     plugin's own copy, which nobody reads; use the [`PluginRegistrar`].
//! * Memory crosses the boundary in both directions: host and plugin must use the same global
//!   allocator, the system one (neither may set `#[global_allocator]`).
//! * The library stays loaded until the process ends; `'static` data in it stays valid.
//! * A plugin cannot downcast devices (`downcast_ref`): the devices it is lent are wrappers.
//!
//! See `docs/plugins.md` for writing a plugin step by step.

#![allow(unsafe_code)]

mod declaration;
pub mod foreign;
mod loader;
mod proxy;
mod registrar;
mod runtime;
mod symbol;

pub use declaration::{
    CORE_VERSION, DECLARATION_SYMBOL, FixedStr, INTERFACE_SOURCES, LAYOUT_FINGERPRINT, MAGIC,
    PANIC_STRATEGY, PLUGIN_ABI_VERSION, PluginDeclaration, RUSTC_VERSION, RegisterFn, TARGET,
};
pub use loader::{
    LoadFailure, LoadedPlugin, PLUGIN_PATH_ENV, PluginError, library_file_name, load_plugin,
    load_plugins, plugin_files, plugin_paths_from_env,
};
pub use registrar::PluginRegistrar;
pub use runtime::PluginRuntime;

/// Used by [`export_plugin!`]; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::registrar::call_register;
}
