//! The `sync:` service: STAT/STA2/LST2/LIST/LIS2/SEND/RECV/QUIT with paths mapped into the sandbox.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::device::{Shared, StreamIo, StreamReader, StreamWriter};
use crate::sandbox::map_path;

/// The largest DATA chunk adbd accepts and sends.
pub(crate) const SYNC_DATA_MAX: usize = 64 * 1024;
/// The longest path a sync request may carry.
const SYNC_PATH_MAX: usize = 1024;
const S_IFMT: u32 = 0o170000;
const S_IFLNK: u32 = 0o120000;

fn id(tag: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*tag)
}

/// Buffered reading of the sync byte stream, independent of WRTE boundaries.
struct SyncIn {
    reader: StreamReader,
    buf: Vec<u8>,
}

impl SyncIn {
    /// Exactly `n` bytes; `None` when the stream ended first.
    async fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            let more = self.reader.recv().await?;
            self.buf.extend_from_slice(&more);
        }
        let rest = self.buf.split_off(n);
        Some(std::mem::replace(&mut self.buf, rest))
    }

    /// A request header: id and the u32 argument.
    async fn header(&mut self) -> Option<(u32, u32)> {
        let h = self.take(8).await?;
        Some((u32::from_le_bytes(h[0..4].try_into().ok()?), u32::from_le_bytes(h[4..8].try_into().ok()?)))
    }
}

/// strerror-like text for an I/O error, as adbd puts it in FAIL.
fn errno_text(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => err.to_string(),
    }
}

fn errno_of(err: &io::Error) -> u32 {
    err.raw_os_error().map(|c| c as u32).unwrap_or(5) // EIO
}

async fn fail(writer: &StreamWriter, msg: &str) -> io::Result<()> {
    let mut out = b"FAIL".to_vec();
    out.extend_from_slice(&(msg.len() as u32).to_le_bytes());
    out.extend_from_slice(msg.as_bytes());
    writer.write(&out).await
}

/// The 68 bytes of a stat_v2 record after the id: error, dev, ino, mode, nlink, uid, gid, size, a/m/ctime.
fn stat_v2_bytes(meta: Result<&std::fs::Metadata, u32>) -> Vec<u8> {
    let mut out = Vec::with_capacity(68);
    match meta {
        Ok(m) => {
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&m.dev().to_le_bytes());
            out.extend_from_slice(&m.ino().to_le_bytes());
            out.extend_from_slice(&m.mode().to_le_bytes());
            out.extend_from_slice(&(m.nlink() as u32).to_le_bytes());
            out.extend_from_slice(&m.uid().to_le_bytes());
            out.extend_from_slice(&m.gid().to_le_bytes());
            out.extend_from_slice(&m.size().to_le_bytes());
            out.extend_from_slice(&m.atime().to_le_bytes());
            out.extend_from_slice(&m.mtime().to_le_bytes());
            out.extend_from_slice(&m.ctime().to_le_bytes());
        }
        Err(errno) => {
            out.extend_from_slice(&errno.to_le_bytes());
            out.resize(68, 0);
        }
    }
    out
}

/// The 12 bytes of a v1 STAT/DENT record: mode, size, mtime (all zero when missing).
fn stat_v1_bytes(meta: Option<&std::fs::Metadata>) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    match meta {
        Some(m) => {
            out.extend_from_slice(&m.mode().to_le_bytes());
            out.extend_from_slice(&(m.size() as u32).to_le_bytes());
            out.extend_from_slice(&(m.mtime() as u32).to_le_bytes());
        }
        None => out.resize(12, 0),
    }
    out
}

/// Serves one `sync:` stream until QUIT or the end of the stream.
pub(crate) async fn run(shared: &Arc<Shared>, io: StreamIo) -> io::Result<()> {
    let StreamIo { reader, writer } = io;
    let mut input = SyncIn { reader, buf: Vec::new() };
    loop {
        let Some((request, len)) = input.header().await else { return Ok(()) };
        if request == id(b"QUIT") {
            return Ok(());
        }
        if len as usize > SYNC_PATH_MAX {
            return fail(&writer, "path too long").await;
        }
        let Some(raw) = input.take(len as usize).await else { return Ok(()) };
        let arg = String::from_utf8_lossy(&raw).into_owned();
        match &request.to_le_bytes() {
            b"STAT" => {
                let meta = std::fs::symlink_metadata(map_path(&shared.root, &arg)).ok();
                let mut out = b"STAT".to_vec();
                out.extend_from_slice(&stat_v1_bytes(meta.as_ref()));
                writer.write(&out).await?;
            }
            tag @ (b"STA2" | b"LST2") => {
                let path = map_path(&shared.root, &arg);
                let meta =
                    if tag == b"STA2" { std::fs::metadata(&path) } else { std::fs::symlink_metadata(&path) };
                let mut out = tag.to_vec();
                out.extend_from_slice(&stat_v2_bytes(meta.as_ref().map_err(errno_of)));
                writer.write(&out).await?;
            }
            tag @ (b"LIST" | b"LIS2") => list(shared, &writer, &arg, tag == b"LIS2").await?,
            b"SEND" => {
                if !send(shared, &mut input, &writer, &arg).await? {
                    return Ok(());
                }
            }
            b"RECV" => recv(shared, &writer, &arg).await?,
            other => {
                let msg = format!("unknown sync command {}", String::from_utf8_lossy(other));
                return fail(&writer, &msg).await;
            }
        }
    }
}

async fn list(shared: &Shared, writer: &StreamWriter, dir: &str, v2: bool) -> io::Result<()> {
    let path = map_path(&shared.root, dir);
    let mut out = Vec::new();
    let mut names: Vec<(Vec<u8>, std::path::PathBuf)> =
        vec![(b".".to_vec(), path.clone()), (b"..".to_vec(), path.parent().unwrap_or(&path).to_path_buf())];
    if let Ok(entries) = std::fs::read_dir(&path) {
        for entry in entries.flatten() {
            use std::os::unix::ffi::OsStrExt;
            names.push((entry.file_name().as_bytes().to_vec(), entry.path()));
        }
        for (name, full) in names {
            let meta = std::fs::symlink_metadata(&full);
            if v2 {
                out.extend_from_slice(b"DNT2");
                out.extend_from_slice(&stat_v2_bytes(meta.as_ref().map_err(errno_of)));
            } else {
                out.extend_from_slice(b"DENT");
                out.extend_from_slice(&stat_v1_bytes(meta.as_ref().ok()));
            }
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(&name);
        }
    }
    out.extend_from_slice(b"DONE");
    out.resize(out.len() + if v2 { 72 } else { 16 }, 0);
    writer.write(&out).await
}

/// Receives one file. `Ok(false)` when the stream ended in the middle (the partial file is removed, as
/// adbd does).
async fn send(shared: &Shared, input: &mut SyncIn, writer: &StreamWriter, arg: &str) -> io::Result<bool> {
    let (path_text, mode) = match arg.rsplit_once(',') {
        Some((p, m)) => (p, m.parse::<u32>().unwrap_or(0o100644)),
        None => (arg, 0o100644),
    };
    let path = map_path(&shared.root, path_text);
    let is_link = mode & S_IFMT == S_IFLNK;
    let mut error: Option<String> = None;
    let mut file = None;
    // Removes the partial file however this ends (the link may drop and abort the task), as adbd does.
    let mut partial = PartialFile(None);
    let mut link_target = Vec::new();
    if let Some(parent) = path.parent()
        && let Err(err) = tokio::fs::create_dir_all(parent).await
    {
        error = Some(format!("couldn't create directory for '{path_text}': {}", errno_text(&err)));
    }
    if error.is_none() && !is_link {
        if tokio::fs::symlink_metadata(&path).await.is_ok_and(|m| m.is_dir()) {
            error = Some(format!("couldn't create file '{path_text}': Is a directory"));
        } else {
            match tokio::fs::File::create(&path).await {
                Ok(f) => {
                    file = Some(f);
                    partial.0 = Some(path.clone());
                }
                Err(err) => error = Some(format!("couldn't create file '{path_text}': {}", errno_text(&err))),
            }
        }
    }
    loop {
        let Some((tag, len)) = input.header().await else { return Ok(false) };
        if tag == id(b"DATA") {
            if len as usize > SYNC_DATA_MAX {
                fail(writer, "oversize data message").await?;
                return Ok(false);
            }
            let Some(data) = input.take(len as usize).await else { return Ok(false) };
            if is_link {
                link_target.extend_from_slice(&data);
            } else if let Some(f) = file.as_mut()
                && let Err(err) = f.write_all(&data).await
            {
                error = Some(format!("write failed: {}", errno_text(&err)));
                file = None;
            }
        } else if tag == id(b"DONE") {
            let mtime = UNIX_EPOCH + Duration::from_secs(u64::from(len));
            if let Some(msg) = error {
                fail(writer, &msg).await?;
                return Ok(true);
            }
            let result = if is_link {
                finish_link(&path, &link_target)
            } else {
                finish_file(file.take(), &path, mode, mtime).await
            };
            match result {
                Ok(()) => {
                    partial.0 = None;
                    let mut ok = b"OKAY".to_vec();
                    ok.extend_from_slice(&0u32.to_le_bytes());
                    writer.write(&ok).await?;
                }
                Err(err) => fail(writer, &format!("{path_text}: {}", errno_text(&err))).await?,
            }
            return Ok(true);
        } else {
            fail(writer, "invalid data message: expected DATA or DONE").await?;
            return Ok(false);
        }
    }
}

/// A file being received; removed on drop unless disarmed.
struct PartialFile(Option<std::path::PathBuf>);

impl Drop for PartialFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn finish_link(path: &Path, target: &[u8]) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let _ = std::fs::remove_file(path);
    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target.strip_suffix(b"\0").unwrap_or(target)), path)
}

async fn finish_file(file: Option<tokio::fs::File>, path: &Path, mode: u32, mtime: SystemTime) -> io::Result<()> {
    let Some(mut file) = file else { return Err(io::Error::from_raw_os_error(5)) };
    file.flush().await?;
    let file = file.into_std().await;
    file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
    file.set_modified(mtime)?;
    let _ = path;
    Ok(())
}

async fn recv(shared: &Shared, writer: &StreamWriter, arg: &str) -> io::Result<()> {
    let path = map_path(&shared.root, arg);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(err) => return fail(writer, &errno_text(&err)).await,
    };
    if file.metadata().await.is_ok_and(|m| m.is_dir()) {
        return fail(writer, "Is a directory").await;
    }
    let mut buf = vec![0u8; SYNC_DATA_MAX];
    loop {
        let n = match file.read(&mut buf).await {
            Ok(n) => n,
            Err(err) => return fail(writer, &errno_text(&err)).await,
        };
        if n == 0 {
            break;
        }
        let mut out = Vec::with_capacity(8 + n);
        out.extend_from_slice(b"DATA");
        out.extend_from_slice(&(n as u32).to_le_bytes());
        out.extend_from_slice(&buf[..n]);
        writer.write(&out).await?;
    }
    let mut done = b"DONE".to_vec();
    done.extend_from_slice(&0u32.to_le_bytes());
    writer.write(&done).await
}
