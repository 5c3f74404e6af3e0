//! Tiny APKs for tests: a stored (uncompressed) zip with a text `AndroidManifest.xml`, and the reader the
//! simulated package manager validates APKs with.

/// CRC-32 (IEEE, as zip and PNG use it).
pub(crate) fn crc32(data: &[u8]) -> u32 {
    crc32_update(0xFFFF_FFFF, data) ^ 0xFFFF_FFFF
}

/// Continues a CRC-32 over more bytes (start with `0xFFFF_FFFF`, finish with `^ 0xFFFF_FFFF`).
pub(crate) fn crc32_update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    crc
}

/// A test APK to build: package name, version and extra zip entries.
///
/// ```
/// let apk = adbd_sim::TestApk::new("com.example.app").version_code(3).build();
/// assert_eq!(&apk[..4], b"PK\x03\x04");
/// ```
#[derive(Debug, Clone)]
pub struct TestApk {
    package: String,
    version_code: u64,
    fail_with: Option<String>,
    entries: Vec<(String, Vec<u8>)>,
}

impl TestApk {
    /// An APK for `package`, version code 1, with `AndroidManifest.xml` and a small `classes.dex`.
    pub fn new(package: impl Into<String>) -> TestApk {
        TestApk { package: package.into(), version_code: 1, fail_with: None, entries: Vec::new() }
    }

    /// Sets `android:versionCode` (installing a lower one over a higher one fails with
    /// `INSTALL_FAILED_VERSION_DOWNGRADE` unless `-d` is given).
    pub fn version_code(mut self, version_code: u64) -> TestApk {
        self.version_code = version_code;
        self
    }

    /// Makes every simulated device refuse this APK with `Failure [CODE]` (the manifest carries
    /// `sim:installFailure="CODE"`), e.g. `INSTALL_FAILED_INSUFFICIENT_STORAGE`.
    pub fn fail_with(mut self, code: impl Into<String>) -> TestApk {
        self.fail_with = Some(code.into());
        self
    }

    /// Adds a file to the archive (e.g. padding to make the APK large).
    pub fn entry(mut self, name: impl Into<String>, data: impl Into<Vec<u8>>) -> TestApk {
        self.entries.push((name.into(), data.into()));
        self
    }

    /// The APK bytes.
    pub fn build(&self) -> Vec<u8> {
        let fail = self.fail_with.as_deref().map(|code| format!(" sim:installFailure=\"{code}\"")).unwrap_or_default();
        let manifest = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<manifest \
             xmlns:android=\"http://schemas.android.com/apk/res/android\" package=\"{}\" \
             android:versionCode=\"{}\"{fail}>\n  <application android:label=\"{}\"/>\n</manifest>\n",
            self.package, self.version_code, self.package
        );
        let mut entries: Vec<(&str, &[u8])> =
            vec![("AndroidManifest.xml", manifest.as_bytes()), ("classes.dex", b"dex\n035\0adbd-sim test dex")];
        for (name, data) in &self.entries {
            entries.push((name, data));
        }
        write_stored_zip(&entries)
    }
}

/// Builds a valid test APK for `package_name` (version code 1). Same as `TestApk::new(p).build()`.
pub fn build_test_apk(package_name: &str) -> Vec<u8> {
    TestApk::new(package_name).build()
}

/// A zip archive with every entry stored (method 0).
fn write_stored_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let size = data.len() as u32;
        // local file header
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]); // version, flags, method 0, time 0, date 1980-01-01
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        // central directory entry
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[20, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]);
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 8]); // extra len, comment len, disk, internal attrs
        central.extend_from_slice(&(0o100644u32 << 16).to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// What the package manager learns from an APK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApkInfo {
    pub(crate) package: String,
    pub(crate) version_code: u64,
    pub(crate) fail_with: Option<String>,
}

/// Why an APK was rejected: the `INSTALL_PARSE_FAILED_*` code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApkError {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

fn u16_at(d: &[u8], i: usize) -> Option<usize> {
    Some(u16::from_le_bytes(d.get(i..i + 2)?.try_into().ok()?) as usize)
}

fn u32_at(d: &[u8], i: usize) -> Option<usize> {
    Some(u32::from_le_bytes(d.get(i..i + 4)?.try_into().ok()?) as usize)
}

/// Reads an APK: a zip whose central directory lists `AndroidManifest.xml`. The package name and version
/// come from a text manifest (as [`TestApk`] writes); a binary manifest (a real APK) gives a package name
/// made from the APK's CRC.
pub(crate) fn parse_apk(data: &[u8]) -> Result<ApkInfo, ApkError> {
    let not_apk = |why: &str| ApkError { code: "INSTALL_PARSE_FAILED_NOT_APK", message: why.to_string() };
    if !data.starts_with(b"PK\x03\x04") {
        return Err(not_apk("Failed to parse: not a zip archive"));
    }
    // End of central directory: scan back over a possible comment.
    let eocd = (0..data.len().saturating_sub(21))
        .rev()
        .take(65_557)
        .find(|&i| data[i..].starts_with(b"PK\x05\x06"))
        .ok_or_else(|| not_apk("Failed to parse: no zip end of central directory"))?;
    let count = u16_at(data, eocd + 10).unwrap_or(0);
    let mut at = u32_at(data, eocd + 16).unwrap_or(usize::MAX);
    let mut manifest = None;
    for _ in 0..count {
        if data.get(at..at + 4) != Some(b"PK\x01\x02") {
            return Err(not_apk("Failed to parse: corrupt zip central directory"));
        }
        let method = u16_at(data, at + 10).unwrap_or(0);
        let csize = u32_at(data, at + 20).unwrap_or(0);
        let name_len = u16_at(data, at + 28).unwrap_or(0);
        let extra_len = u16_at(data, at + 30).unwrap_or(0);
        let comment_len = u16_at(data, at + 32).unwrap_or(0);
        let local = u32_at(data, at + 42).unwrap_or(0);
        let name = data.get(at + 46..at + 46 + name_len).unwrap_or_default();
        if name == b"AndroidManifest.xml" {
            manifest = Some((method, csize, local));
        }
        at += 46 + name_len + extra_len + comment_len;
    }
    let Some((method, csize, local)) = manifest else {
        return Err(ApkError {
            code: "INSTALL_PARSE_FAILED_BAD_MANIFEST",
            message: "Failed to parse: AndroidManifest.xml missing from the APK".into(),
        });
    };
    let text = if method == 0 {
        let name_len = u16_at(data, local + 26).unwrap_or(0);
        let extra_len = u16_at(data, local + 28).unwrap_or(0);
        let start = local + 30 + name_len + extra_len;
        data.get(start..start + csize).map(|b| String::from_utf8_lossy(b).into_owned())
    } else {
        None
    };
    let attr = |text: &str, name: &str| -> Option<String> {
        let key = format!("{name}=\"");
        let start = text.find(&key)? + key.len();
        let end = text[start..].find('"')? + start;
        Some(text[start..end].to_string())
    };
    match text.as_deref().filter(|t| t.contains("<manifest")) {
        Some(text) => {
            let package = attr(text, " package").ok_or_else(|| ApkError {
                code: "INSTALL_PARSE_FAILED_MANIFEST_MALFORMED",
                message: "Failed to parse: <manifest> has no package attribute".into(),
            })?;
            Ok(ApkInfo {
                package,
                version_code: attr(text, "android:versionCode").and_then(|v| v.parse().ok()).unwrap_or(1),
                fail_with: attr(text, "sim:installFailure"),
            })
        }
        None => Ok(ApkInfo { package: format!("sim.apk.x{:08x}", crc32(data)), version_code: 1, fail_with: None }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn built_apks_parse_back() {
        let apk = TestApk::new("com.example.app").version_code(7).fail_with("INSTALL_FAILED_TEST_ONLY").build();
        let info = parse_apk(&apk).unwrap();
        assert_eq!(info.package, "com.example.app");
        assert_eq!(info.version_code, 7);
        assert_eq!(info.fail_with.as_deref(), Some("INSTALL_FAILED_TEST_ONLY"));
        assert_eq!(parse_apk(&build_test_apk("a.b")).unwrap().fail_with, None);
        assert_eq!(parse_apk(b"hello").unwrap_err().code, "INSTALL_PARSE_FAILED_NOT_APK");
        let no_manifest = write_stored_zip(&[("classes.dex", b"x")]);
        assert_eq!(parse_apk(&no_manifest).unwrap_err().code, "INSTALL_PARSE_FAILED_BAD_MANIFEST");
        // The system unzip agrees that it is a zip.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.apk");
        std::fs::write(&path, &apk).unwrap();
        if std::path::Path::new("/usr/bin/unzip").exists() {
            let out = std::process::Command::new("/usr/bin/unzip").arg("-t").arg(&path).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        }
    }
}
