//! File and directory copies that never leave a partial file under the final name.

use std::path::{Component, Path, PathBuf};

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

/// Copies `src` (a file, or a directory recursively) to `dst`, creating the folders `dst` needs.
/// Each file is written under a temporary name beside its destination and renamed when
/// complete; dropping the future removes the temporary file.
pub(crate) async fn copy_atomically(src: &Path, dst: &Path) -> Result<TransferStats, DeviceError> {
    let meta = tokio::fs::metadata(src)
        .await
        .map_err(|e| DeviceError::io(format!("read {}", src.display()), e))?;
    if !meta.is_file() && !meta.is_dir() {
        // A FIFO or a device would be read until the timeout, or forever.
        return Err(DeviceError::InvalidInput(format!(
            "{} is neither a regular file nor a directory",
            src.display()
        )));
    }
    let mut stats = TransferStats::default();
    if meta.is_dir() {
        refuse_copy_into_itself(src, dst).await?;
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
                } else {
                    tracing::warn!(path = %entry.path().display(), "skipped: neither a regular file nor a folder");
                    stats.skipped += 1;
                }
            }
        }
    } else {
        if let Some(parent) = dst.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| DeviceError::io(format!("create {}", parent.display()), e))?;
        }
        stats.bytes = copy_file(src, dst).await?;
        stats.files = 1;
    }
    Ok(stats)
}

/// Refuses to copy the directory `src` to `dst` when `dst` is `src` or inside it: the copy
/// would find its own output while walking and recurse until the names got too long.
/// Both paths are compared resolved (symbolic links, `..`, relative paths), `dst` as far as it
/// exists.
async fn refuse_copy_into_itself(src: &Path, dst: &Path) -> Result<(), DeviceError> {
    let from = tokio::fs::canonicalize(src)
        .await
        .map_err(|e| DeviceError::io(format!("resolve {}", src.display()), e))?;
    if let Some(to) = resolve_existing_prefix(dst).await
        && to.starts_with(&from)
    {
        return Err(DeviceError::InvalidInput(format!(
            "cannot copy the directory {} to {}, which is {}",
            src.display(),
            dst.display(),
            if to == from {
                "the directory itself"
            } else {
                "inside it"
            }
        )));
    }
    Ok(())
}

/// `path` made absolute with its longest existing prefix resolved (symbolic links included)
/// and the rest, which does not exist yet, applied lexically. `None` if nothing resolves.
async fn resolve_existing_prefix(path: &Path) -> Option<PathBuf> {
    let components: Vec<Component<'_>> = path.components().collect();
    for existing in (0..=components.len()).rev() {
        let prefix: PathBuf = components[..existing].iter().collect();
        let probe = if prefix.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            prefix
        };
        let Ok(mut resolved) = tokio::fs::canonicalize(&probe).await else {
            continue;
        };
        for component in &components[existing..] {
            match component {
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::Normal(name) => resolved.push(name),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            }
        }
        return Some(resolved);
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;
    use devbatch_core::ErrorKind;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("rec/sub")).unwrap();
        std::fs::write(dir.path().join("rec/a.txt"), "a").unwrap();
        std::fs::write(dir.path().join("rec/sub/b.txt"), "b").unwrap();
        dir
    }

    #[tokio::test]
    async fn a_directory_is_never_copied_into_itself() {
        let dir = tree();
        let rec = dir.path().join("rec");
        let cases = [
            (rec.join("inner"), "inside it"),
            (rec.join("sub/deeper/x"), "inside it"),
            (rec.clone(), "the directory itself"),
            (rec.join("sub/.."), "the directory itself"),
            (dir.path().join("rec/./new/../inner"), "inside it"),
        ];
        for (dst, what) in cases {
            let err = copy_atomically(&rec, &dst).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{}", dst.display());
            assert_eq!(
                err.to_string(),
                format!(
                    "invalid input: cannot copy the directory {} to {}, which is {what}",
                    rec.display(),
                    dst.display()
                )
            );
        }
        assert!(!rec.join("inner").exists() && !rec.join("sub/deeper").exists());
        assert!(!rec.join("new").exists());

        // Through a symbolic link into the source, too.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&rec, &link).unwrap();
        let err = copy_atomically(&rec, &link.join("inner"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(!rec.join("inner").exists());

        // A sibling whose name starts with the source's is fine.
        let stats = copy_atomically(&rec, &dir.path().join("rec2/inner"))
            .await
            .unwrap();
        assert_eq!((stats.files, stats.bytes), (2, 2));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("rec2/inner/sub/b.txt")).unwrap(),
            "b"
        );
    }

    #[tokio::test]
    async fn the_local_device_refuses_a_push_into_the_pushed_directory() {
        use devbatch_core::Device;
        let dir = tree();
        let device = crate::LocalDevice::new("here").with_workdir(dir.path().to_path_buf());
        let err = device
            .push(&dir.path().join("rec"), "rec/inner")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(
            err.to_string(),
            format!(
                "invalid input: cannot copy the directory {} to {}, which is inside it",
                dir.path().join("rec").display(),
                dir.path().join("rec/inner").display()
            )
        );
    }
}
