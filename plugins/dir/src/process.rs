//! Running a command in a device's root, as a process group that dies with its future. Runs on
//! the plugin's own runtime (tokio's process driver needs it).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use devbatch_core::{Command, CommandOutput, DeviceError, OutputCollector, Program};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Kills the process group when dropped before the command finished.
struct KillGroupOnDrop(Option<Pid>);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            // The group may be gone already; nothing to do then.
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
}

pub(crate) async fn run(
    command: &Command,
    root: &Path,
    env: &BTreeMap<String, String>,
) -> Result<CommandOutput, DeviceError> {
    let (program, args): (&str, Vec<&str>) = match &command.program {
        Program::Shell(line) => ("/bin/sh", vec!["-c", line]),
        Program::Argv(argv) => match argv.split_first() {
            Some((p, rest)) => (p, rest.iter().map(String::as_str).collect()),
            None => return Err(DeviceError::InvalidInput("empty argument list".into())),
        },
    };
    let mut child = tokio::process::Command::new(program)
        .args(&args)
        .current_dir(root)
        .envs(env)
        .stdin(if command.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                DeviceError::Failed(format!("cannot run {program}: program not found"))
            }
            _ => DeviceError::io(format!("start {program} in {}", root.display()), e),
        })?;
    let mut group = KillGroupOnDrop(child.id().map(|pid| Pid::from_raw(pid as i32)));

    let feed = {
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
    let mut output = OutputCollector::new(command.max_output);
    let collect = async {
        let mut out_buf = vec![0u8; 64 * 1024];
        let mut err_buf = vec![0u8; 64 * 1024];
        let (mut out_open, mut err_open) = (true, true);
        while out_open || err_open {
            tokio::select! {
                chunk = read(&mut stdout, &mut out_buf), if out_open => match chunk? {
                    [] => out_open = false,
                    bytes => output.stdout(bytes)?,
                },
                chunk = read(&mut stderr, &mut err_buf), if err_open => match chunk? {
                    [] => err_open = false,
                    bytes => output.stderr(bytes)?,
                },
            }
        }
        Ok::<(), DeviceError>(())
    };
    let ((), collected) = tokio::join!(feed, collect);
    collected?;
    let status = child
        .wait()
        .await
        .map_err(|e| DeviceError::io("wait for the command", e))?;
    // It finished: whatever it left running on purpose is its own business.
    group.0 = None;
    match status.code() {
        Some(code) => Ok(output.finish(code)),
        None => {
            use std::os::unix::process::ExitStatusExt;
            Err(DeviceError::Failed(match status.signal() {
                Some(signal) => format!("command killed by signal {signal}"),
                None => "command ended without an exit status".into(),
            }))
        }
    }
}

async fn read<'b>(
    pipe: &mut (impl AsyncRead + Unpin),
    buf: &'b mut [u8],
) -> Result<&'b [u8], DeviceError> {
    let n = pipe
        .read(buf)
        .await
        .map_err(|e| DeviceError::io("read the command's output", e))?;
    Ok(&buf[..n])
}
