//! Builds the workspace's plugin crates (the examples and the fixtures) the way a user would,
//! with the same cargo, compiler, profile and target directory as this test binary, and finds
//! the libraries.
//!
//! Running cargo from a test is fine: neither `cargo test` nor `cargo nextest` holds the build
//! lock while tests run, and when everything is fresh the build is a quick no-op. Concurrent
//! test processes simply wait for each other on cargo's lock.

#![allow(dead_code)] // each test binary uses part of it

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The packages built for the tests.
const PACKAGES: [&str; 3] = [
    "devbatch-plugin-disk-usage",
    "devbatch-plugin-dir",
    "devbatch-plugin-fixtures",
];

/// Where the built plugins are: `target/<profile>` (libraries) and `target/<profile>/examples`
/// (the fixtures).
pub struct Built {
    pub profile_dir: PathBuf,
}

impl Built {
    /// An example plugin library, by its `[lib] name`.
    pub fn library(&self, lib_name: &str) -> PathBuf {
        let p = self
            .profile_dir
            .join(devbatch_plugin::library_file_name(lib_name));
        assert!(p.is_file(), "{} was not built", p.display());
        p
    }

    /// A fixture plugin, by its example name.
    pub fn fixture(&self, name: &str) -> PathBuf {
        let p = self
            .profile_dir
            .join("examples")
            .join(devbatch_plugin::library_file_name(name));
        assert!(p.is_file(), "{} was not built", p.display());
        p
    }
}

/// Builds the plugins once per test process.
pub fn plugins() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(build)
}

fn build() -> Built {
    // This test binary is target/<profile>/deps/<name>-<hash>.
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary sits in target/<profile>/deps")
        .to_path_buf();
    let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(other) => other.to_string(),
        None => panic!("cannot tell the profile from {}", profile_dir.display()),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--quiet",
            "--lib",
            "--examples",
            "--profile",
            &profile,
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    for p in PACKAGES {
        cmd.args(["-p", p]);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", cargo.to_string_lossy()));
    assert!(
        out.status.success(),
        "building the plugins failed ({cmd:?}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Built { profile_dir }
}
