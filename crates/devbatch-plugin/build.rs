//! Captures what a plugin and its host must share, at the time this crate is compiled:
//!
//! * `DEVBATCH_RUSTC_VERSION`: the first line of `$RUSTC -vV` (`rustc 1.95.0 (59807616e
//!   2026-04-14)`), which names the exact compiler build;
//! * `DEVBATCH_TARGET`: the target triple;
//! * `DEVBATCH_INTERFACE_SOURCES`: a hash of the sources that define the types crossing the
//!   plugin boundary (this crate's and, when it sits beside this crate as in the devbatch
//!   workspace, `devbatch-core`'s), so that a plugin built before an edit of those sources is
//!   refused even though the version number did not change. Empty when `devbatch-core` is not
//!   beside this crate (a registry build: there the version number identifies the sources).
//!
//! Every plugin compiles its own copy of this crate, so the values in its declaration are the
//! ones its compiler saw; the host compares them with its own.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .arg("-vV")
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{} -vV`: {e}", rustc.to_string_lossy()));
    assert!(
        output.status.success(),
        "`{} -vV` failed: {}",
        rustc.to_string_lossy(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let first = text.lines().next().unwrap_or_default().trim();
    let commit = text
        .lines()
        .find_map(|l| l.strip_prefix("commit-hash: "))
        .map(str::trim)
        .filter(|c| !c.is_empty() && *c != "unknown");
    // The first line only carries 9 digits of the commit; add the whole hash when known.
    let version = match commit {
        Some(c) if !first.contains(c) => format!("{first} commit {c}"),
        _ => first.to_string(),
    };
    println!("cargo:rustc-env=DEVBATCH_RUSTC_VERSION={version}");
    println!(
        "cargo:rustc-env=DEVBATCH_TARGET={}",
        std::env::var("TARGET").expect("cargo sets TARGET")
    );

    let here = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let mut roots = vec![here.join("src")];
    let core = here.join("../devbatch-core");
    let core_is_sibling = std::fs::read_to_string(core.join("Cargo.toml"))
        .is_ok_and(|m| m.contains("name = \"devbatch-core\""));
    let fingerprint = if core_is_sibling {
        roots.push(core.join("src"));
        let mut files = Vec::new();
        for root in &roots {
            println!("cargo:rerun-if-changed={}", root.display());
            collect_rs(root, &mut files);
        }
        files.sort();
        let mut hash = Fnv::new();
        for file in &files {
            println!("cargo:rerun-if-changed={}", file.display());
            let rel = file.strip_prefix(&here).unwrap_or(file);
            hash.write(rel.to_string_lossy().as_bytes());
            hash.write(&std::fs::read(file).expect("read a source file"));
        }
        format!("{:016x}", hash.0)
    } else {
        String::new()
    };
    println!("cargo:rustc-env=DEVBATCH_INTERFACE_SOURCES={fingerprint}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC");
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// FNV-1a, 64 bits: enough to tell two source trees apart, no dependency needed.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // Separate fields so that ("ab", "c") and ("a", "bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }
}
