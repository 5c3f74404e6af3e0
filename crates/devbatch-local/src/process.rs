//! Running a command as a local process group that dies with its future.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Mutex, PoisonError};

use devbatch_core::{Command, CommandOutput, DeviceError, OutputCollector, Program};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The process groups of the commands running now, for [`kill_running`].
static RUNNING: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn running() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    RUNNING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Kills the process group of every command still running. For a program about to exit
/// without unwinding (a second Ctrl-C), when no future will be dropped to do it.
pub fn kill_running() {
    for pgid in std::mem::take(&mut *running()) {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// Kills the whole process group when dropped, unless the command finished first.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn new(pgid: Option<Pid>) -> Self {
        if let Some(pgid) = pgid {
            running().insert(pgid.as_raw());
        }
        GroupGuard { pgid }
    }

    /// The command finished: its group is left alone from now on.
    fn disarm(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            running().remove(&pgid.as_raw());
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            // The group may already be gone; nothing to do then.
            let _ = killpg(pgid, Signal::SIGKILL);
            running().remove(&pgid.as_raw());
        }
    }
}

pub(crate) async fn run(
    command: &Command,
    workdir: Option<&Path>,
) -> Result<CommandOutput, DeviceError> {
    let mut cmd = match &command.program {
        Program::Shell(line) => {
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg("-c").arg(line);
            c
        }
        Program::Argv(args) => {
            let (program, rest) = args
                .split_first()
                .ok_or_else(|| DeviceError::InvalidInput("empty argument list".into()))?;
            let mut c = tokio::process::Command::new(program);
            c.args(rest);
            c
        }
    };
    if let Some(dir) = workdir {
        cmd.current_dir(dir);
    }
    cmd.stdin(if command.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0)
    .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DeviceError::Failed(format!(
            "cannot run {}: program not found",
            program_name(command)
        )),
        _ => DeviceError::io(format!("spawn {}", program_name(command)), e),
    })?;
    let mut guard = GroupGuard::new(child.id().map(|id| Pid::from_raw(id as i32)));

    let stdin_task = {
        let input = command.stdin.clone();
        let pipe = child.stdin.take();
        async move {
            if let (Some(bytes), Some(mut pipe)) = (input, pipe) {
                // A command that exits without reading its input is not an error.
                let _ = pipe.write_all(&bytes).await;
                let _ = pipe.shutdown().await;
            }
        }
    };
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let mut collector = OutputCollector::new(command.max_output);
    let read_task = async {
        let (mut out_buf, mut err_buf) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
        let (mut out_open, mut err_open) = (true, true);
        while out_open || err_open {
            tokio::select! {
                n = stdout.read(&mut out_buf), if out_open => match n {
                    Ok(0) => out_open = false,
                    Ok(n) => collector.stdout(&out_buf[..n])?,
                    Err(e) => return Err(DeviceError::io("read stdout", e)),
                },
                n = stderr.read(&mut err_buf), if err_open => match n {
                    Ok(0) => err_open = false,
                    Ok(n) => collector.stderr(&err_buf[..n])?,
                    Err(e) => return Err(DeviceError::io("read stderr", e)),
                },
            }
        }
        Ok(())
    };
    let ((), read) = tokio::join!(stdin_task, read_task);
    read?;
    let status = child
        .wait()
        .await
        .map_err(|e| DeviceError::io("wait for the command", e))?;
    // Finished normally: whatever the command left running on purpose (a daemon that closed
    // its output) is its own business.
    guard.disarm();
    match status.code() {
        Some(code) => Ok(collector.finish(code)),
        None => {
            use std::os::unix::process::ExitStatusExt;
            let signal = status.signal().and_then(|s| Signal::try_from(s).ok());
            Err(DeviceError::Failed(match signal {
                Some(s) => format!("command killed by signal {}", s.as_str()),
                None => "command ended without an exit status".into(),
            }))
        }
    }
}

fn program_name(command: &Command) -> &str {
    match &command.program {
        Program::Shell(_) => "/bin/sh",
        Program::Argv(args) => args.first().map(String::as_str).unwrap_or(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_command_kills_its_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("pid");
        // The grandchild records its pid, then sleeps.
        let line = format!(
            "sh -c 'echo $$ > {}; exec sleep 300' & wait",
            marker.display()
        );
        let command = Command::shell(line);
        let run = run(&command, None);
        assert!(
            tokio::time::timeout(Duration::from_millis(800), run)
                .await
                .is_err()
        );
        let pid: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Give the kernel a moment to reap.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        assert!(!alive, "grandchild {pid} survived the cancelled command");
    }

    #[tokio::test]
    async fn a_signal_is_an_error_naming_it() {
        let err = run(&Command::shell("kill -TERM $$"), None)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "command killed by signal SIGTERM");
    }

    #[tokio::test]
    async fn a_missing_program_is_named() {
        let err = run(&Command::argv(["/nonexistent/prog", "x"]), None)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot run /nonexistent/prog: program not found"
        );
    }
}
