//! File and directory copies that never leave a partial file under the final name.

use std::path::{Path, PathBuf};

use devbatch_core::{DeviceError, TransferStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Removes a temporary file when dropped, unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Copies `src` (a file, or a directory recursively) to `dst`. Each file is written under a
/// temporary name beside its destination and renamed when complete; dropping the future
/// removes the temporary file.
pub(crate) async fn copy_atomically(src: &Path, dst: &Path) -> Result<TransferStats, DeviceError> {
    let meta = tokio::fs::metadata(src)
        .await
        .map_err(|e| DeviceError::io(format!("read {}", src.display()), e))?;
    let mut stats = TransferStats::default();
    if meta.is_dir() {
        let mut stack = vec![(src.to_path_buf(), dst.to_path_buf())];
        while let Some((from, to)) = stack.pop() {
            tokio::fs::create_dir_all(&to)
                .await
                .map_err(|e| DeviceError::io(format!("create {}", to.display()), e))?;
            let mut entries = tokio::fs::read_dir(&from)
                .await
                .map_err(|e| DeviceError::io(format!("list {}", from.display()), e))?;
            while let Some(entry) = entries
                .next_entry()
                .await
                .map_err(|e| DeviceError::io(format!("list {}", from.display()), e))?
            {
                let kind = entry
                    .file_type()
                    .await
                    .map_err(|e| DeviceError::io(format!("stat {}", entry.path().display()), e))?;
                let target = to.join(entry.file_name());
                if kind.is_dir() {
                    stack.push((entry.path(), target));
                } else if kind.is_file() {
                    stats.bytes += copy_file(&entry.path(), &target).await?;
                    stats.files += 1;
                }
            }
        }
    } else {
        stats.bytes = copy_file(src, dst).await?;
        stats.files = 1;
    }
    Ok(stats)
}

async fn copy_file(src: &Path, dst: &Path) -> Result<u64, DeviceError> {
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dst.with_file_name(format!(".{name}.devbatch-{:016x}.part", fastrand::u64(..)));
    let mut guard = TempFile {
        path: tmp.clone(),
        armed: true,
    };
    let mut input = tokio::fs::File::open(src)
        .await
        .map_err(|e| DeviceError::io(format!("read {}", src.display()), e))?;
    let mode = input
        .metadata()
        .await
        .map_err(|e| DeviceError::io(format!("stat {}", src.display()), e))?
        .permissions();
    let mut output = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| DeviceError::io(format!("create {}", tmp.display()), e))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = input
            .read(&mut buf)
            .await
            .map_err(|e| DeviceError::io(format!("read {}", src.display()), e))?;
        if n == 0 {
            break;
        }
        output
            .write_all(&buf[..n])
            .await
            .map_err(|e| DeviceError::io(format!("write {}", tmp.display()), e))?;
        total += n as u64;
    }
    output
        .flush()
        .await
        .map_err(|e| DeviceError::io(format!("write {}", tmp.display()), e))?;
    drop(output);
    tokio::fs::set_permissions(&tmp, mode)
        .await
        .map_err(|e| DeviceError::io(format!("chmod {}", tmp.display()), e))?;
    tokio::fs::rename(&tmp, dst)
        .await
        .map_err(|e| DeviceError::io(format!("rename to {}", dst.display()), e))?;
    guard.armed = false;
    Ok(total)
}
