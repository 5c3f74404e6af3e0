//! The one symbol a plugin exports: [`PluginDeclaration`], a `#[repr(C)]` header the loader
//! reads and checks before it calls anything in the library.

use std::fmt;
use std::mem::{align_of, size_of};
use std::sync::Arc;
use std::time::Duration;

use crate::registrar::PluginRegistrar;

/// The name of the symbol every plugin exports, as written in the library's symbol table.
pub const DECLARATION_SYMBOL: &str = "DEVBATCH_PLUGIN_DECLARATION";

/// The first bytes of every declaration. A symbol of the right name that does not start with
/// them is not a devbatch plugin declaration (or is corrupt).
pub const MAGIC: [u8; 16] = *b"devbatch-plugin\0";

/// The version of the declaration layout and of the boundary traits. It changes whenever
/// [`PluginDeclaration`] (after its first three fields, which never move) or the traits in
/// [`crate::foreign`] change, so that a plugin built against another layout is refused before
/// any other field is read.
pub const PLUGIN_ABI_VERSION: u32 = 1;

/// The compiler this crate was built with: the first line of `rustc -vV` plus its commit hash.
pub const RUSTC_VERSION: &str = env!("DEVBATCH_RUSTC_VERSION");

/// The target triple this crate was built for.
pub const TARGET: &str = env!("DEVBATCH_TARGET");

/// The version of `devbatch-core` this crate was built against.
pub const CORE_VERSION: &str = devbatch_core::VERSION;

/// A hash of the sources of the boundary types (this crate's and `devbatch-core`'s) when built
/// inside the devbatch workspace; empty otherwise. See the build script.
pub const INTERFACE_SOURCES: &str = env!("DEVBATCH_INTERFACE_SOURCES");

/// How this build handles panics: `unwind` or `abort`. A plugin must unwind like its host:
/// with `abort`, a panic in plugin code would end the process before anything could catch it.
pub const PANIC_STRATEGY: &str = if cfg!(panic = "unwind") {
    "unwind"
} else {
    "abort"
};

/// Sizes and alignments of the types that cross the plugin boundary, hashed.
///
/// The compiler and core versions already pin these, but the types' dependencies (serde_json,
/// tokio-util) are compiled separately for the host and for each plugin, with the features
/// each build selects: `serde_json/preserve_order` turns every JSON object from a `BTreeMap`
/// into an `IndexMap`. This check refuses such a plugin instead of letting it read a map with
/// the wrong layout.
pub const LAYOUT_FINGERPRINT: u64 = layout_fingerprint();

const fn layout_fingerprint() -> u64 {
    use devbatch_core as core;
    let layouts: [(usize, usize); 28] = [
        layout::<serde_json::Value>(),
        layout::<serde_json::Number>(),
        layout::<serde_json::Map<String, serde_json::Value>>(),
        layout::<core::Params>(),
        layout::<core::OperationContext>(),
        layout::<tokio_util::sync::CancellationToken>(),
        layout::<core::ParamSpec>(),
        layout::<core::ParamType>(),
        layout::<core::Command>(),
        layout::<core::Program>(),
        layout::<core::CommandOutput>(),
        layout::<core::DeviceError>(),
        layout::<core::OperationFailure>(),
        layout::<core::OperationError>(),
        layout::<core::ConfigError>(),
        layout::<core::DeviceSpec>(),
        layout::<core::Labels>(),
        layout::<core::DeviceState>(),
        layout::<core::TransferStats>(),
        layout::<core::RebootMode>(),
        layout::<core::Capability>(),
        layout::<Duration>(),
        layout::<std::io::Error>(),
        layout::<Arc<dyn core::Device>>(),
        layout::<Result<serde_json::Value, core::OperationFailure>>(),
        layout::<PluginRegistrar>(),
        layout::<crate::foreign::OperationInfo>(),
        layout::<crate::foreign::DeviceInfo>(),
    ];
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < layouts.len() {
        hash = fnv_usize(hash, layouts[i].0);
        hash = fnv_usize(hash, layouts[i].1);
        i += 1;
    }
    hash
}

const fn layout<T>() -> (usize, usize) {
    (size_of::<T>(), align_of::<T>())
}

const fn fnv_usize(mut hash: u64, value: usize) -> u64 {
    let bytes = (value as u64).to_le_bytes();
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// A NUL-padded string of at most `N - 1` bytes in a fixed-size field.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FixedStr<const N: usize>([u8; N]);

impl<const N: usize> FixedStr<N> {
    /// Stores `s`. Fails to compile (in a `const`) or panics if `s` does not fit with its NUL.
    pub const fn new(s: &str) -> Self {
        let bytes = s.as_bytes();
        assert!(
            bytes.len() < N,
            "string too long for its fixed-size declaration field"
        );
        let mut out = [0u8; N];
        let mut i = 0;
        while i < bytes.len() {
            out[i] = bytes[i];
            i += 1;
        }
        FixedStr(out)
    }

    /// The text up to the first NUL (the whole field if there is none), with invalid UTF-8
    /// replaced.
    pub fn to_string_lossy(&self) -> String {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(N);
        String::from_utf8_lossy(&self.0[..end]).into_owned()
    }
}

impl<const N: usize> fmt::Debug for FixedStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string_lossy(), f)
    }
}

/// The function a plugin's declaration points to. It fills the registrar and returns `Err`
/// with the panic message if the plugin's own register function panicked.
///
/// # Why the Rust ABI
///
/// The pointer is only read and called after the loader has checked that the plugin was built
/// by the same compiler build, for the same target, against the same `devbatch-core`, with the
/// same layouts of the boundary types: exactly the conditions under which the Rust ABI, and the
/// layout of `&mut PluginRegistrar`, `Result` and `String`, are the same on both sides. An
/// `extern "C"` signature would not make the rest of the exchange (trait objects, `Arc`s,
/// `serde_json::Value`s) any less Rust-specific, so the gate is what makes all of it sound.
/// The function never unwinds: [`export_plugin!`](crate::export_plugin) catches panics inside
/// the plugin, because a panic raised by the plugin's copy of the standard library cannot be
/// caught by the host's copy (the unwinder treats it as a foreign exception and aborts).
pub type RegisterFn = fn(&mut PluginRegistrar) -> Result<(), String>;

/// The header a plugin exports under [`DECLARATION_SYMBOL`]; written by
/// [`export_plugin!`](crate::export_plugin).
///
/// Layout rules: `magic`, `abi_version` and `header_size` come first and never move, in any
/// ABI version, so that any loader can read them safely; the loader reads nothing else until
/// they match its own. The strings are fixed-size, NUL-padded byte arrays (no pointers to
/// follow), so reading them runs no plugin code.
#[repr(C)]
#[derive(Debug)]
pub struct PluginDeclaration {
    /// Always [`MAGIC`].
    pub magic: [u8; 16],
    /// [`PLUGIN_ABI_VERSION`] of the `devbatch-plugin` the plugin was built with.
    pub abi_version: u32,
    /// `size_of::<PluginDeclaration>()` as the plugin saw it.
    pub header_size: u32,
    /// [`RUSTC_VERSION`] as the plugin saw it.
    pub rustc_version: FixedStr<160>,
    /// [`TARGET`] as the plugin saw it.
    pub target: FixedStr<64>,
    /// [`PANIC_STRATEGY`] of the plugin's build.
    pub panic_strategy: FixedStr<16>,
    /// [`CORE_VERSION`] as the plugin saw it.
    pub core_version: FixedStr<32>,
    /// [`INTERFACE_SOURCES`] as the plugin saw it.
    pub interface_sources: FixedStr<32>,
    /// [`LAYOUT_FINGERPRINT`] as the plugin saw it.
    pub layout_fingerprint: u64,
    /// The plugin's name, shown by `devbatch plugins` and in clash messages.
    pub name: FixedStr<64>,
    /// The plugin's version.
    pub version: FixedStr<32>,
    /// Called once, after every check passed, to register the plugin's operations and backends.
    pub register: RegisterFn,
}

impl PluginDeclaration {
    /// A declaration of this build: every check field filled from the constants of this
    /// crate. Use [`export_plugin!`](crate::export_plugin) rather than calling it.
    pub const fn new(name: &str, version: &str, register: RegisterFn) -> Self {
        PluginDeclaration {
            magic: MAGIC,
            abi_version: PLUGIN_ABI_VERSION,
            header_size: size_of::<PluginDeclaration>() as u32,
            rustc_version: FixedStr::new(RUSTC_VERSION),
            target: FixedStr::new(TARGET),
            panic_strategy: FixedStr::new(PANIC_STRATEGY),
            core_version: FixedStr::new(CORE_VERSION),
            interface_sources: FixedStr::new(INTERFACE_SOURCES),
            layout_fingerprint: LAYOUT_FINGERPRINT,
            name: FixedStr::new(name),
            version: FixedStr::new(version),
            register,
        }
    }
}

/// Exports a plugin: writes the [`PluginDeclaration`] symbol for a plugin called `$name` at
/// version `$version`, whose `$register` function adds its operations and backends.
///
/// ```
/// # use std::time::Duration;
/// # use devbatch_core::*;
/// # struct DiskUsage;
/// # #[async_trait::async_trait]
/// # impl Operation for DiskUsage {
/// #     fn name(&self) -> &str { "disk_usage" }
/// #     fn description(&self) -> &str { "" }
/// #     fn params(&self) -> Vec<ParamSpec> { Vec::new() }
/// #     fn idempotent(&self) -> bool { true }
/// #     fn default_timeout(&self) -> Duration { Duration::from_secs(1) }
/// #     async fn execute(&self, _: &dyn Device, _: &Params, _: &OperationContext)
/// #         -> Result<serde_json::Value, OperationFailure> { Ok(serde_json::Value::Null) }
/// # }
/// fn register(registrar: &mut devbatch_plugin::PluginRegistrar) {
///     registrar.add_operation(DiskUsage);
/// }
/// devbatch_plugin::export_plugin!("disk_usage", env!("CARGO_PKG_VERSION"), register);
/// # fn main() {
/// #     assert_eq!(DEVBATCH_PLUGIN_DECLARATION.name.to_string_lossy(), "disk_usage");
/// # }
/// ```
///
/// Use it once per `cdylib` crate. `$register` is a `fn(&mut PluginRegistrar)`; a panic in it
/// is caught inside the plugin and reported as a load error naming the plugin's path.
#[macro_export]
macro_rules! export_plugin {
    ($name:expr, $version:expr, $register:path $(,)?) => {
        #[doc(hidden)]
        fn __devbatch_plugin_register(
            registrar: &mut $crate::PluginRegistrar,
        ) -> ::core::result::Result<(), ::std::string::String> {
            $crate::__private::call_register(registrar, $register)
        }

        /// The devbatch plugin declaration, read by the loader before anything else.
        // SAFETY (no_mangle): the name is reserved for this declaration; one per library.
        #[unsafe(no_mangle)]
        pub static DEVBATCH_PLUGIN_DECLARATION: $crate::PluginDeclaration =
            $crate::PluginDeclaration::new($name, $version, __devbatch_plugin_register);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_strings_round_trip_and_stop_at_nul() {
        let s: FixedStr<8> = FixedStr::new("abc");
        assert_eq!(s.to_string_lossy(), "abc");
        let full = FixedStr::<4>([b'a', b'b', b'c', b'd']);
        assert_eq!(full.to_string_lossy(), "abcd");
    }

    #[test]
    #[should_panic(expected = "string too long")]
    fn fixed_strings_refuse_what_does_not_fit() {
        let _ = FixedStr::<4>::new("abcd");
    }

    #[test]
    fn the_first_fields_never_move() {
        assert_eq!(std::mem::offset_of!(PluginDeclaration, magic), 0);
        assert_eq!(std::mem::offset_of!(PluginDeclaration, abi_version), 16);
        assert_eq!(std::mem::offset_of!(PluginDeclaration, header_size), 20);
    }

    #[test]
    fn build_facts_are_captured() {
        assert!(RUSTC_VERSION.starts_with("rustc "), "{RUSTC_VERSION}");
        assert!(!TARGET.is_empty());
        assert_eq!(PANIC_STRATEGY, "unwind");
        // Built inside the workspace: the interface sources are hashed.
        assert_eq!(INTERFACE_SOURCES.len(), 16, "{INTERFACE_SOURCES:?}");
    }
}
