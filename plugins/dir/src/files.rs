//! Copies for push and pull: files and directory trees, written under a temporary sibling name
//! and renamed into place. Runs on the plugin's own runtime (`tokio::fs` needs it).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use devbatch_core::{DeviceError, TransferStats};

/// An I/O error and the path it happened on.
#[derive(Debug)]
pub(crate) struct CopyError {
    path: PathBuf,
    source: io::Error,
}

impl CopyError {
    /// The error as a device error, with what was being done.
    pub(crate) fn into_device_error(self, what: &str) -> DeviceError {
        if self.source.kind() == io::ErrorKind::InvalidInput {
            return DeviceError::InvalidInput(format!(
                "{what}: {}: {}",
                self.path.display(),
                self.source
            ));
        }
        DeviceError::io(format!("{what}: {}", self.path.display()), self.source)
    }
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> CopyError + '_ {
    move |source| CopyError {
        path: path.to_path_buf(),
        source,
    }
}

/// Removes a half-written copy when dropped (a failed or aborted transfer).
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
    }
}

fn temp_sibling(dst: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dst.with_file_name(format!(
        ".{name}.devbatch-{}-{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Copies the file or directory `src` to `dst` (which names the copy itself), creating `dst`'s
/// parent directories and replacing what was at `dst`.
pub(crate) async fn copy_atomically(src: &Path, dst: &Path) -> Result<TransferStats, CopyError> {
    let meta = tokio::fs::metadata(src).await.map_err(at(src))?;
    if !meta.is_file() && !meta.is_dir() {
        // A FIFO or a device would be read until the timeout, or forever.
        return Err(CopyError {
            path: src.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                "neither a regular file nor a directory",
            ),
        });
    }
    if let Some(parent) = dst.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(at(parent))?;
    }
    let tmp = temp_sibling(dst);
    let mut cleanup = RemoveOnDrop(Some(tmp.clone()));
    let stats = if meta.is_dir() {
        copy_tree(src, &tmp).await?
    } else {
        let bytes = tokio::fs::copy(src, &tmp).await.map_err(at(src))?;
        TransferStats {
            files: 1,
            bytes,
            ..TransferStats::default()
        }
    };
    // `rename` replaces a file atomically, but not a non-empty directory.
    if tokio::fs::symlink_metadata(dst)
        .await
        .is_ok_and(|m| m.is_dir())
    {
        tokio::fs::remove_dir_all(dst).await.map_err(at(dst))?;
    }
    tokio::fs::rename(&tmp, dst).await.map_err(at(dst))?;
    cleanup.0 = None;
    Ok(stats)
}

/// Copies a directory tree; symbolic links inside it are copied as links.
async fn copy_tree(src: &Path, dst: &Path) -> Result<TransferStats, CopyError> {
    let mut stats = TransferStats::default();
    let mut pending = vec![(src.to_path_buf(), dst.to_path_buf())];
    while let Some((from, to)) = pending.pop() {
        tokio::fs::create_dir(&to).await.map_err(at(&to))?;
        let mut entries = tokio::fs::read_dir(&from).await.map_err(at(&from))?;
        while let Some(entry) = entries.next_entry().await.map_err(at(&from))? {
            let path = entry.path();
            let target = to.join(entry.file_name());
            let kind = entry.file_type().await.map_err(at(&path))?;
            if kind.is_dir() {
                pending.push((path, target));
            } else if kind.is_symlink() {
                let link = tokio::fs::read_link(&path).await.map_err(at(&path))?;
                tokio::fs::symlink(&link, &target)
                    .await
                    .map_err(at(&target))?;
            } else if kind.is_file() {
                stats.bytes += tokio::fs::copy(&path, &target).await.map_err(at(&path))?;
                stats.files += 1;
            } else {
                // FIFOs, sockets, device nodes: left out and counted.
                stats.skipped += 1;
            }
        }
    }
    Ok(stats)
}
