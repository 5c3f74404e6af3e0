//! Device services opened by the host (`OPEN` payloads): shell, exec, sync, abb_exec, reboot.

use std::io;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::device::{Shared, StreamIo, StreamWriter};
use crate::sandbox::rewrite_command;

/// Shell protocol v2 packet ids.
pub(crate) const ID_STDIN: u8 = 0;
pub(crate) const ID_STDOUT: u8 = 1;
pub(crate) const ID_STDERR: u8 = 2;
pub(crate) const ID_EXIT: u8 = 3;
pub(crate) const ID_CLOSE_STDIN: u8 = 4;

/// How a shell-like service presents its process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShellMode {
    /// `shell,v2,...:`: framed packets, exit status; with `pty` stdout and stderr merge and `\n` -> `\r\n`.
    V2 { pty: bool },
    /// Legacy `shell:`: a pty on a real device: merged output, `\r\n` line ends, no exit status.
    Legacy,
    /// `exec:`: raw bytes, no pty, merged output, no exit status.
    Exec,
}

/// A parsed service request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Service {
    Shell { mode: ShellMode, term: Option<String>, command: String },
    Sync,
    AbbExec(Vec<String>),
    Reboot(String),
    Root(bool),
}

impl Service {
    /// Parses an OPEN payload; `None` for services the simulator refuses (the host sees `FAIL closed`).
    pub(crate) fn parse(name: &str) -> Option<Service> {
        if let Some(command) = name.strip_prefix("exec:") {
            return Some(Service::Shell { mode: ShellMode::Exec, term: None, command: command.to_string() });
        }
        if name.starts_with("shell:") || name.starts_with("shell,") {
            let (head, command) = name.split_once(':')?;
            let mut v2 = false;
            let mut kind: Option<bool> = None; // Some(true) = pty
            let mut term = None;
            for arg in head.split(',').skip(1) {
                match arg {
                    "v2" => v2 = true,
                    "raw" => kind = Some(false),
                    "pty" => kind = Some(true),
                    "" => {}
                    other => {
                        if let Some(t) = other.strip_prefix("TERM=") {
                            term = Some(t.to_string());
                        }
                    }
                }
            }
            let mode = if v2 {
                // No type given: raw for a command, pty for an interactive shell.
                ShellMode::V2 { pty: kind.unwrap_or(command.is_empty()) }
            } else {
                ShellMode::Legacy
            };
            return Some(Service::Shell { mode, term, command: command.to_string() });
        }
        if name == "sync:" {
            return Some(Service::Sync);
        }
        if let Some(args) = name.strip_prefix("abb_exec:") {
            return Some(Service::AbbExec(args.split('\0').map(str::to_string).collect()));
        }
        if let Some(target) = name.strip_prefix("reboot:") {
            return Some(Service::Reboot(target.to_string()));
        }
        match name {
            "root:" => Some(Service::Root(true)),
            "unroot:" => Some(Service::Root(false)),
            _ => None,
        }
    }
}

/// Runs one service to its end. The caller closes the stream afterwards.
pub(crate) async fn run(shared: &Arc<Shared>, service: Service, io: StreamIo) {
    let result = match service {
        Service::Shell { mode, term, command } => run_shell(shared, io, mode, term.as_deref(), &command).await,
        Service::Sync => crate::sync::run(shared, io).await,
        Service::AbbExec(args) => crate::tools::run_abb_exec(shared, io, args).await,
        Service::Reboot(target) => {
            tracing::info!(addr = %shared.addr, target = %target, "reboot requested");
            // Let the OKAY reach the host before the link goes.
            tokio::time::sleep(Duration::from_millis(100)).await;
            shared.reboot();
            Ok(())
        }
        Service::Root(root) => {
            let text: &[u8] =
                if root { b"adbd is already running as root\n" } else { b"adbd not running as root\n" };
            io.writer.write(text).await
        }
    };
    if let Err(err) = result {
        tracing::debug!(addr = %shared.addr, %err, "service ended with an error");
    }
}

/// Kills a process group when dropped (the shell and everything it started).
pub(crate) struct GroupGuard(Option<i32>);

impl GroupGuard {
    pub(crate) fn new(child: &Child) -> GroupGuard {
        GroupGuard(child.id().and_then(|id| i32::try_from(id).ok()))
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// A `sh -c` for a device command: in the sandbox, with the simulated Android tools first on `PATH` and
/// absolute Android paths rewritten into the sandbox.
pub(crate) fn sh_command(shared: &Shared, command: &str, merge_stderr: bool, term: Option<&str>) -> Command {
    let mut script = String::new();
    if merge_stderr {
        script.push_str("exec 2>&1\n");
    }
    if command.trim().is_empty() {
        script.push_str("exec /bin/sh\n");
    } else {
        script.push_str(&rewrite_command(command, &shared.root));
    }
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .current_dir(&shared.root)
        .env_clear()
        .env(
            "PATH",
            format!("{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", shared.ctl.join("bin").display()),
        )
        .env("HOME", &shared.root)
        .env("TMPDIR", shared.root.join("data/local/tmp"))
        .env("ANDROID_DATA", shared.root.join("data"))
        .env("EXTERNAL_STORAGE", shared.root.join("sdcard"))
        .env("ADBD_SIM_CTL", &shared.ctl)
        .env("ADBD_SIM_ROOT", &shared.root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(if merge_stderr { Stdio::null() } else { Stdio::piped() })
        .process_group(0)
        .kill_on_drop(true);
    if let Some(term) = term {
        cmd.env("TERM", term);
    }
    cmd
}

/// A shell-v2 packet: id, LE u32 length, data.
pub(crate) fn packet(id: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + data.len());
    out.push(id);
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// `\n` -> `\r\n`, as a pty's `onlcr` does.
pub(crate) fn crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 16);
    for &b in data {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

async fn read_opt<R: AsyncRead + Unpin>(reader: &mut Option<R>, buf: &mut [u8]) -> io::Result<usize> {
    match reader {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Sends output in the shape the mode asks for.
async fn emit(writer: &StreamWriter, mode: ShellMode, id: u8, data: &[u8]) -> io::Result<()> {
    match mode {
        ShellMode::V2 { pty: false } => writer.write(&packet(id, data)).await,
        ShellMode::V2 { pty: true } => writer.write(&packet(ID_STDOUT, &crlf(data))).await,
        ShellMode::Legacy => writer.write(&crlf(data)).await,
        ShellMode::Exec => writer.write(data).await,
    }
}

async fn run_shell(
    shared: &Arc<Shared>,
    io: StreamIo,
    mode: ShellMode,
    term: Option<&str>,
    command: &str,
) -> io::Result<()> {
    let StreamIo { mut reader, writer } = io;
    let merge = mode != ShellMode::V2 { pty: false };
    let mut child = match sh_command(shared, command, merge, term).spawn() {
        Ok(child) => child,
        Err(err) => {
            let text = format!("adbd-sim: cannot start /bin/sh: {err}\n");
            emit(&writer, mode, ID_STDERR, text.as_bytes()).await?;
            if matches!(mode, ShellMode::V2 { .. }) {
                writer.write(&packet(ID_EXIT, &[126])).await?;
            }
            return Ok(());
        }
    };
    let _group = GroupGuard::new(&child);
    let mut stdin_tx = child.stdin.take().map(|mut stdin| {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                if stdin.write_all(&data).await.is_err() {
                    break;
                }
            }
        });
        tx
    });
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let chunk = writer.max_payload().saturating_sub(5).clamp(512, 64 * 1024);
    let (mut out_buf, mut err_buf) = (vec![0u8; chunk], vec![0u8; chunk]);
    let mut inbound = Vec::new();
    while stdout.is_some() || stderr.is_some() {
        tokio::select! {
            n = read_opt(&mut stdout, &mut out_buf) => match n {
                Ok(0) | Err(_) => stdout = None,
                Ok(n) => emit(&writer, mode, ID_STDOUT, &out_buf[..n]).await?,
            },
            n = read_opt(&mut stderr, &mut err_buf) => match n {
                Ok(0) | Err(_) => stderr = None,
                Ok(n) => emit(&writer, mode, ID_STDERR, &err_buf[..n]).await?,
            },
            data = reader.recv() => match data {
                // The host closed the stream: the process group dies with `_group`.
                None => return Ok(()),
                Some(data) => {
                    if let ShellMode::V2 { .. } = mode {
                        inbound.extend_from_slice(&data);
                        while let Some((id, payload)) = take_packet(&mut inbound) {
                            match id {
                                ID_STDIN => if let Some(tx) = &stdin_tx { let _ = tx.send(payload); },
                                ID_CLOSE_STDIN => stdin_tx = None,
                                _ => {} // window size and unknown packets
                            }
                        }
                    } else if let Some(tx) = &stdin_tx {
                        let _ = tx.send(data);
                    }
                }
            },
        }
    }
    let status = child.wait().await?;
    if let ShellMode::V2 { .. } = mode {
        let code = exit_code(&status);
        writer.write(&packet(ID_EXIT, &[code])).await?;
    }
    Ok(())
}

/// The exit status as adbd reports it: the code, or 128 + the signal.
pub(crate) fn exit_code(status: &std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => (128 + sig) as u8,
        _ => 255,
    }
}

/// Takes one complete shell-v2 packet off the front of `buf`.
pub(crate) fn take_packet(buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    if buf.len() < 5 {
        return None;
    }
    let len = u32::from_le_bytes(buf[1..5].try_into().expect("4 bytes")) as usize;
    if buf.len() < 5 + len {
        return None;
    }
    let id = buf[0];
    let payload = buf[5..5 + len].to_vec();
    buf.drain(..5 + len);
    Some((id, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_service_strings_the_29_cli_sends() {
        assert_eq!(
            Service::parse("shell,v2,TERM=xterm,raw:echo hi"),
            Some(Service::Shell {
                mode: ShellMode::V2 { pty: false },
                term: Some("xterm".into()),
                command: "echo hi".into()
            })
        );
        assert_eq!(
            Service::parse("shell,v2,TERM=xterm:"),
            Some(Service::Shell { mode: ShellMode::V2 { pty: true }, term: Some("xterm".into()), command: "".into() })
        );
        assert_eq!(
            Service::parse("shell:ls a:b"),
            Some(Service::Shell { mode: ShellMode::Legacy, term: None, command: "ls a:b".into() })
        );
        assert_eq!(
            Service::parse("abb_exec:package\0install\0-S\012"),
            Some(Service::AbbExec(vec!["package".into(), "install".into(), "-S".into(), "12".into()]))
        );
        assert_eq!(Service::parse("sync:"), Some(Service::Sync));
        assert_eq!(Service::parse("jdwp:12"), None);
    }

    #[test]
    fn packets_reassemble_across_reads() {
        let mut buf = packet(ID_STDIN, b"abc");
        buf.extend_from_slice(&packet(ID_CLOSE_STDIN, b"")[..3]);
        assert_eq!(take_packet(&mut buf), Some((ID_STDIN, b"abc".to_vec())));
        assert_eq!(take_packet(&mut buf), None);
        buf.extend_from_slice(&[0, 0]);
        assert_eq!(take_packet(&mut buf), Some((ID_CLOSE_STDIN, vec![])));
        assert_eq!(crlf(b"a\nb\n"), b"a\r\nb\r\n");
    }
}
