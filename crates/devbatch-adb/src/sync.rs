//! The sync service (`sync:`): push and pull of files and directory trees.
//!
//! Every message is read with exact-length reads, so the stream's split into transport packets
//! never matters. Pulls are written under a temporary name next to the destination and renamed
//! at the end; a guard removes the temporary copy on every failure, including cancellation (the
//! guard runs when the future is dropped).

use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::Conn;
use crate::error::AdbError;
use crate::protocol::{
    RemoteStat, STAT_V2_LEN, SYNC_DATA_MAX, errno_text, parse_stat_v1, parse_stat_v2, sync_header,
    sync_path_request,
};

/// An open sync stream.
///
/// A session dropped before [`SyncSession::quit`] (a timeout, a cancellation, an error) resets
/// its connection instead of closing it ([`Conn::reset_unless_finished`]): a normal close would
/// let the adb server relay what is already buffered, DONE included, so a push that timed out
/// could still complete on the device long after (and keep a slow device busy meanwhile). A
/// reset discards the data still on our side; the server relays at most what it had already
/// read (about one socket buffer) and closes the device stream, so the device drops the
/// partial file.
pub(crate) struct SyncSession {
    conn: Conn,
    stat_v2: bool,
    ls_v2: bool,
}

/// Removes a temporary file or directory when dropped, unless disarmed.
pub(crate) struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl TempGuard {
    pub(crate) fn new(path: PathBuf) -> Self {
        TempGuard { path, armed: true }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the temporary copy to its final name and stops guarding it.
    pub(crate) async fn commit(mut self, to: &Path) -> Result<(), AdbError> {
        tokio::fs::rename(&self.path, to)
            .await
            .map_err(|e| AdbError::io(format!("rename to {}", to.display()), e))?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A hidden temporary name beside `dest`.
pub(crate) fn temp_beside(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pull".into());
    dest.with_file_name(format!(
        ".{name}.devbatch-partial-{:08x}",
        fastrand::u32(..)
    ))
}

fn lost(what: String) -> impl FnOnce(std::io::Error) -> AdbError {
    move |e| AdbError::Disconnected(format!("{what}: {e}"))
}

impl SyncSession {
    pub(crate) fn new(conn: Conn, stat_v2: bool, ls_v2: bool) -> Self {
        SyncSession {
            conn: conn.reset_unless_finished(),
            stat_v2,
            ls_v2,
        }
    }

    async fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), AdbError> {
        self.conn
            .stream
            .read_exact(buf)
            .await
            .map(|_| ())
            .map_err(|e| {
                AdbError::Disconnected(format!("the device link was lost while {what} ({e})"))
            })
    }

    async fn read_header(&mut self, what: &str) -> Result<([u8; 4], u32), AdbError> {
        let mut h = [0u8; 8];
        self.read_exact(&mut h, what).await?;
        let id = [h[0], h[1], h[2], h[3]];
        Ok((id, u32::from_le_bytes([h[4], h[5], h[6], h[7]])))
    }

    async fn read_fail(&mut self, len: u32, what: &str) -> Result<String, AdbError> {
        let mut msg = vec![0u8; len.min(64 * 1024) as usize];
        self.read_exact(&mut msg, what).await?;
        Ok(String::from_utf8_lossy(&msg).into_owned())
    }

    async fn send(&mut self, bytes: &[u8], what: &str) -> Result<(), AdbError> {
        self.conn
            .stream
            .write_all(bytes)
            .await
            .map_err(lost(format!("the device link was lost while {what}")))
    }

    /// Stats a remote path; `None` when it does not exist.
    pub(crate) async fn stat(&mut self, path: &str) -> Result<Option<RemoteStat>, AdbError> {
        let what = format!("reading the status of '{path}'");
        if self.stat_v2 {
            self.send(&sync_path_request(b"STA2", path)?, &what).await?;
            let mut reply = [0u8; 4 + STAT_V2_LEN];
            self.read_exact(&mut reply, &what).await?;
            if &reply[..4] != b"STA2" {
                return Err(unexpected(&reply[..4], "STA2"));
            }
            let body: &[u8; STAT_V2_LEN] = reply[4..].try_into().expect("length");
            match parse_stat_v2(body) {
                Ok(st) => Ok(Some(st)),
                Err(2) => Ok(None),
                Err(errno) => Err(AdbError::Remote {
                    context: format!("cannot stat remote '{path}'"),
                    source: std::io::Error::other(errno_text(errno)),
                }),
            }
        } else {
            self.send(&sync_path_request(b"STAT", path)?, &what).await?;
            let mut reply = [0u8; 16];
            self.read_exact(&mut reply, &what).await?;
            if &reply[..4] != b"STAT" {
                return Err(unexpected(&reply[..4], "STAT"));
            }
            let body: &[u8; 12] = reply[4..].try_into().expect("length");
            Ok(parse_stat_v1(body))
        }
    }

    /// Lists a remote directory, without `.` and `..`.
    pub(crate) async fn list(&mut self, dir: &str) -> Result<Vec<(String, RemoteStat)>, AdbError> {
        let what = format!("listing '{dir}'");
        let (req, entry_id, stat_len) = if self.ls_v2 {
            (b"LIS2", b"DNT2", STAT_V2_LEN)
        } else {
            (b"LIST", b"DENT", 12)
        };
        self.send(&sync_path_request(req, dir)?, &what).await?;
        let mut out = Vec::new();
        loop {
            let mut id = [0u8; 4];
            self.read_exact(&mut id, &what).await?;
            if &id == b"FAIL" {
                let mut len = [0u8; 4];
                self.read_exact(&mut len, &what).await?;
                let msg = self.read_fail(u32::from_le_bytes(len), &what).await?;
                return Err(AdbError::Remote {
                    context: format!("cannot list remote '{dir}'"),
                    source: std::io::Error::other(msg),
                });
            }
            let mut body = vec![0u8; stat_len + 4];
            self.read_exact(&mut body, &what).await?;
            if &id == b"DONE" {
                return Ok(out);
            }
            if &id != entry_id {
                return Err(unexpected(&id, "a directory entry"));
            }
            let name_len = u32::from_le_bytes([
                body[stat_len],
                body[stat_len + 1],
                body[stat_len + 2],
                body[stat_len + 3],
            ]) as usize;
            if name_len > 4096 {
                return Err(AdbError::Protocol(format!(
                    "directory entry name of {name_len} bytes in '{dir}'"
                )));
            }
            let mut name = vec![0u8; name_len];
            self.read_exact(&mut name, &what).await?;
            let name = String::from_utf8_lossy(&name).into_owned();
            let st = if self.ls_v2 {
                let b: &[u8; STAT_V2_LEN] = body[..STAT_V2_LEN].try_into().expect("length");
                match parse_stat_v2(b) {
                    Ok(st) => st,
                    Err(_) => continue,
                }
            } else {
                let b: &[u8; 12] = body[..12].try_into().expect("length");
                match parse_stat_v1(b) {
                    Some(st) => st,
                    None => continue,
                }
            };
            if name != "." && name != ".." {
                out.push((name, st));
            }
        }
    }

    /// Sends one local file as `remote` with `mode`; returns the bytes sent.
    pub(crate) async fn send_file(
        &mut self,
        local: &Path,
        remote: &str,
        mode: u32,
        mtime: u32,
    ) -> Result<u64, AdbError> {
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|e| AdbError::io(format!("open {}", local.display()), e))?;
        let total = file
            .metadata()
            .await
            .map_err(|e| AdbError::io(format!("stat {}", local.display()), e))?
            .len();
        let header = sync_path_request(b"SEND", &format!("{remote},{mode}"))?;
        let mut sent: u64 = 0;
        // `sent` counts bytes handed to the server's socket, not bytes the device has stored.
        let broken = |sent: u64, detail: String| {
            AdbError::Disconnected(format!(
                "the device link was lost after handing {sent} of {total} bytes of {} to the adb server, on their way to '{remote}' ({detail})",
                local.display()
            ))
        };
        if let Err(e) = self.conn.stream.write_all(&header).await {
            return Err(self.failed_send(remote, broken(0, e.to_string())).await);
        }
        // Read a large block at a time (each tokio file read is a trip to the blocking pool)
        // and send it as several DATA messages in one write.
        let mut buf = vec![0u8; 16 * SYNC_DATA_MAX];
        let mut msg = Vec::with_capacity(buf.len() + 16 * 8);
        loop {
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| AdbError::io(format!("read {}", local.display()), e))?;
            if n == 0 {
                break;
            }
            msg.clear();
            for chunk in buf[..n].chunks(SYNC_DATA_MAX) {
                msg.extend_from_slice(&sync_header(b"DATA", chunk.len() as u32));
                msg.extend_from_slice(chunk);
            }
            if let Err(e) = self.conn.stream.write_all(&msg).await {
                return Err(self.failed_send(remote, broken(sent, e.to_string())).await);
            }
            sent += n as u64;
        }
        if let Err(e) = self
            .conn
            .stream
            .write_all(&sync_header(b"DONE", mtime))
            .await
        {
            return Err(self.failed_send(remote, broken(sent, e.to_string())).await);
        }
        let mut h = [0u8; 8];
        if let Err(e) = self.conn.stream.read_exact(&mut h).await {
            return Err(broken(sent, format!("no reply to DONE: {e}")));
        }
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        match &h[..4] {
            b"OKAY" => Ok(sent),
            b"FAIL" => {
                let msg = self.read_fail(len, "reading a push failure").await?;
                Err(AdbError::Remote {
                    context: format!("failed to write '{remote}' on the device"),
                    source: std::io::Error::other(msg),
                })
            }
            other => Err(unexpected(other, "OKAY or FAIL")),
        }
    }

    /// After a failed write: the device may have said why (FAIL) before closing.
    async fn failed_send(&mut self, remote: &str, broken: AdbError) -> AdbError {
        let mut h = [0u8; 8];
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            self.conn.stream.read_exact(&mut h),
        )
        .await;
        if matches!(read, Ok(Ok(_))) && &h[..4] == b"FAIL" {
            let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
            if let Ok(msg) = self.read_fail(len, "reading a push failure").await {
                return AdbError::Remote {
                    context: format!("failed to write '{remote}' on the device"),
                    source: std::io::Error::other(msg),
                };
            }
        }
        broken
    }

    /// Receives remote file `remote` into the (new) local file `to`; returns its size.
    pub(crate) async fn recv_file(&mut self, remote: &str, to: &Path) -> Result<u64, AdbError> {
        let what = format!("receiving '{remote}'");
        self.send(&sync_path_request(b"RECV", remote)?, &what)
            .await?;
        let mut file = tokio::fs::File::create(to)
            .await
            .map_err(|e| AdbError::io(format!("create {}", to.display()), e))?;
        let mut got: u64 = 0;
        let mut buf = Vec::with_capacity(SYNC_DATA_MAX);
        loop {
            let (id, len) = match self.read_header(&what).await {
                Ok(x) => x,
                Err(_) => {
                    return Err(AdbError::Disconnected(format!(
                        "the device link was lost after receiving {got} bytes of '{remote}'"
                    )));
                }
            };
            match &id {
                b"DATA" => {
                    if len as usize > SYNC_DATA_MAX {
                        return Err(AdbError::Protocol(format!(
                            "sync DATA message of {len} bytes (at most {SYNC_DATA_MAX} allowed)"
                        )));
                    }
                    buf.resize(len as usize, 0);
                    if self.conn.stream.read_exact(&mut buf).await.is_err() {
                        return Err(AdbError::Disconnected(format!(
                            "the device link was lost after receiving {got} bytes of '{remote}'"
                        )));
                    }
                    file.write_all(&buf)
                        .await
                        .map_err(|e| AdbError::io(format!("write {}", to.display()), e))?;
                    got += u64::from(len);
                }
                b"DONE" => break,
                b"FAIL" => {
                    let msg = self.read_fail(len, &what).await?;
                    return Err(AdbError::Remote {
                        context: format!("failed to read '{remote}' on the device"),
                        source: std::io::Error::other(msg),
                    });
                }
                other => return Err(unexpected(other, "DATA, DONE or FAIL")),
            }
        }
        file.flush()
            .await
            .map_err(|e| AdbError::io(format!("write {}", to.display()), e))?;
        Ok(got)
    }

    /// Ends the session politely, after the work is done: the connection is closed normally.
    pub(crate) async fn quit(mut self) {
        let _ = self.conn.stream.write_all(&sync_header(b"QUIT", 0)).await;
        self.conn.finish();
    }
}

fn unexpected(got: &[u8], wanted: &str) -> AdbError {
    AdbError::Protocol(format!(
        "the sync service sent {:?} where {wanted} was expected",
        String::from_utf8_lossy(got)
    ))
}

/// A remote path joined with a child name.
pub(crate) fn remote_join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(remote_join("/sdcard/", "a b"), "/sdcard/a b");
        assert_eq!(remote_join("/sdcard", "$x"), "/sdcard/$x");
        let t = temp_beside(Path::new("/tmp/out/file.bin"));
        assert_eq!(t.parent(), Some(Path::new("/tmp/out")));
        assert!(
            t.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".file.bin.devbatch-partial-")
        );
    }

    #[test]
    fn guard_removes_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("partial");
        std::fs::write(&p, b"x").unwrap();
        drop(TempGuard::new(p.clone()));
        assert!(!p.exists());
        let d = dir.path().join("partial-dir");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        drop(TempGuard::new(d.clone()));
        assert!(!d.exists());
    }
}
