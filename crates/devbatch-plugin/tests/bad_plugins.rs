//! Every kind of bad plugin gets a clear error naming its path and the reason, leaves the
//! registry as it was, and the process goes on working (a good plugin still loads and runs).

mod support;

use std::path::Path;
use std::sync::Arc;

use devbatch_core::{BatchOperationManager, Device, DevicePool, Registry, Status};
use devbatch_plugin::{
    CORE_VERSION, INTERFACE_SOURCES, LAYOUT_FINGERPRINT, LoadFailure, PANIC_STRATEGY,
    PLUGIN_ABI_VERSION, PluginError, RUSTC_VERSION, TARGET, load_plugin,
};
use serde_json::json;

/// Loads `path` into a registry holding the built-in operations, expects a refusal, checks the
/// registry did not change, then proves the process still works by loading and running a good
/// plugin.
fn refuse(path: &Path) -> PluginError {
    let mut registry = Registry::new();
    devbatch_ops::register_all(&mut registry).unwrap();
    let before = format!("{registry:?}");
    let err = load_plugin(path, &mut registry).expect_err("the plugin was accepted");
    assert_eq!(err.path, path);
    assert_eq!(
        format!("{registry:?}"),
        before,
        "a refused plugin changed the registry"
    );
    assert!(
        !err.to_string()
            .contains(devbatch_plugin_fixtures::MUST_NOT_RUN),
        "the loader called into a plugin it should have refused first: {err}"
    );
    still_working(registry);
    err
}

fn still_working(mut registry: Registry) {
    let good = support::plugins().library("devbatch_disk_usage");
    load_plugin(&good, &mut registry).expect("a good plugin loads after a bad one");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let device =
        devbatch_mock::MockDevice::new("m")
            .on_command(devbatch_mock::CommandScript::new("df").stdout(
            "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/x 100 50 50 50% /\n",
        ));
    let pool = DevicePool::from_devices([Arc::new(device) as Arc<dyn Device>]).unwrap();
    let manager = BatchOperationManager::with_registry(pool, registry);
    let result = runtime
        .block_on(manager.execute_batch("disk_usage", json!({}), None))
        .unwrap();
    let outcome = result.get("m").unwrap();
    assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    assert_eq!(outcome.result["filesystems"][0]["use_percent"], 50);
}

fn fixture(name: &str) -> std::path::PathBuf {
    support::plugins().fixture(name)
}

#[test]
fn a_missing_file() {
    let path = Path::new("/nonexistent/libnothing.so");
    let err = refuse(path);
    assert!(matches!(err.reason, LoadFailure::NotFound));
    assert_eq!(
        err.to_string(),
        "plugin /nonexistent/libnothing.so: no such file"
    );
}

#[test]
fn not_a_shared_library() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("libnotes.so");
    // Longer than an ELF header, so that the loader reads it and finds no ELF magic.
    std::fs::write(&path, "these are notes, not machine code\n".repeat(8)).unwrap();
    let err = refuse(&path);
    assert!(matches!(err.reason, LoadFailure::NotALibrary(_)), "{err:?}");
    let canonical = path.canonicalize().unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {}: cannot be loaded as a shared library: {}: invalid ELF header",
            path.display(),
            canonical.display()
        )
    );
}

#[test]
fn a_library_without_the_declaration_symbol() {
    let path = fixture("no_declaration");
    let err = refuse(&path);
    assert!(matches!(err.reason, LoadFailure::MissingDeclaration));
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {}: not a devbatch plugin: it exports no `DEVBATCH_PLUGIN_DECLARATION` symbol (a plugin declares itself with devbatch_plugin::export_plugin!)",
            path.display()
        )
    );
}

#[test]
fn a_declaration_symbol_too_small_to_be_one() {
    let path = fixture("tiny_declaration");
    let err = refuse(&path);
    assert!(
        matches!(err.reason, LoadFailure::TooSmall { size: 4 }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {}: not a devbatch plugin: its `DEVBATCH_PLUGIN_DECLARATION` is 4 bytes, smaller than any plugin declaration",
            path.display()
        )
    );
}

#[test]
fn wrong_magic_bytes() {
    let path = fixture("bad_magic");
    let err = refuse(&path);
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {}: not a devbatch plugin: its `DEVBATCH_PLUGIN_DECLARATION` does not start with the devbatch plugin magic bytes (found \"not-a-plugin\\\\x00\\\\x00\\\\x00\\\\x00\")",
            path.display()
        )
    );
}

#[test]
fn another_plugin_abi_version() {
    let path = fixture("abi_mismatch");
    let err = refuse(&path);
    assert!(matches!(
        err.reason,
        LoadFailure::AbiVersion {
            found: 999,
            expected: PLUGIN_ABI_VERSION
        }
    ));
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {}: it was built for plugin ABI version 999, this devbatch loads version {PLUGIN_ABI_VERSION}; rebuild it against devbatch-plugin {CORE_VERSION}",
            path.display()
        )
    );
}

#[test]
fn another_rustc() {
    let path = fixture("other_rustc");
    let err = refuse(&path);
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {}: it was built with rustc 1.0.0 (a59807616 2015-05-15), this devbatch with {RUSTC_VERSION}; Rust has no stable ABI, so rebuild the plugin with the same compiler",
            path.display()
        )
    );
}

#[test]
fn another_core_version() {
    let path = fixture("other_core");
    let err = refuse(&path);
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {}: it was built against devbatch-core 0.0.1, this devbatch uses devbatch-core {CORE_VERSION}; rebuild the plugin against this version",
            path.display()
        )
    );
}

#[test]
fn other_core_sources_of_the_same_version() {
    let path = fixture("other_sources");
    let err = refuse(&path);
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {}: it was built from other sources of devbatch-core {CORE_VERSION} (interface 0123456789abcdef, this devbatch has {INTERFACE_SOURCES}); rebuild the plugin together with devbatch",
            path.display()
        )
    );
}

#[test]
fn another_target() {
    let path = fixture("other_target");
    let err = refuse(&path);
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {}: it was built for target riscv64gc-unknown-linux-gnu, this devbatch runs on {TARGET}",
            path.display()
        )
    );
}

#[test]
fn panic_abort() {
    let path = fixture("abort_on_panic");
    let err = refuse(&path);
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {}: it was built with panic=abort, this devbatch with panic={PANIC_STRATEGY}; build it with the same panic strategy so that its panics can be caught",
            path.display()
        )
    );
}

#[test]
fn other_layouts_of_the_shared_types() {
    let path = fixture("other_layout");
    let err = refuse(&path);
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {}: the types it shares with devbatch have other sizes in it (layout fingerprint {:016x}, this devbatch has {LAYOUT_FINGERPRINT:016x}): its serde_json or tokio-util resolved to other versions or features; build it in the devbatch workspace or with devbatch's Cargo.lock",
            path.display(),
            LAYOUT_FINGERPRINT ^ 1
        )
    );
}

#[test]
fn a_register_function_that_panics() {
    let path = fixture("panicking_register");
    let err = refuse(&path);
    assert!(matches!(err.reason, LoadFailure::RegisterPanicked(_)));
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {}: its register function panicked: the register function of this fixture panics on purpose",
            path.display()
        )
    );
}

#[test]
fn an_operation_that_panics_when_asked_its_name() {
    let path = fixture("panicking_name");
    let err = refuse(&path);
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {}: its operation #1 panicked while describing itself: this operation has no name",
            path.display()
        )
    );
}

#[test]
fn a_duplicate_operation_name() {
    let path = fixture("duplicate_op");
    let err = refuse(&path);
    assert!(matches!(err.reason, LoadFailure::Clash(_)));
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {}: its operation 'shell' clashes with the operation 'shell' registered by devbatch-ops",
            path.display()
        )
    );
    // Its first operation, which did not clash, was not registered either (checked by
    // `refuse`); the same plugin loads fine into a registry without `shell`.
    let mut registry = Registry::new();
    let loaded = load_plugin(&path, &mut registry).unwrap();
    assert_eq!(loaded.operations, ["probe_first", "shell"]);
}

#[test]
fn a_directory_given_as_a_plugin_file() {
    let tmp = tempfile::tempdir().unwrap();
    let err = refuse(tmp.path());
    assert!(matches!(err.reason, LoadFailure::IsDirectory), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {}: it is a directory, not a library (a directory in $DEVBATCH_PLUGIN_PATH loads every library in it)",
            tmp.path().display()
        )
    );
}
