//! `install_app` and `uninstall_app`, with the package manager's text read truthfully.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use devbatch_core::{
    Capability, Command, Device, DeviceError, Operation, OperationContext, OperationError,
    OperationFailure, ParamSpec, ParamType, Params,
};
use serde_json::{Value, json};

use super::{adb, first_lines};
use crate::AdbDevice;
use crate::error::AdbError;

/// What the package manager printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PmOutcome {
    /// A line starting with `Success`.
    Success,
    /// `Failure [CODE: detail]`: the whole line and the code.
    Failure { line: String, code: Option<String> },
    /// No verdict line; the first lines of whatever was printed (an exception trace, an
    /// `Error:` line, or nothing).
    Other(String),
}

/// Reads package manager output. A `Failure` line wins over everything, then `Success`;
/// anything else (exception traces, `Error:` lines, silence) is a failure too.
pub(crate) fn parse_pm_output(text: &str) -> PmOutcome {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    if let Some(line) = lines.iter().find(|l| l.starts_with("Failure")) {
        let code = line
            .split_once('[')
            .and_then(|(_, rest)| rest.split([']', ':', ' ']).next())
            .filter(|c| !c.is_empty())
            .map(str::to_string);
        return PmOutcome::Failure {
            line: line.to_string(),
            code,
        };
    }
    if lines.iter().any(|l| l.starts_with("Success")) {
        return PmOutcome::Success;
    }
    let head = first_lines(text, 3);
    PmOutcome::Other(if head.is_empty() {
        "the package manager printed nothing".into()
    } else {
        head
    })
}

/// The verdict as a result or an error with `partial` carrying the raw output.
fn verdict(what: &str, output: &str, ok: Value) -> Result<Value, OperationFailure> {
    match parse_pm_output(output) {
        PmOutcome::Success => Ok(ok),
        PmOutcome::Failure { line, code } => Err(OperationFailure::with_partial(
            DeviceError::Failed(format!("{what} failed: {line}")),
            json!({"failure_code": code, "output": output}),
        )),
        PmOutcome::Other(head) => Err(OperationFailure::with_partial(
            DeviceError::Failed(format!("{what} failed: {head}")),
            json!({"failure_code": null, "output": output}),
        )),
    }
}

/// Installs an APK on each device.
///
/// The method follows the device's features, as the adb client does: `abb_exec` (Android 10+)
/// streams the APK to `package install -S SIZE`; `cmd` (Android 7-9) streams it to
/// `exec:cmd package install -S SIZE`; older devices get a sync push to `/data/local/tmp`, then
/// `pm install`, and the temporary file is removed whatever happened. Success is the
/// package manager's `Success` line; `Failure [CODE]` and exception text are errors carrying
/// the code or the first lines, whatever the exit status.
#[derive(Debug, Clone, Copy, Default)]
pub struct InstallAppOperation;

#[async_trait]
impl Operation for InstallAppOperation {
    fn name(&self) -> &str {
        "install_app"
    }

    fn description(&self) -> &str {
        "install an APK (replace, downgrade and permission grants optional)"
    }

    fn backend(&self) -> Option<&str> {
        Some("adb")
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::required("app_path", ParamType::String, "local path of the APK"),
            ParamSpec::with_default(
                "replace",
                ParamType::Boolean,
                json!(true),
                "replace an installed app, keeping its data (-r)",
            ),
            ParamSpec::with_default(
                "allow_downgrade",
                ParamType::Boolean,
                json!(false),
                "allow a lower version code (-d)",
            ),
            ParamSpec::with_default(
                "grant_permissions",
                ParamType::Boolean,
                json!(false),
                "grant all runtime permissions (-g)",
            ),
        ]
    }

    fn idempotent(&self) -> bool {
        true
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_secs(300)
    }

    fn required_capabilities(&self) -> &[Capability] {
        &[Capability::Exec, Capability::Push]
    }

    fn validate(&self, params: &Params) -> Result<(), OperationError> {
        let path = params.str("app_path").unwrap_or_default();
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(OperationError::InvalidParam {
                operation: "install_app".into(),
                param: "app_path".into(),
                expected: "an APK file".into(),
                got: format!("{path:?} (not a regular file)"),
            }),
            Err(e) => Err(OperationError::InvalidParam {
                operation: "install_app".into(),
                param: "app_path".into(),
                expected: "the path of an existing file (the APK)".into(),
                got: format!("{path:?} ({e})"),
            }),
        }
    }

    async fn execute(
        &self,
        device: &dyn Device,
        params: &Params,
        ctx: &OperationContext,
    ) -> Result<Value, OperationFailure> {
        let dev = adb(device)?;
        let path = Path::new(params.str("app_path").unwrap_or_default());
        let size = std::fs::metadata(path)
            .map_err(|e| DeviceError::io(format!("read {}", path.display()), e))?
            .len();
        let mut flags = Vec::new();
        if params.flag("replace") {
            flags.push("-r");
        }
        if params.flag("allow_downgrade") {
            flags.push("-d");
        }
        if params.flag("grant_permissions") {
            flags.push("-g");
        }
        let package = crate::ops::install::apk_package(path);
        let features = dev.features().await?;
        let has = |f: &str| features.iter().any(|x| x == f);
        let (method, output) = if has("abb_exec") {
            let mut service = String::from("abb_exec:package\0install");
            for f in &flags {
                service.push('\0');
                service.push_str(f);
            }
            service.push_str(&format!("\0-S\0{size}"));
            let out = dev
                .exec_raw(&service, Some(path), ctx.max_output())
                .await
                .map_err(DeviceError::from)?;
            ("abb_exec", out)
        } else if has("cmd") {
            let service = format!("exec:cmd package 'install' {} -S {size}", flags.join(" "));
            let out = dev
                .exec_raw(&service, Some(path), ctx.max_output())
                .await
                .map_err(DeviceError::from)?;
            ("exec_cmd", out)
        } else {
            (
                "pm_install",
                legacy_install(dev, path, &flags, ctx.max_output()).await?,
            )
        };
        let output = String::from_utf8_lossy(&output).into_owned();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        verdict(
            &format!("install of {name}"),
            &output,
            json!({"app_path": path.display().to_string(), "package": package, "method": method, "bytes": size}),
        )
    }
}

/// Push to `/data/local/tmp`, `pm install`, and remove the file in every case.
async fn legacy_install(
    dev: &AdbDevice,
    path: &Path,
    flags: &[&str],
    max_output: usize,
) -> Result<Vec<u8>, DeviceError> {
    let remote = format!("/data/local/tmp/devbatch-{:08x}.apk", fastrand::u32(..));
    /// Removes the temporary APK when dropped (also on timeout), in a task of its own.
    struct Cleanup<'a> {
        dev: &'a AdbDevice,
        remote: String,
        done: bool,
    }
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            if !self.done {
                let dev_cmd = Command::argv(["rm", "-f", self.remote.as_str()]);
                let server = self.dev.detached();
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(async move {
                        let _ = server.run_inner(&dev_cmd).await;
                    });
                }
            }
        }
    }
    let mut cleanup = Cleanup {
        dev,
        remote: remote.clone(),
        done: false,
    };
    let result = async {
        dev.push_inner(path, &remote).await?;
        let mut argv = vec!["pm", "install"];
        argv.extend_from_slice(flags);
        argv.push(&remote);
        let out = dev
            .run_inner(&Command::argv(argv).with_max_output(max_output))
            .await?;
        let mut text = out.stdout;
        text.extend(out.stderr);
        Ok::<_, AdbError>(text)
    }
    .await;
    let removed = dev
        .run_inner(&Command::argv(["rm", "-f", remote.as_str()]))
        .await;
    cleanup.done = true;
    let text = result?;
    if let Err(e) = removed {
        tracing::warn!(device = dev.serial(), "could not remove {remote}: {e}");
    }
    Ok(text)
}

/// Removes a package from each device.
#[derive(Debug, Clone, Copy, Default)]
pub struct UninstallAppOperation;

#[async_trait]
impl Operation for UninstallAppOperation {
    fn name(&self) -> &str {
        "uninstall_app"
    }

    fn description(&self) -> &str {
        "remove an installed package (optionally keeping its data)"
    }

    fn backend(&self) -> Option<&str> {
        Some("adb")
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::required(
                "package",
                ParamType::String,
                "the package name, e.g. com.example.app",
            ),
            ParamSpec::with_default(
                "keep_data",
                ParamType::Boolean,
                json!(false),
                "keep the app's data and caches (-k)",
            ),
        ]
    }

    fn idempotent(&self) -> bool {
        false
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_secs(120)
    }

    fn required_capabilities(&self) -> &[Capability] {
        &[Capability::Exec]
    }

    fn validate(&self, params: &Params) -> Result<(), OperationError> {
        let pkg = params.str("package").unwrap_or_default();
        let ok = !pkg.is_empty()
            && pkg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
        if ok {
            Ok(())
        } else {
            Err(OperationError::InvalidParam {
                operation: "uninstall_app".into(),
                param: "package".into(),
                expected: "a package name (letters, digits, '.' and '_')".into(),
                got: format!("{pkg:?}"),
            })
        }
    }

    async fn execute(
        &self,
        device: &dyn Device,
        params: &Params,
        ctx: &OperationContext,
    ) -> Result<Value, OperationFailure> {
        let dev = adb(device)?;
        let pkg = params.str("package").unwrap_or_default();
        let features = dev.features().await?;
        let mut argv: Vec<&str> = if features.iter().any(|f| f == "cmd") {
            vec!["cmd", "package", "uninstall"]
        } else {
            vec!["pm", "uninstall"]
        };
        if params.flag("keep_data") {
            argv.push("-k");
        }
        argv.push(pkg);
        let out = device
            .run(&Command::argv(argv).with_max_output(ctx.max_output()))
            .await?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        verdict(
            &format!("uninstall of {pkg}"),
            &text,
            json!({"package": pkg, "uninstalled": true, "kept_data": params.flag("keep_data")}),
        )
    }
}

/// The package name an APK declares, when it can be read without inflating: the
/// `AndroidManifest.xml` entry stored uncompressed, as text XML or binary AXML.
pub(crate) fn apk_package(path: &Path) -> Option<String> {
    let data = std::fs::read(path).ok()?;
    let manifest = stored_zip_entry(&data, "AndroidManifest.xml")?;
    if let Ok(text) = std::str::from_utf8(manifest)
        && let Some(i) = text.find("package=\"")
    {
        let rest = &text[i + 9..];
        return rest.split('"').next().map(str::to_string);
    }
    axml_package(manifest)
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The data of a zip entry stored without compression (local file headers scanned in order).
fn stored_zip_entry<'a>(zip: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let mut at = 0;
    while le32(zip, at)? == 0x0403_4b50 {
        let method = le16(zip, at + 8)?;
        let size = le32(zip, at + 18)? as usize;
        let name_len = le16(zip, at + 26)? as usize;
        let extra_len = le16(zip, at + 28)? as usize;
        let entry_name = zip.get(at + 30..at + 30 + name_len)?;
        let start = at + 30 + name_len + extra_len;
        if entry_name == name.as_bytes() {
            return (method == 0)
                .then(|| zip.get(start..start + size))
                .flatten();
        }
        at = start + size;
    }
    None
}

/// The `package` attribute of `<manifest>` in binary XML.
fn axml_package(x: &[u8]) -> Option<String> {
    // File header (type 0x0003), then chunks: string pool (0x0001), resource map, elements.
    let mut strings: Vec<String> = Vec::new();
    let mut at = 8;
    while at + 8 <= x.len() {
        let ty = le16(x, at)?;
        let header = le16(x, at + 2)? as usize;
        let size = le32(x, at + 4)? as usize;
        if size < 8 {
            return None;
        }
        match ty {
            0x0001 => {
                let count = le32(x, at + 8)? as usize;
                let utf8 = le32(x, at + 16)? & (1 << 8) != 0;
                let strings_start = at + le32(x, at + 20)? as usize;
                for i in 0..count.min(100_000) {
                    let off = strings_start + le32(x, at + header + i * 4)? as usize;
                    strings.push(if utf8 {
                        let mut p = off + 1;
                        if x.get(off)? & 0x80 != 0 {
                            p += 1;
                        }
                        let mut len = *x.get(p)? as usize;
                        p += 1;
                        if len & 0x80 != 0 {
                            len = ((len & 0x7f) << 8) | *x.get(p)? as usize;
                            p += 1;
                        }
                        String::from_utf8_lossy(x.get(p..p + len)?).into_owned()
                    } else {
                        let mut len = le16(x, off)? as usize;
                        let mut p = off + 2;
                        if len & 0x8000 != 0 {
                            len = ((len & 0x7fff) << 16) | le16(x, p)? as usize;
                            p += 2;
                        }
                        let units: Vec<u16> = (0..len)
                            .map(|k| le16(x, p + k * 2))
                            .collect::<Option<_>>()?;
                        String::from_utf16_lossy(&units)
                    });
                }
            }
            0x0102 => {
                let name = le32(x, at + 20)? as usize;
                if strings.get(name).map(String::as_str) == Some("manifest") {
                    let attr_start = le16(x, at + 24)? as usize;
                    let attr_size = le16(x, at + 26)? as usize;
                    let attr_count = le16(x, at + 28)? as usize;
                    for k in 0..attr_count {
                        let a = at + 16 + attr_start + k * attr_size;
                        let an = le32(x, a + 4)? as usize;
                        if strings.get(an).map(String::as_str) == Some("package") {
                            let raw = le32(x, a + 8)? as usize;
                            return strings.get(raw).cloned();
                        }
                    }
                    return None;
                }
            }
            _ => {}
        }
        at += size;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pm_text_is_read_truthfully() {
        assert_eq!(parse_pm_output("Success\n"), PmOutcome::Success);
        assert_eq!(
            parse_pm_output(
                "Performing Streamed Install\nFailure [INSTALL_FAILED_VERSION_DOWNGRADE]\n"
            ),
            PmOutcome::Failure {
                line: "Failure [INSTALL_FAILED_VERSION_DOWNGRADE]".into(),
                code: Some("INSTALL_FAILED_VERSION_DOWNGRADE".into())
            }
        );
        assert!(matches!(
            parse_pm_output("Failure [INSTALL_PARSE_FAILED_NOT_APK: Failed to parse /data/app/x.apk]"),
            PmOutcome::Failure { code: Some(c), .. } if c == "INSTALL_PARSE_FAILED_NOT_APK"
        ));
        assert_eq!(
            parse_pm_output("Failure [DELETE_FAILED_INTERNAL_ERROR]"),
            PmOutcome::Failure {
                line: "Failure [DELETE_FAILED_INTERNAL_ERROR]".into(),
                code: Some("DELETE_FAILED_INTERNAL_ERROR".into())
            }
        );
        let trace = "\nException occurred while executing 'install':\njava.lang.IllegalArgumentException: Unknown package\n\tat com.android.server.pm.X.y(X.java:1)\n\tat z\n";
        assert_eq!(
            parse_pm_output(trace),
            PmOutcome::Other("Exception occurred while executing 'install': | java.lang.IllegalArgumentException: Unknown package | at com.android.server.pm.X.y(X.java:1)".into())
        );
        assert_eq!(
            parse_pm_output(""),
            PmOutcome::Other("the package manager printed nothing".into())
        );
    }

    #[test]
    fn package_from_a_stored_text_manifest() {
        // A minimal zip with one stored entry.
        let body = br#"<manifest package="com.example.app"/>"#;
        let name = b"AndroidManifest.xml";
        let mut zip = Vec::new();
        zip.extend(0x0403_4b50u32.to_le_bytes());
        zip.extend([20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        zip.extend((body.len() as u32).to_le_bytes());
        zip.extend((body.len() as u32).to_le_bytes());
        zip.extend((name.len() as u16).to_le_bytes());
        zip.extend(0u16.to_le_bytes());
        zip.extend(name);
        zip.extend(body);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.apk");
        std::fs::write(&p, &zip).unwrap();
        assert_eq!(apk_package(&p).as_deref(), Some("com.example.app"));
        std::fs::write(&p, b"not a zip").unwrap();
        assert_eq!(apk_package(&p), None);
    }
}
