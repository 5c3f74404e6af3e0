//! The conformance suite: checks that a [`Device`] honours the contract every operation relies
//! on. Each backend runs it against real devices of its kind in its own tests:
//!
//! ```ignore
//! #[tokio::test]
//! async fn local_device_conforms() {
//!     let device = LocalDevice::new("local");
//!     devbatch_core::conformance::run_all(&device, &Suite::new("/tmp/scratch-dir")).await;
//! }
//! ```
//!
//! Every check panics with a message naming the check and what differed, so a failing backend
//! test says exactly which promise it broke. Enabled by the `conformance` feature:
//!
//! ```toml
//! [dev-dependencies]
//! devbatch-core = { version = "0.1", features = ["conformance"] }
//! ```
//!
//! The checks run shell commands on the device (`sh`, `tr`, `grep` and `/proc`, as on Linux and
//! Android).

use std::time::Duration;

use crate::device::{Command, Device, DeviceExt};
use crate::error::ErrorKind;

/// What the suite may assume of the device under test.
#[derive(Debug, Clone)]
pub struct Suite {
    /// A writable remote directory the suite may fill (it creates entries below it).
    pub remote_dir: String,
    /// Whether the device keeps stdout and stderr apart (legacy adb shells merge them).
    pub separate_stderr: bool,
    /// Whether the device can feed stdin to a command.
    pub stdin: bool,
    /// Whether commands run on the device see the files that push and pull reach, at the same
    /// paths. Not so for devices that keep files in a sandbox but run commands on this machine
    /// (mock devices, the `dir` example plugin); checks that make a remote file with a command
    /// are left out for them.
    pub commands_see_files: bool,
    /// How long a command may take before the timeout check gives up on it.
    pub timeout_probe: Duration,
}

impl Suite {
    /// A suite using `remote_dir`, expecting separate stderr and stdin support.
    pub fn new(remote_dir: impl Into<String>) -> Self {
        Suite {
            remote_dir: remote_dir.into(),
            separate_stderr: true,
            stdin: true,
            commands_see_files: true,
            timeout_probe: Duration::from_millis(500),
        }
    }
}

/// Runs every check in order.
pub async fn run_all(device: &dyn Device, suite: &Suite) {
    exit_codes(device).await;
    stdout_and_stderr(device, suite).await;
    argv_is_literal(device).await;
    binary_output(device).await;
    large_output(device).await;
    output_cap(device).await;
    if suite.stdin {
        stdin_is_fed(device).await;
    }
    push_pull_round_trip(device, suite).await;
    directory_round_trip(device, suite).await;
    parents_are_created(device, suite).await;
    special_files_are_counted(device, suite).await;
    missing_remote_file(device, suite).await;
    timeout_and_recovery(device, suite).await;
}

/// Exit codes come back exactly, and a non-zero one is not an error.
pub async fn exit_codes(device: &dyn Device) {
    for code in [0, 1, 7, 42, 255] {
        let out = device
            .shell(&format!("exit {code}"))
            .await
            .unwrap_or_else(|e| panic!("exit_codes: `exit {code}` failed: {e}"));
        assert_eq!(
            out.exit_code, code,
            "exit_codes: `exit {code}` reported {}",
            out.exit_code
        );
    }
}

/// Stdout and stderr arrive apart (or merged, where the suite says the device merges them).
pub async fn stdout_and_stderr(device: &dyn Device, suite: &Suite) {
    let out = device
        .shell("echo to-out; echo to-err >&2")
        .await
        .expect("stdout_and_stderr: run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if suite.separate_stderr {
        assert_eq!(stdout, "to-out\n", "stdout_and_stderr: stdout");
        assert_eq!(stderr, "to-err\n", "stdout_and_stderr: stderr");
    } else {
        assert!(
            stdout.contains("to-out") && stdout.contains("to-err"),
            "stdout_and_stderr: {stdout:?}"
        );
    }
}

/// An argv command keeps every argument literal: no word splitting, no expansion, no injection.
pub async fn argv_is_literal(device: &dyn Device) {
    let hostile = ["a b", "$HOME", "it's", "x; echo INJECTED", "`id`", "*"];
    let mut argv = vec!["printf", "%s|"];
    argv.extend(hostile);
    let out = device
        .run(&Command::argv(argv))
        .await
        .expect("argv_is_literal: run");
    assert_eq!(out.exit_code, 0, "argv_is_literal: exit code");
    let expected: String = hostile.iter().map(|h| format!("{h}|")).collect();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        expected,
        "argv_is_literal: stdout"
    );
}

/// Non-UTF-8 bytes and NUL come through unchanged.
pub async fn binary_output(device: &dyn Device) {
    let out = device
        .shell(r"printf '\377\376\000\001\n'")
        .await
        .expect("binary_output: run");
    assert_eq!(out.stdout, b"\xff\xfe\x00\x01\n", "binary_output: bytes");
}

/// A megabyte of output arrives whole.
pub async fn large_output(device: &dyn Device) {
    let n = 1024 * 1024;
    let out = device
        .shell(&format!("head -c {n} /dev/zero | tr '\\000' x"))
        .await
        .expect("large_output: run");
    assert_eq!(out.stdout.len(), n, "large_output: length");
    assert!(
        out.stdout.iter().all(|&b| b == b'x'),
        "large_output: content"
    );
}

/// Output past the cap fails with `output_limit`.
pub async fn output_cap(device: &dyn Device) {
    let cmd = Command::shell("head -c 200000 /dev/zero | tr '\\000' y").with_max_output(1000);
    let err = device
        .run(&cmd)
        .await
        .expect_err("output_cap: 200000 bytes passed a 1000-byte cap");
    assert_eq!(err.kind(), ErrorKind::OutputLimit, "output_cap: {err}");
}

/// Stdin is fed and then closed.
pub async fn stdin_is_fed(device: &dyn Device) {
    let cmd = Command::shell("cat").with_stdin(b"hello\x00stdin\n".to_vec());
    let out = device.run(&cmd).await.expect("stdin_is_fed: run");
    assert_eq!(
        out.stdout, b"hello\x00stdin\n",
        "stdin_is_fed: echoed bytes"
    );
}

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A file pushed and pulled back is byte-identical, even with a name holding spaces, quotes
/// and `$`.
pub async fn push_pull_round_trip(device: &dyn Device, suite: &Suite) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = pseudo_random(300 * 1024 + 17);
    let local = dir.path().join("source file.bin");
    std::fs::write(&local, &data).expect("write source");
    let remote = format!("{}/it's a $file.bin", suite.remote_dir);
    let pushed = device
        .push(&local, &remote)
        .await
        .unwrap_or_else(|e| panic!("push_pull: push: {e}"));
    assert_eq!(pushed.bytes, data.len() as u64, "push_pull: bytes pushed");
    let back = dir.path().join("back.bin");
    let pulled = device
        .pull(&remote, &back)
        .await
        .unwrap_or_else(|e| panic!("push_pull: pull: {e}"));
    assert_eq!(pulled.bytes, data.len() as u64, "push_pull: bytes pulled");
    assert!(
        std::fs::read(&back).expect("read back") == data,
        "push_pull: content differs"
    );
}

/// A directory tree pushed and pulled back keeps its files.
pub async fn directory_round_trip(device: &dyn Device, suite: &Suite) {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("tree");
    std::fs::create_dir_all(src.join("sub dir")).expect("mkdir");
    std::fs::write(src.join("a.txt"), b"alpha").expect("write");
    std::fs::write(src.join("sub dir/b.bin"), pseudo_random(70_000)).expect("write");
    let remote = format!("{}/tree", suite.remote_dir);
    let pushed = device
        .push(&src, &remote)
        .await
        .unwrap_or_else(|e| panic!("directory: push: {e}"));
    assert_eq!(pushed.files, 2, "directory: files pushed");
    let back = dir.path().join("back");
    let pulled = device
        .pull(&remote, &back)
        .await
        .unwrap_or_else(|e| panic!("directory: pull: {e}"));
    assert_eq!(pulled.files, 2, "directory: files pulled");
    assert_eq!(std::fs::read(back.join("a.txt")).expect("a.txt"), b"alpha");
    assert_eq!(
        std::fs::read(back.join("sub dir/b.bin")).expect("b.bin"),
        pseudo_random(70_000)
    );
}

/// A push creates the remote parent folders it needs, as `adb push` does (`scp` does not), so
/// a batch can push to a path the devices do not have yet.
pub async fn parents_are_created(device: &dyn Device, suite: &Suite) {
    let dir = tempfile::tempdir().expect("temp dir");
    let local = dir.path().join("f.txt");
    std::fs::write(&local, b"deep").expect("write source");
    let remote = format!("{}/new parent/deeper/f.txt", suite.remote_dir);
    device
        .push(&local, &remote)
        .await
        .unwrap_or_else(|e| panic!("parents_are_created: push: {e}"));
    let back = dir.path().join("back.txt");
    device
        .pull(&remote, &back)
        .await
        .unwrap_or_else(|e| panic!("parents_are_created: pull: {e}"));
    assert_eq!(
        std::fs::read(&back).expect("read back"),
        b"deep",
        "parents_are_created: content differs"
    );
}

/// A FIFO inside a copied folder is left out, in either direction (pull only where
/// [`Suite::commands_see_files`]), and counted as skipped beside the files that were copied;
/// a FIFO named itself is refused as invalid input. Nothing hangs reading one.
pub async fn special_files_are_counted(device: &dyn Device, suite: &Suite) {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("with fifo");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("plain.txt"), b"plain").expect("write");
    let made = std::process::Command::new("mkfifo")
        .arg(src.join("pipe"))
        .status()
        .expect("special_files_are_counted: run mkfifo");
    assert!(made.success(), "special_files_are_counted: mkfifo failed");
    let remote = format!("{}/with fifo", suite.remote_dir);
    let pushed = device
        .push(&src, &remote)
        .await
        .unwrap_or_else(|e| panic!("special_files_are_counted: push: {e}"));
    assert_eq!(
        (pushed.files, pushed.skipped),
        (1, 1),
        "special_files_are_counted: push {pushed:?}"
    );
    // The FIFO itself is refused, not read until the timeout.
    refused_promptly(
        "push",
        device.push(&src.join("pipe"), &format!("{}/pipe", suite.remote_dir)),
    )
    .await;
    if !suite.commands_see_files {
        return;
    }
    let out = device
        .run(&Command::argv(["mkfifo", &format!("{remote}/remote pipe")]))
        .await
        .expect("special_files_are_counted: run mkfifo on the device");
    assert_eq!(
        out.exit_code,
        0,
        "special_files_are_counted: mkfifo on the device: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = dir.path().join("back");
    let pulled = device
        .pull(&remote, &back)
        .await
        .unwrap_or_else(|e| panic!("special_files_are_counted: pull: {e}"));
    assert_eq!(
        (pulled.files, pulled.skipped),
        (1, 1),
        "special_files_are_counted: pull {pulled:?}"
    );
    assert_eq!(
        std::fs::read(back.join("plain.txt")).expect("plain.txt"),
        b"plain"
    );
    refused_promptly(
        "pull",
        device.pull(&format!("{remote}/remote pipe"), &dir.path().join("pipe")),
    )
    .await;
}

/// A transfer of a FIFO fails as invalid input within seconds (it is never read).
async fn refused_promptly(
    what: &str,
    transfer: impl std::future::Future<Output = Result<crate::TransferStats, crate::DeviceError>>,
) {
    let result = tokio::time::timeout(Duration::from_secs(10), transfer)
        .await
        .unwrap_or_else(|_| panic!("special_files_are_counted: a {what} of a FIFO hung"));
    let err = result
        .err()
        .unwrap_or_else(|| panic!("special_files_are_counted: a FIFO was {what}ed"));
    assert_eq!(
        err.kind(),
        ErrorKind::InvalidInput,
        "special_files_are_counted: {what} of a FIFO: {err}"
    );
}

/// Pulling a file that does not exist is an I/O error naming the path and leaves nothing behind.
pub async fn missing_remote_file(device: &dyn Device, suite: &Suite) {
    let dir = tempfile::tempdir().expect("temp dir");
    let local = dir.path().join("never.bin");
    let remote = format!("{}/no-such-file", suite.remote_dir);
    let err = device
        .pull(&remote, &local)
        .await
        .expect_err("missing_remote_file: pull succeeded");
    assert_eq!(
        err.kind(),
        ErrorKind::Io,
        "missing_remote_file: a missing remote path is an I/O error: {err}"
    );
    assert!(
        err.to_string().contains("no-such-file"),
        "missing_remote_file: the error should name the path: {err}"
    );
    assert!(
        !local.exists(),
        "missing_remote_file: a local file was left behind"
    );
}

/// A shell line printing how many processes run exactly `command_line` (found in `/proc`; the
/// line's own shell does not count, its command line starts otherwise).
fn count_processes(command_line: &str) -> String {
    format!(
        "for f in /proc/[0-9]*/cmdline; do tr '\\000' ' ' < \"$f\" 2>/dev/null; echo; done | grep -c '^{command_line} *$'"
    )
}

/// A command that outlives its timeout is dropped promptly, its process does not outlive it on
/// the device, and the device still works.
pub async fn timeout_and_recovery(device: &dyn Device, suite: &Suite) {
    // A sleep with a duration no other process has, to find it among the device's processes.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let sleep = format!("sleep 29.{:06}", nanos % 1_000_000);
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(suite.timeout_probe, device.shell(&sleep)).await;
    assert!(
        r.is_err(),
        "timeout_and_recovery: `{sleep}` finished within {:?}",
        suite.timeout_probe
    );
    assert!(
        started.elapsed() < suite.timeout_probe + Duration::from_secs(2),
        "timeout_and_recovery: dropping the command took {:?}",
        started.elapsed()
    );
    // Count the processes whose command line is exactly the sleep (this probe's own line
    // starts otherwise), until none is left or 10 s have passed.
    let probe = count_processes(&sleep);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = device
            .run(&Command::shell(probe.clone()))
            .await
            .expect("timeout_and_recovery: process probe");
        let left = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if left == "0" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timeout_and_recovery: `{sleep}` still runs on the device 10 s after its command was dropped (processes: {left})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = device
        .shell_text("echo still-here")
        .await
        .expect("timeout_and_recovery: next command");
    assert_eq!(text, "still-here");
}

#[cfg(test)]
mod tests {
    use super::count_processes;

    #[test]
    fn the_process_probe_sees_a_running_process_and_not_a_gone_one() {
        let count = || {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(count_processes("sleep 29.987654"))
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        let mut sleep = std::process::Command::new("sleep")
            .arg("29.987654")
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(count(), "1");
        sleep.kill().unwrap();
        sleep.wait().unwrap();
        assert_eq!(count(), "0");
    }
}
