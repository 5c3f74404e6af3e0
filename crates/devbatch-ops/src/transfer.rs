//! `push` and `pull`: files and directories to and from devices.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use devbatch_core::{
    Capability, Device, DeviceError, Operation, OperationContext, OperationError, OperationFailure,
    ParamSpec, ParamType, Params,
};
use serde_json::{Value, json};

/// Copies a local file or directory to `remote` on every device.
#[derive(Debug, Clone, Copy, Default)]
pub struct PushOperation;

#[async_trait]
impl Operation for PushOperation {
    fn name(&self) -> &str {
        "push"
    }

    fn description(&self) -> &str {
        "copy a local file or directory to the device"
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::required(
                "local",
                ParamType::String,
                "local file or directory to send",
            ),
            ParamSpec::required(
                "remote",
                ParamType::String,
                "path of the copy on the device; ending in `/`, the folder to put it in",
            ),
        ]
    }

    fn idempotent(&self) -> bool {
        true
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_secs(600)
    }

    fn required_capabilities(&self) -> &[Capability] {
        &[Capability::Push]
    }

    fn validate(&self, params: &Params) -> Result<(), OperationError> {
        let local = params.str("local").unwrap_or_default();
        let problem = match std::fs::metadata(local) {
            Err(e) => Some(e.to_string()),
            Ok(m) if !m.is_file() && !m.is_dir() => {
                // A FIFO or a device would be read until the timeout (or forever: /dev/zero).
                Some("neither a regular file nor a directory".to_string())
            }
            Ok(_) => None,
        };
        if let Some(problem) = problem {
            return Err(OperationError::InvalidParam {
                operation: "push".into(),
                param: "local".into(),
                expected: "an existing local file or directory".into(),
                got: format!("{local:?} ({problem})"),
            });
        }
        non_empty("push", "remote", params)
    }

    async fn execute(
        &self,
        device: &dyn Device,
        params: &Params,
        _ctx: &OperationContext,
    ) -> Result<Value, OperationFailure> {
        let local = params.str("local").unwrap_or_default();
        let remote = into_folder(params.str("remote").unwrap_or_default(), Path::new(local));
        let stats = device.push(Path::new(local), &remote).await?;
        Ok(json!({
            "local": local,
            "remote": remote,
            "files": stats.files,
            "bytes": stats.bytes,
            "skipped": stats.skipped,
        }))
    }
}

/// Copies a remote file or directory from every device to `local`, whose `{device}` placeholder
/// becomes the device id so that devices never overwrite each other's files.
#[derive(Debug, Clone, Copy, Default)]
pub struct PullOperation;

const DEVICE_PLACEHOLDER: &str = "{device}";

#[async_trait]
impl Operation for PullOperation {
    fn name(&self) -> &str {
        "pull"
    }

    fn description(&self) -> &str {
        "copy a remote file or directory from the device to a local path per device"
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::required("remote", ParamType::String, "path on the device"),
            ParamSpec::with_default(
                "local",
                ParamType::String,
                json!("pulled/{device}/"),
                "local destination; {device} becomes the device id; a trailing / means \"into this folder\"",
            ),
        ]
    }

    fn idempotent(&self) -> bool {
        true
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_secs(600)
    }

    fn required_capabilities(&self) -> &[Capability] {
        &[Capability::Pull]
    }

    fn validate(&self, params: &Params) -> Result<(), OperationError> {
        non_empty("pull", "remote", params)?;
        non_empty("pull", "local", params)?;
        let local = params.str("local").unwrap_or_default();
        if !local.contains(DEVICE_PLACEHOLDER) {
            return Err(OperationError::InvalidParam {
                operation: "pull".into(),
                param: "local".into(),
                expected:
                    "a path containing {device}, so that devices never overwrite each other's files"
                        .into(),
                got: format!("{local:?}"),
            });
        }
        Ok(())
    }

    async fn execute(
        &self,
        device: &dyn Device,
        params: &Params,
        _ctx: &OperationContext,
    ) -> Result<Value, OperationFailure> {
        let remote = params.str("remote").unwrap_or_default();
        let template = params.str("local").unwrap_or_default();
        let local = local_destination(template, device.id(), remote);
        if let Some(parent) = local.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| DeviceError::io(format!("create {}", parent.display()), e))?;
        }
        let stats = device.pull(remote, &local).await?;
        Ok(json!({
            "remote": remote,
            "local": local.display().to_string(),
            "files": stats.files,
            "bytes": stats.bytes,
            "skipped": stats.skipped,
        }))
    }
}

/// `remote` as the path of the copy: a remote ending in `/` names the folder to put it in, so
/// the local name is added (`/etc/` and `app.conf` give `/etc/app.conf`).
fn into_folder(remote: &str, local: &Path) -> String {
    match local.file_name() {
        Some(name) if remote.ends_with('/') => format!("{remote}{}", name.to_string_lossy()),
        _ => remote.to_string(),
    }
}

fn non_empty(operation: &str, param: &str, params: &Params) -> Result<(), OperationError> {
    let path = params.str(param).unwrap_or_default();
    let got = if path.is_empty() {
        "an empty string"
    } else if path.contains('\0') {
        "a path holding a NUL byte"
    } else {
        return Ok(());
    };
    Err(OperationError::InvalidParam {
        operation: operation.into(),
        param: param.into(),
        expected: "a non-empty path without NUL bytes".into(),
        got: got.into(),
    })
}

/// A device id made safe as one path component, one-to-one: two different ids never share a
/// folder, so one device's pull cannot overwrite another's.
///
/// Plain ids (`web1`, `127.0.0.1:5555`, `emulator-5554`, `user@host`) stay as they are.
/// Percent-encoded (`%XX` per UTF-8 byte) are `%` itself, `/` and `\` (separators), control
/// characters, and a leading `.` (so no id becomes `.`, `..` or a hidden name); the empty id
/// becomes `%`. Since every `%` of an id is encoded, the mapping can be undone, hence is
/// injective: `a/b` gives `a%2Fb` while `a_b` stays `a_b`.
pub fn device_path_component(id: &str) -> String {
    if id.is_empty() {
        return "%".to_string();
    }
    let mut out = String::with_capacity(id.len());
    for (i, c) in id.char_indices() {
        let encode = matches!(c, '%' | '/' | '\\') || c.is_control() || (i == 0 && c == '.');
        if encode {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Where a pull from `device_id` goes: the template with `{device}` filled in; a template
/// ending in `/` means "into this folder", keeping the remote file's name.
fn local_destination(template: &str, device_id: &str, remote: &str) -> PathBuf {
    let filled = template.replace(DEVICE_PLACEHOLDER, &device_path_component(device_id));
    if filled.ends_with('/') {
        let name = remote
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or("root");
        PathBuf::from(filled).join(name)
    } else {
        PathBuf::from(filled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_ending_in_a_slash_is_the_folder_to_push_into() {
        assert_eq!(
            into_folder("/etc/", Path::new("build/app.conf")),
            "/etc/app.conf"
        );
        assert_eq!(into_folder("/srv/", Path::new("site/")), "/srv/site");
        assert_eq!(
            into_folder("/etc/app.conf", Path::new("x.conf")),
            "/etc/app.conf"
        );
    }

    #[test]
    fn destinations_are_per_device_and_cannot_escape() {
        assert_eq!(
            local_destination("pulled/{device}/", "127.0.0.1:6100", "/sdcard/a b.txt"),
            PathBuf::from("pulled/127.0.0.1:6100/a b.txt")
        );
        assert_eq!(
            local_destination("out/{device}.log", "web1", "/var/log/syslog"),
            PathBuf::from("out/web1.log")
        );
        assert_eq!(
            local_destination("p/{device}/", "../../etc", "/x"),
            PathBuf::from("p/%2E.%2F..%2Fetc/x")
        );
        assert_eq!(device_path_component(".."), "%2E.");
        assert_eq!(device_path_component("."), "%2E");
        assert_eq!(device_path_component(".hidden"), "%2Ehidden");
        assert_eq!(device_path_component("a/b"), "a%2Fb");
        assert_eq!(device_path_component("a\\b"), "a%5Cb");
        assert_eq!(device_path_component("a%2Fb"), "a%252Fb");
        assert_eq!(device_path_component("a\0b\n"), "a%00b%0A");
        assert_eq!(device_path_component(""), "%");
    }

    #[test]
    fn device_folders_are_one_to_one() {
        for plain in [
            "web1",
            "127.0.0.1:5555",
            "emulator-5554",
            "root@host.example",
            "a_b",
            "a.b",
            "phone-001",
            "ünïcode",
        ] {
            assert_eq!(
                device_path_component(plain),
                plain,
                "plain ids are unchanged"
            );
        }
        let ids = [
            "a/b", "a_b", "a%2Fb", "a\\b", "a%5Cb", "..", "_..", "%2E.", ".", "_.", "", "%", "_",
            "a\0b", "a%00b", ".a", "%2Ea",
        ];
        let mut seen = std::collections::HashMap::new();
        for id in ids {
            let folder = device_path_component(id);
            assert!(!folder.is_empty() && folder != "." && folder != "..");
            assert!(!folder.starts_with('.') && !folder.contains('/') && !folder.contains('\0'));
            if let Some(other) = seen.insert(folder.clone(), id) {
                panic!("{id:?} and {other:?} share the folder {folder:?}");
            }
        }
        assert_ne!(
            local_destination("pulled/{device}/", "a/b", "/sdcard/f.txt"),
            local_destination("pulled/{device}/", "a_b", "/sdcard/f.txt"),
        );
        assert_eq!(
            local_destination("pulled/{device}/", "a/b", "/sdcard/f.txt"),
            PathBuf::from("pulled/a%2Fb/f.txt")
        );
    }
}
