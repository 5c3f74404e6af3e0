//! Mapping Android paths into a device's sandbox directory.

use std::path::{Component, Path, PathBuf};

/// Top-level Android directories whose absolute paths in shell command lines are rewritten into the sandbox.
/// `/dev`, `/proc` and `/sys` stay the host's (`/dev/null` must keep working).
const ANDROID_TOP_DIRS: &[&str] = &[
    "data", "sdcard", "storage", "system", "vendor", "product", "system_ext", "mnt", "cache", "odm", "apex",
    "oem", "metadata",
];

/// Maps an Android path (absolute, or relative to `/`) to a path below `root`. `.` and `..` are resolved
/// lexically and never climb above `root`.
pub(crate) fn map_path(root: &Path, android_path: &str) -> PathBuf {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for component in Path::new(android_path).components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::ParentDir => {
                parts.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    let mut path = root.to_path_buf();
    path.extend(parts);
    path
}

/// Rewrites absolute Android paths (`/data/...`, `/sdcard`, ...) in a shell command line so they point
/// into the sandbox. A path is recognised where a word can start: at the beginning, after whitespace, a
/// quote, `=`, `:`, `(`, `;`, `|`, `&`, `<`, `>` or a backquote. The sandbox path is inserted verbatim,
/// so it is kept free of characters the shell would interpret (it is a temporary directory path).
pub(crate) fn rewrite_command(command: &str, root: &Path) -> String {
    let root = root.to_string_lossy();
    let bytes = command.as_bytes();
    let mut out = String::with_capacity(command.len() + 64);
    let mut i = 0;
    let mut last = 0;
    while i < bytes.len() {
        if bytes[i] == b'/' {
            let boundary = i == 0 || matches!(bytes[i - 1], b' ' | b'\t' | b'\n' | b'\'' | b'"' | b'=' | b':' | b'(' | b';' | b'|' | b'&' | b'<' | b'>' | b'`');
            if boundary {
                let rest = &command[i + 1..];
                let hit = ANDROID_TOP_DIRS.iter().any(|dir| {
                    rest.starts_with(dir)
                        && rest[dir.len()..]
                            .bytes()
                            .next()
                            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.'))
                });
                if hit {
                    out.push_str(&command[last..i]);
                    out.push_str(&root);
                    last = i;
                }
            }
        }
        i += 1;
    }
    out.push_str(&command[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_path_stays_inside_the_sandbox() {
        let root = Path::new("/sb");
        assert_eq!(map_path(root, "/data/local/tmp/a b"), PathBuf::from("/sb/data/local/tmp/a b"));
        assert_eq!(map_path(root, "/../../etc/passwd"), PathBuf::from("/sb/etc/passwd"));
        assert_eq!(map_path(root, "sdcard/./x/../y"), PathBuf::from("/sb/sdcard/y"));
        assert_eq!(map_path(root, "/"), PathBuf::from("/sb"));
    }

    #[test]
    fn rewrite_touches_android_dirs_only() {
        let root = Path::new("/tmp/sb");
        assert_eq!(
            rewrite_command("cat '/data/local/tmp/a b'\\''c$d.txt' >/dev/null", root),
            "cat '/tmp/sb/data/local/tmp/a b'\\''c$d.txt' >/dev/null"
        );
        assert_eq!(rewrite_command("ls /sdcard;ls /database /etc", root), "ls /tmp/sb/sdcard;ls /database /etc");
        assert_eq!(rewrite_command("echo a/data/b x=/system", root), "echo a/data/b x=/tmp/sb/system");
        assert_eq!(rewrite_command("cd /data && pwd", root), "cd /tmp/sb/data && pwd");
    }
}
