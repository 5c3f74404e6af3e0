//! Push and pull over SFTP, on a channel of the shared connection.
//!
//! Files stream through a fixed buffer (plus russh-sftp's bounded pipeline of in-flight
//! requests), so memory stays flat whatever the size. Each file is written under a temporary
//! name beside its destination (`.<name>.devbatch-<random>.part`), its mode set from the
//! source, then renamed into place; a transfer that fails or is dropped removes the temporary
//! file, so the final name never holds a partial file. A pulled directory that did not exist is
//! built under a temporary name and renamed as a whole.
//!
//! SFTP v3's rename refuses an existing target, so replacing a remote file removes the old one
//! just before the rename (a brief window without the file; the partial file is never
//! visible).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use devbatch_core::TransferStats;
use russh_sftp::client::SftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::connect::Connection;
use crate::error::SshError;

/// Size of the copy buffer.
const CHUNK: usize = 256 * 1024;

/// An SFTP session on its own channel.
/// How long the server may take to accept or refuse the sftp subsystem.
const SUBSYSTEM_ANSWER: std::time::Duration = std::time::Duration::from_secs(30);

struct Sftp {
    conn: Arc<Connection>,
    session: Arc<SftpSession>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Sftp {
    async fn open(conn: &Arc<Connection>) -> Result<Sftp, SshError> {
        let mut s = conn.open_session().await?;
        s.channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| conn.link_error(e))?;
        // The server's answer, so that one without the subsystem is told at once rather than
        // after the SFTP handshake's whole timeout.
        let refused = || {
            SshError::Failed(format!(
                "{} refused the sftp subsystem; is the server's Subsystem sftp configured?",
                conn.display
            ))
        };
        let answer = tokio::time::timeout(SUBSYSTEM_ANSWER, async {
            loop {
                match s.channel.wait().await {
                    Some(russh::ChannelMsg::Success) => return Ok(()),
                    Some(russh::ChannelMsg::Failure) | Some(russh::ChannelMsg::Close) | None => {
                        return Err(refused());
                    }
                    Some(_) => {}
                }
            }
        })
        .await;
        match answer {
            Ok(result) => result?,
            Err(_) => {
                return Err(SshError::Failed(format!(
                    "{} did not answer the sftp subsystem request within {}s",
                    conn.display,
                    SUBSYSTEM_ANSWER.as_secs()
                )));
            }
        }
        let config = russh_sftp::client::Config {
            request_timeout_secs: 60,
            ..Default::default()
        };
        let session = SftpSession::new_with_config(s.channel.into_stream(), config)
            .await
            .map_err(|e| {
                if conn.is_closed() {
                    SshError::Disconnected {
                        target: conn.display.clone(),
                        message: "the connection closed while starting sftp".into(),
                    }
                } else {
                    SshError::Failed(format!(
                        "{} did not start the sftp subsystem ({e}); is the server's Subsystem sftp configured?",
                        conn.display
                    ))
                }
            })?;
        Ok(Sftp {
            conn: conn.clone(),
            session: Arc::new(session),
            _permit: s.permit,
        })
    }

    fn err(&self, op: &'static str, path: &str, e: SftpError) -> SshError {
        if self.conn.is_closed() {
            return SshError::Disconnected {
                target: self.conn.display.clone(),
                message: format!("the connection closed during sftp {op} {path}"),
            };
        }
        let (message, kind) = match &e {
            SftpError::Status(s) => (
                s.status_code.to_string().to_ascii_lowercase(),
                match s.status_code {
                    StatusCode::NoSuchFile => std::io::ErrorKind::NotFound,
                    StatusCode::PermissionDenied => std::io::ErrorKind::PermissionDenied,
                    _ => std::io::ErrorKind::Other,
                },
            ),
            SftpError::Timeout => (
                "no answer from the server".into(),
                std::io::ErrorKind::TimedOut,
            ),
            other => (other.to_string(), std::io::ErrorKind::Other),
        };
        SshError::Sftp {
            target: self.conn.display.clone(),
            op,
            path: path.to_string(),
            message,
            kind,
        }
    }

    fn io_err(&self, op: &'static str, path: &str, e: std::io::Error) -> SshError {
        if self.conn.is_closed() {
            return SshError::Disconnected {
                target: self.conn.display.clone(),
                message: format!("the connection closed during sftp {op} {path}"),
            };
        }
        SshError::Sftp {
            target: self.conn.display.clone(),
            op,
            path: path.to_string(),
            message: e.to_string(),
            kind: e.kind(),
        }
    }
}

fn temp_sibling_remote(path: &str) -> String {
    let (dir, name) = match path.rsplit_once('/') {
        Some((d, n)) => (Some(d), n),
        None => (None, path),
    };
    let tmp = format!(".{name}.devbatch-{:016x}.part", fastrand::u64(..));
    match dir {
        Some("") => format!("/{tmp}"),
        Some(d) => format!("{d}/{tmp}"),
        None => tmp,
    }
}

fn temp_sibling_local(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.devbatch-{:016x}.part", fastrand::u64(..)))
}

fn join_remote(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Removes a remote temporary file when dropped, unless it was renamed into place.
///
/// The removal runs on the connection's clean-up tracker, which [`Connection::close`] waits
/// for: a transfer dropped by a timeout or a cancel just before the process shuts down still
/// removes its file.
struct RemoteTemp {
    conn: Arc<Connection>,
    session: Arc<SftpSession>,
    path: String,
    armed: bool,
}

impl Drop for RemoteTemp {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let session = self.session.clone();
        let path = std::mem::take(&mut self.path);
        let host = self.conn.display.clone();
        self.conn.cleanups.spawn_on(
            async move {
                // Bounded: a server that stopped answering must not hold up the close.
                match tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    session.remove_file(path.clone()),
                )
                .await
                {
                    Ok(Ok(())) => {
                        tracing::debug!(host = %host, path = %path, "removed the temporary file of an unfinished push")
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(host = %host, path = %path, "could not remove the temporary file of an unfinished push: {e}")
                    }
                    Err(_) => {
                        tracing::warn!(host = %host, path = %path, "could not remove the temporary file of an unfinished push: no answer from the server")
                    }
                }
            },
            &rt,
        );
    }
}

/// Removes a local temporary file or directory when dropped, unless it was renamed into place.
struct LocalTemp {
    path: PathBuf,
    armed: bool,
}

impl Drop for LocalTemp {
    fn drop(&mut self) {
        if self.armed {
            if self.path.is_dir() {
                let _ = std::fs::remove_dir_all(&self.path);
            } else {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

fn local_err(what: &str, path: &Path, e: std::io::Error) -> SshError {
    SshError::local(format!("{what} {}", path.display()), e)
}

#[cfg(unix)]
fn mode_of(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

/// Copies a local file or directory to `remote`.
pub(crate) async fn push(
    conn: &Arc<Connection>,
    local: &Path,
    remote: &str,
) -> Result<TransferStats, SshError> {
    let meta = tokio::fs::metadata(local)
        .await
        .map_err(|e| local_err("read", local, e))?;
    if !meta.is_file() && !meta.is_dir() {
        // A FIFO or a device would be read until the timeout, or forever.
        return Err(SshError::InvalidInput(format!(
            "{} is neither a regular file nor a directory",
            local.display()
        )));
    }
    let sftp = Sftp::open(conn).await?;
    make_remote_parents(&sftp, remote).await?;
    let mut stats = TransferStats::default();
    if !meta.is_dir() {
        stats.bytes = push_file(&sftp, local, remote, mode_of(&meta)).await?;
        stats.files = 1;
        return Ok(stats);
    }
    let mut stack = vec![(local.to_path_buf(), remote.to_string(), mode_of(&meta))];
    while let Some((from, to, mode)) = stack.pop() {
        make_remote_dir(&sftp, &to, mode).await?;
        let mut entries = tokio::fs::read_dir(&from)
            .await
            .map_err(|e| local_err("list", &from, e))?;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| local_err("list", &from, e))?
        {
            let path = entry.path();
            let kind = entry
                .file_type()
                .await
                .map_err(|e| local_err("stat", &path, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let target = join_remote(&to, &name);
            if kind.is_dir() {
                let meta = entry
                    .metadata()
                    .await
                    .map_err(|e| local_err("stat", &path, e))?;
                stack.push((path, target, mode_of(&meta)));
            } else if kind.is_file() {
                let meta = entry
                    .metadata()
                    .await
                    .map_err(|e| local_err("stat", &path, e))?;
                stats.bytes += push_file(&sftp, &path, &target, mode_of(&meta)).await?;
                stats.files += 1;
            } else {
                tracing::warn!(path = %path.display(), "skipped: neither a regular file nor a folder");
                stats.skipped += 1;
            }
        }
    }
    Ok(stats)
}

/// The folder holding `path`, or `None` for a name in the current folder or the root.
fn remote_parent(path: &str) -> Option<&str> {
    let path = path.trim_end_matches('/');
    let parent = path[..path.rfind('/')?].trim_end_matches('/');
    (!parent.is_empty()).then_some(parent)
}

/// Creates the missing folders above `remote` (with the server's default mode), as `adb push`
/// does; a folder another push created meanwhile is fine.
async fn make_remote_parents(sftp: &Sftp, remote: &str) -> Result<(), SshError> {
    let mut missing = Vec::new();
    let mut dir = remote_parent(remote);
    while let Some(d) = dir {
        match sftp.session.metadata(d).await {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(SshError::Sftp {
                    target: sftp.conn.display.clone(),
                    op: "mkdir",
                    path: d.to_string(),
                    message: "exists and is not a directory".into(),
                    kind: std::io::ErrorKind::AlreadyExists,
                });
            }
            Err(_) => {
                missing.push(d);
                dir = remote_parent(d);
            }
        }
    }
    for d in missing.into_iter().rev() {
        if let Err(e) = sftp.session.create_dir(d).await {
            let made_meanwhile = matches!(sftp.session.metadata(d).await, Ok(m) if m.is_dir());
            if !made_meanwhile {
                return Err(sftp.err("mkdir", d, e));
            }
        }
    }
    Ok(())
}

async fn make_remote_dir(sftp: &Sftp, path: &str, mode: u32) -> Result<(), SshError> {
    match sftp.session.metadata(path).await {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(SshError::Sftp {
                target: sftp.conn.display.clone(),
                op: "mkdir",
                path: path.to_string(),
                message: "exists and is not a directory".into(),
                kind: std::io::ErrorKind::AlreadyExists,
            });
        }
        Err(_) => {}
    }
    sftp.session
        .create_dir(path)
        .await
        .map_err(|e| sftp.err("mkdir", path, e))?;
    let mut attrs = FileAttributes::empty();
    attrs.permissions = Some(mode);
    sftp.session
        .set_metadata(path, attrs)
        .await
        .map_err(|e| sftp.err("chmod", path, e))
}

async fn push_file(sftp: &Sftp, local: &Path, remote: &str, mode: u32) -> Result<u64, SshError> {
    let mut input = tokio::fs::File::open(local)
        .await
        .map_err(|e| local_err("read", local, e))?;
    let tmp = temp_sibling_remote(remote);
    let mut attrs = FileAttributes::empty();
    attrs.permissions = Some(mode);
    let mut output = sftp
        .session
        .open_with_flags_and_attributes(
            tmp.clone(),
            OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE | OpenFlags::EXCLUDE,
            attrs.clone(),
        )
        .await
        .map_err(|e| sftp.err("create", remote, e))?;
    let mut guard = RemoteTemp {
        conn: sftp.conn.clone(),
        session: sftp.session.clone(),
        path: tmp.clone(),
        armed: true,
    };
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = input
            .read(&mut buf)
            .await
            .map_err(|e| local_err("read", local, e))?;
        if n == 0 {
            break;
        }
        output
            .write_all(&buf[..n])
            .await
            .map_err(|e| sftp.io_err("write", remote, e))?;
        total += n as u64;
    }
    output
        .close()
        .await
        .map_err(|e| sftp.io_err("write", remote, e))?;
    // The server's umask may have narrowed the mode given at creation.
    sftp.session
        .set_metadata(tmp.clone(), attrs)
        .await
        .map_err(|e| sftp.err("chmod", remote, e))?;
    if let Err(first) = sftp.session.rename(tmp.clone(), remote).await {
        // SFTP v3 rename does not replace: remove the old file, then try again.
        match sftp.session.metadata(remote).await {
            Ok(m) if !m.is_dir() => {
                sftp.session
                    .remove_file(remote)
                    .await
                    .map_err(|e| sftp.err("replace", remote, e))?;
                sftp.session
                    .rename(tmp.clone(), remote)
                    .await
                    .map_err(|e| sftp.err("rename", remote, e))?;
            }
            _ => return Err(sftp.err("rename", remote, first)),
        }
    }
    guard.armed = false;
    Ok(total)
}

/// Copies a remote file or directory to `local`.
pub(crate) async fn pull(
    conn: &Arc<Connection>,
    remote: &str,
    local: &Path,
) -> Result<TransferStats, SshError> {
    let sftp = Sftp::open(conn).await?;
    let meta = sftp
        .session
        .metadata(remote)
        .await
        .map_err(|e| sftp.err("stat", remote, e))?;
    if !meta.file_type().is_dir() && !meta.file_type().is_file() {
        // A FIFO or a device would be read until the timeout, or forever.
        return Err(SshError::InvalidInput(format!(
            "remote '{remote}' on {} is neither a regular file nor a directory",
            sftp.conn.display
        )));
    }
    let mut stats = TransferStats::default();
    if !meta.is_dir() {
        stats.bytes = pull_file(
            &sftp,
            remote,
            local,
            meta.permissions.unwrap_or(0o644) & 0o7777,
        )
        .await?;
        stats.files = 1;
        return Ok(stats);
    }
    // A new directory is built aside and renamed whole; into an existing one, files are
    // renamed into place one by one.
    let fresh = !local.exists();
    let root = if fresh {
        temp_sibling_local(local)
    } else {
        local.to_path_buf()
    };
    let mut guard = LocalTemp {
        path: root.clone(),
        armed: fresh,
    };
    let mut stack = vec![(
        remote.to_string(),
        root.clone(),
        meta.permissions.unwrap_or(0o755) & 0o7777,
    )];
    while let Some((from, to, mode)) = stack.pop() {
        tokio::fs::create_dir_all(&to)
            .await
            .map_err(|e| local_err("create", &to, e))?;
        set_local_mode(&to, mode).await?;
        let entries = sftp
            .session
            .read_dir(from.clone())
            .await
            .map_err(|e| sftp.err("list", &from, e))?;
        for entry in entries {
            let name = entry.file_name();
            if name == "." || name == ".." || name.contains('/') {
                continue;
            }
            let kind = entry.file_type();
            let source = join_remote(&from, &name);
            let target = to.join(&name);
            let mode = entry.metadata().permissions.unwrap_or(0o644) & 0o7777;
            if kind.is_dir() {
                stack.push((source, target, mode));
            } else if kind.is_file() {
                stats.bytes += pull_file(&sftp, &source, &target, mode).await?;
                stats.files += 1;
            } else {
                tracing::warn!(host = %sftp.conn.display, path = %source, "skipped: neither a regular file nor a folder");
                stats.skipped += 1;
            }
        }
    }
    if fresh {
        tokio::fs::rename(&root, local)
            .await
            .map_err(|e| local_err("rename to", local, e))?;
        guard.armed = false;
    }
    Ok(stats)
}

#[cfg(unix)]
async fn set_local_mode(path: &Path, mode: u32) -> Result<(), SshError> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .await
        .map_err(|e| local_err("chmod", path, e))
}

async fn pull_file(sftp: &Sftp, remote: &str, local: &Path, mode: u32) -> Result<u64, SshError> {
    let mut input = sftp
        .session
        .open(remote)
        .await
        .map_err(|e| sftp.err("open", remote, e))?;
    let tmp = temp_sibling_local(local);
    let mut guard = LocalTemp {
        path: tmp.clone(),
        armed: true,
    };
    let mut output = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| local_err("create", &tmp, e))?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = input
            .read(&mut buf)
            .await
            .map_err(|e| sftp.io_err("read", remote, e))?;
        if n == 0 {
            break;
        }
        output
            .write_all(&buf[..n])
            .await
            .map_err(|e| local_err("write", &tmp, e))?;
        total += n as u64;
    }
    output
        .flush()
        .await
        .map_err(|e| local_err("write", &tmp, e))?;
    drop(output);
    let _ = input.close().await;
    set_local_mode(&tmp, mode).await?;
    tokio::fs::rename(&tmp, local)
        .await
        .map_err(|e| local_err("rename to", local, e))?;
    guard.armed = false;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_sit_beside_the_target() {
        let t = temp_sibling_remote("/srv/dir/it's a file");
        assert!(
            t.starts_with("/srv/dir/.it's a file.devbatch-") && t.ends_with(".part"),
            "{t}"
        );
        assert!(temp_sibling_remote("/x").starts_with("/.x.devbatch-"));
        assert!(temp_sibling_remote("rel").starts_with(".rel.devbatch-"));
        assert_eq!(join_remote("/a/", "b"), "/a/b");
        assert_eq!(join_remote("/a", "b c"), "/a/b c");
    }

    #[test]
    fn parents_of_absolute_and_relative_paths() {
        assert_eq!(remote_parent("/srv/a b/f.txt"), Some("/srv/a b"));
        assert_eq!(remote_parent("/srv//dir/"), Some("/srv"));
        assert_eq!(remote_parent("/f.txt"), None);
        assert_eq!(remote_parent("sub/f.txt"), Some("sub"));
        assert_eq!(remote_parent("f.txt"), None);
    }
}
