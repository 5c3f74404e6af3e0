//! Where the CLI's output goes: stdout that may be closed early (`| head`), text from devices
//! made safe for a terminal, and report files checked before the batch runs.

use std::borrow::Cow;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::error::CliError;

/// Held while a document or a line goes to stdout, so that an exit cannot cut it.
static WRITING: Mutex<()> = Mutex::new(());

/// Holds stdout for one whole write (see [`exit_now`]).
pub(crate) fn hold_stdout() -> MutexGuard<'static, ()> {
    WRITING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Exits at once (a second Ctrl-C): kills the local commands still running, lets a write to
/// stdout under way finish (waiting at most 5 s for a reader that does not read), then exits.
pub(crate) fn exit_now(code: i32) -> ! {
    devbatch_local::kill_running();
    let since = Instant::now();
    while since.elapsed() < Duration::from_secs(5) {
        match WRITING.try_lock() {
            Ok(_) | Err(std::sync::TryLockError::Poisoned(_)) => break,
            Err(std::sync::TryLockError::WouldBlock) => {
                std::thread::sleep(Duration::from_millis(10))
            }
        }
    }
    std::process::exit(code)
}

/// Characters a terminal acts on rather than shows: control characters, and the bidirectional
/// overrides and isolates that can make text read differently from what it is.
fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with its control characters (and bidirectional controls) written as escapes (`\n`,
/// `\u{1b}`, `\u{202e}`), so that what a device printed cannot move the cursor, recolour the
/// terminal, reorder the text or break the layout.
pub(crate) fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Writes one line to stderr; a closed stderr is not an error (nor a panic, as `eprintln!`
/// would make it).
pub(crate) fn warn(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Writes `text` to stdout. A reader that went away (`devbatch ... | head -1`) is not an
/// error: the rest of the output has nowhere to go, and the exit code still tells the outcome.
pub(crate) fn emit(text: &str) -> Result<(), CliError> {
    let _whole = hold_stdout();
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => Err(CliError::File {
            context: "cannot write to",
            path: PathBuf::from("standard output"),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// A file a report is written to (`--report`, `--junit`), checked before the batch runs so
/// that a bad path fails before any device is touched.
#[derive(Debug)]
pub(crate) struct ReportFile {
    path: PathBuf,
    /// Written in place rather than replaced: a symlink (written through) or a special file
    /// such as `/dev/stdout` or a pipe.
    in_place: bool,
}

impl ReportFile {
    /// Checks that `path` can be written: an existing file must be writable and not a
    /// folder; a new file's folder must exist and take a new file.
    pub(crate) fn check(path: &Path) -> Result<ReportFile, CliError> {
        let error = |source| CliError::File {
            context: "cannot write",
            path: path.to_path_buf(),
            source,
        };
        let link = std::fs::symlink_metadata(path);
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => Err(error(std::io::Error::new(
                ErrorKind::IsADirectory,
                "it is a folder",
            ))),
            Ok(meta) => {
                let in_place = !meta.is_file() || link.is_ok_and(|l| l.file_type().is_symlink());
                if meta.is_file() {
                    // Opened without truncating: only whether it may be written is asked.
                    OpenOptions::new().write(true).open(path).map_err(error)?;
                }
                Ok(ReportFile {
                    path: path.to_path_buf(),
                    in_place,
                })
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let file = ReportFile {
                    path: path.to_path_buf(),
                    in_place: false,
                };
                // Create and remove the temporary file now: the folder exists and is writable.
                let tmp = file.temporary();
                write_new(&tmp, b"").map_err(error)?;
                let _ = std::fs::remove_file(&tmp);
                Ok(file)
            }
            Err(e) => Err(error(e)),
        }
    }

    /// The name a new report is written under before it is renamed into place.
    /// Unique to this process and call, hidden, beside the report.
    fn temporary(&self) -> PathBuf {
        static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut name = std::ffi::OsString::from(".");
        name.push(self.path.file_name().unwrap_or_default());
        name.push(format!(".devbatch-{}-{call}.tmp", std::process::id()));
        self.path.with_file_name(name)
    }

    /// Writes `text` whole: a regular file through a temporary name and a rename, so that a
    /// reader never sees half a report; a symlink or special file in place.
    pub(crate) fn write(&self, text: &str) -> Result<(), CliError> {
        let error = |source| CliError::File {
            context: "cannot write",
            path: self.path.clone(),
            source,
        };
        if self.in_place {
            return std::fs::write(&self.path, text).map_err(error);
        }
        let tmp = self.temporary();
        write_new(&tmp, text.as_bytes()).map_err(error)?;
        std::fs::rename(&tmp, &self.path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            error(e)
        })
    }
}

/// Writes `bytes` to a file that must not exist yet (never through a symlink or into another
/// run's file); a file that could not be written whole is removed.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)
        .and_then(|()| file.flush())
        .inspect_err(|_| {
            let _ = std::fs::remove_file(path);
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("plain text, ünïcode"), "plain text, ünïcode");
        assert_eq!(
            printable("a\nb\u{1b}[31mred\0\u{7f}"),
            "a\\nb\\u{1b}[31mred\\u{0}\\u{7f}"
        );
        assert_eq!(printable("abc\u{202e}fed"), "abc\\u{202e}fed");
    }

    #[test]
    fn report_paths_are_checked_before_use() {
        let dir = tempfile::tempdir().unwrap();
        let missing_dir = dir.path().join("nope/report.json");
        let e = ReportFile::check(&missing_dir).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot write {}: ", missing_dir.display())),
            "{e}"
        );
        let e = ReportFile::check(dir.path()).unwrap_err().to_string();
        assert!(e.ends_with(": it is a folder"), "{e}");
        // A new file: nothing is left behind by the check, the write creates it.
        let new = dir.path().join("r.json");
        let file = ReportFile::check(&new).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        file.write("{}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&new).unwrap(), "{}\n");
    }

    #[test]
    fn symlinks_are_written_through_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.json");
        std::fs::write(&target, "old").unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        ReportFile::check(&link).unwrap().write("new").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
    }
}
