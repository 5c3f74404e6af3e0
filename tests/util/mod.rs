//! Helpers for driving the real `devbatch` binary, in the manner of ripgrep's `tests/util.rs`:
//! each test gets its own empty working directory and config home, so no pool file or config of
//! the machine leaks in.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Self {
        Dir {
            tmp: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.join(name);
        std::fs::write(&p, contents).expect("write test file");
        p
    }

    /// A `devbatch` command run in this directory, isolated from the user's config and from
    /// any adb server on the default port.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_devbatch"));
        cmd.current_dir(self.path())
            .env("HOME", self.path())
            .env("XDG_CONFIG_HOME", self.path().join(".config"))
            .env_remove("DEVBATCH_POOL")
            .env_remove("DEVBATCH_PLUGIN_PATH")
            .env_remove("RUST_LOG")
            .env("ANDROID_ADB_SERVER_PORT", "1")
            .stdin(Stdio::null());
        cmd
    }

    /// Starts `devbatch ARGS` with stdout and stderr captured, without waiting for it.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start devbatch")
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run(self.command().args(args).output().expect("run devbatch"))
    }
}

/// A finished run.
pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().expect("exited normally")
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.0.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", self.stdout()))
    }

    /// Asserts the run failed with exactly one line on stderr, `error: ...`, and no backtrace.
    pub fn one_line_error(&self, code: i32) -> String {
        let err = self.stderr();
        assert_eq!(self.code(), code, "exit code; stderr: {err}");
        assert_eq!(
            err.lines().count(),
            1,
            "expected one line on stderr, got:\n{err}"
        );
        assert!(err.starts_with("error: "), "{err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
        err.trim_end().to_string()
    }
}

/// The example plugin libraries, built once per test process with the same cargo, profile and
/// target directory as the binary under test (a no-op when they are fresh).
pub fn plugin_library(lib_name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let profile_dir = BUILT.get_or_init(|| {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_devbatch"));
        let profile_dir = bin.parent().expect("target/<profile>").to_path_buf();
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_string(),
            Some(other) => other.to_string(),
            None => panic!("cannot tell the profile from {}", profile_dir.display()),
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--quiet", "--lib", "--profile", &profile])
            .args([
                "-p",
                "devbatch-plugin-disk-usage",
                "-p",
                "devbatch-plugin-dir",
            ])
            .arg("--target-dir")
            .arg(profile_dir.parent().expect("target dir"))
            .output()
            .expect("run cargo");
        assert!(
            out.status.success(),
            "building the plugins failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        profile_dir
    });
    let lib = profile_dir.join(format!(
        "{}{lib_name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert!(lib.is_file(), "{} was not built", lib.display());
    lib
}

/// Sends SIGINT (Ctrl-C) to a running `devbatch`.
pub fn interrupt(child: &std::process::Child) {
    send(child, nix::sys::signal::Signal::SIGINT);
}

/// Sends `signal` to a running `devbatch`.
pub fn send(child: &std::process::Child, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal)
        .unwrap_or_else(|e| panic!("send {signal}: {e}"));
}

/// Waits for `child` to exit, at most `within` after now, and returns its output.
pub fn exit_within(
    mut child: std::process::Child,
    within: std::time::Duration,
    what: &str,
) -> std::process::Output {
    let sent = std::time::Instant::now();
    while child.try_wait().expect("wait for devbatch").is_none() {
        if sent.elapsed() > within {
            let _ = child.kill();
            panic!("devbatch did not exit within {within:?} of {what}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect devbatch's output")
}
