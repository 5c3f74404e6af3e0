//! Running one command on an exec channel.
//!
//! The command runs under a tiny wrapper, `printf '<marker><pid>\n'; exec ...`, run by the
//! login shell that sshd starts for the channel. sshd makes that shell a session and process
//! group leader, so its pid (which `exec` keeps) names the process group of everything the
//! command starts. When the run is dropped (timeout, cancel) or stops early (output cap) before
//! the command's exit status arrived, a clean-up task opens a second channel and kills that
//! group with `kill -KILL -- -<pid>`. The SSH `signal` request is not used: many sshd versions
//! ignore it.
//!
//! The exit status is taken whenever it arrives before the channel closes (sshd often sends it
//! after EOF); an exit signal is an error naming the signal; a channel that closes with neither
//! is an error, never a success.

use std::sync::Arc;
use std::time::Duration;

use devbatch_core::{Command, CommandOutput, OutputCollector, Program, quote};
use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};

use crate::connect::{Connection, drain};
use crate::error::SshError;

/// Starts the line the wrapper prints before the command runs.
const MARKER: &[u8] = b"\x1edevbatch-pid=";
/// How much stdout may precede the marker (login-shell chatter) before we stop looking.
const MARKER_LOOKAHEAD: usize = 64 * 1024;

/// The line sent in the exec request.
pub(crate) fn wrap(command: &Command) -> Result<String, SshError> {
    let inner = match &command.program {
        Program::Shell(line) => format!("/bin/sh -c {}", quote(line)),
        Program::Argv(args) => {
            if args.is_empty() {
                return Err(SshError::InvalidInput("empty argument list".into()));
            }
            command.to_shell_line()
        }
    };
    Ok(format!(
        "printf '\\036devbatch-pid=%s\\n' \"$$\"; exec {inner}"
    ))
}

/// Kills the remote process group unless the command is known to have finished.
struct Reaper {
    conn: Arc<Connection>,
    read: Option<ChannelReadHalf>,
    write: Option<ChannelWriteHalf<Msg>>,
    pid: Option<u32>,
    finished: bool,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let (Some(read), Some(write)) = (self.read.take(), self.write.take()) else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let conn = self.conn.clone();
        let pid = self.pid;
        let permit = self.permit.take();
        let task = reap(conn.clone(), read, write, pid, permit);
        conn.cleanups.spawn_on(task, &rt);
    }
}

/// Finds the pid if it was not seen yet, kills the group over a new channel, closes the old.
async fn reap(
    conn: Arc<Connection>,
    mut read: ChannelReadHalf,
    write: ChannelWriteHalf<Msg>,
    pid: Option<u32>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let pid = match pid {
        Some(p) => Some(p),
        None => {
            // The wrapper prints the pid first; wait for it briefly.
            let mut seen = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), async {
                while let Some(msg) = read.wait().await {
                    match msg {
                        ChannelMsg::Data { data } if seen.len() < MARKER_LOOKAHEAD => {
                            seen.extend_from_slice(&data);
                            if let Some((pid, _)) = find_marker(&seen) {
                                return pid;
                            }
                        }
                        ChannelMsg::ExitStatus { .. }
                        | ChannelMsg::ExitSignal { .. }
                        | ChannelMsg::Close => return None,
                        _ => {}
                    }
                }
                None
            })
            .await
            .ok()
            .flatten()
        }
    };
    // Stop receiving first: an unread channel whose buffer is full (a command flooding
    // output) would stall the whole connection, kill channel included. Then free our channel
    // slot, so that the kill channel cannot wait behind it.
    drop(read);
    drop(permit);
    if let Some(pid) = pid {
        let line =
            format!("kill -KILL -- -{pid} 2>/dev/null || kill -KILL {pid} 2>/dev/null; true");
        match conn.open_session().await {
            Ok(mut kill) => {
                if kill.channel.exec(true, line).await.is_ok() {
                    let _ = tokio::time::timeout(Duration::from_secs(10), drain(&mut kill.channel))
                        .await;
                }
                tracing::debug!(host = %conn.display, pid, "killed the remote process group of a cancelled command");
            }
            Err(e) => {
                tracing::warn!(host = %conn.display, pid, "could not kill the remote process group of a cancelled command: {e}")
            }
        }
    }
    let _ = write.close().await;
}

/// Finds `MARKER<pid>\n` in `buf`: the pid and the byte range of the whole line.
fn find_marker(buf: &[u8]) -> Option<(Option<u32>, std::ops::Range<usize>)> {
    let start = buf.windows(MARKER.len()).position(|w| w == MARKER)?;
    let rest = &buf[start + MARKER.len()..];
    let end = rest.iter().position(|&b| b == b'\n')?;
    let pid = std::str::from_utf8(&rest[..end])
        .ok()
        .and_then(|s| s.parse().ok());
    Some((pid, start..start + MARKER.len() + end + 1))
}

/// Runs `command` on a new channel of `conn`.
pub(crate) async fn run(
    conn: &Arc<Connection>,
    command: &Command,
) -> Result<CommandOutput, SshError> {
    let line = wrap(command)?;
    let session = conn.open_session().await?;
    let (read, write) = session.channel.split();
    let mut reaper = Reaper {
        conn: conn.clone(),
        read: Some(read),
        write: Some(write),
        pid: None,
        finished: false,
        permit: Some(session.permit),
    };
    let write = reaper.write.as_ref().expect("set above");
    write
        .exec(true, line)
        .await
        .map_err(|e| conn.link_error(e))?;

    let mut collector = OutputCollector::new(command.max_output);
    // Stdout before the marker line is held back until the marker is found.
    let mut head: Option<Vec<u8>> = Some(Vec::new());
    let mut exit_code: Option<u32> = None;
    let mut signal: Option<(String, bool, String)> = None;
    let mut closed = false;

    let result = {
        let stdin = async {
            if let Some(bytes) = &command.stdin {
                // A command that exits without reading its input is not an error.
                let _ = write.data(&bytes[..]).await;
            }
            let _ = write.eof().await;
        };
        let read = reaper.read.as_mut().expect("set above");
        let pid_slot = &mut reaper.pid;
        let output = async {
            while let Some(msg) = read.wait().await {
                match msg {
                    ChannelMsg::Failure if exit_code.is_none() && head.is_some() => {
                        return Err(SshError::ExecRefused {
                            target: conn.display.clone(),
                        });
                    }
                    ChannelMsg::Data { data } => match head.as_mut() {
                        Some(buf) => {
                            buf.extend_from_slice(&data);
                            if let Some((pid, range)) = find_marker(buf) {
                                *pid_slot = pid;
                                collector.stdout(&buf[..range.start])?;
                                collector.stdout(&buf[range.end..])?;
                                head = None;
                            } else if buf.len() > MARKER_LOOKAHEAD {
                                collector.stdout(buf)?;
                                head = None;
                            }
                        }
                        None => collector.stdout(&data)?,
                    },
                    ChannelMsg::ExtendedData { data, ext: 1 } => collector.stderr(&data)?,
                    ChannelMsg::ExitStatus { exit_status } => exit_code = Some(exit_status),
                    ChannelMsg::ExitSignal {
                        signal_name,
                        core_dumped,
                        error_message,
                        ..
                    } => {
                        signal = Some((
                            format!("SIG{}", sig_name(&signal_name)),
                            core_dumped,
                            error_message,
                        ))
                    }
                    ChannelMsg::Close => {
                        closed = true;
                        break;
                    }
                    _ => {}
                }
            }
            Ok::<(), SshError>(())
        };
        // Output decides: once the channel is done (or the cap is hit) a stdin the command never
        // read is abandoned.
        tokio::pin!(stdin, output);
        let mut stdin_done = false;
        loop {
            tokio::select! {
                () = &mut stdin, if !stdin_done => stdin_done = true,
                r = &mut output => break r,
            }
        }
    };
    if exit_code.is_some() || signal.is_some() {
        reaper.finished = true;
    }
    result?;
    if let Some(buf) = head.take() {
        collector.stdout(&buf)?;
    }
    if let Some((signal, core_dumped, message)) = signal {
        return Err(SshError::Signal {
            signal,
            core_dumped,
            message,
        });
    }
    match exit_code {
        Some(code) => Ok(collector.finish(code as i32)),
        None if conn.is_closed() || !closed => Err(SshError::Disconnected {
            target: conn.display.clone(),
            message: "the connection closed before the command finished".into(),
        }),
        None => Err(SshError::NoExitStatus {
            target: conn.display.clone(),
        }),
    }
}

fn sig_name(sig: &russh::Sig) -> String {
    match sig {
        russh::Sig::ABRT => "ABRT".into(),
        russh::Sig::ALRM => "ALRM".into(),
        russh::Sig::FPE => "FPE".into(),
        russh::Sig::HUP => "HUP".into(),
        russh::Sig::ILL => "ILL".into(),
        russh::Sig::INT => "INT".into(),
        russh::Sig::KILL => "KILL".into(),
        russh::Sig::PIPE => "PIPE".into(),
        russh::Sig::QUIT => "QUIT".into(),
        russh::Sig::SEGV => "SEGV".into(),
        russh::Sig::TERM => "TERM".into(),
        russh::Sig::USR1 => "USR1".into(),
        russh::Sig::Custom(name) => name.trim_start_matches("SIG").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrapper_quotes_the_command() {
        assert_eq!(
            wrap(&Command::shell("echo 'a b' $HOME")).unwrap(),
            r#"printf '\036devbatch-pid=%s\n' "$$"; exec /bin/sh -c 'echo '\''a b'\'' $HOME'"#
        );
        assert_eq!(
            wrap(&Command::argv(["printf", "%s", "x; id"])).unwrap(),
            r#"printf '\036devbatch-pid=%s\n' "$$"; exec printf %s 'x; id'"#
        );
        assert!(wrap(&Command::argv(Vec::<String>::new())).is_err());
    }

    #[test]
    fn the_marker_is_found_after_chatter() {
        let buf = b"motd\n\x1edevbatch-pid=4242\nout";
        let (pid, range) = find_marker(buf).unwrap();
        assert_eq!(pid, Some(4242));
        assert_eq!(&buf[..range.start], b"motd\n");
        assert_eq!(&buf[range.end..], b"out");
        assert!(
            find_marker(b"\x1edevbatch-pid=12").is_none(),
            "an unfinished line waits"
        );
    }
}
