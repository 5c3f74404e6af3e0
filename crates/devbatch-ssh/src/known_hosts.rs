//! Our own `known_hosts` reader and writer.
//!
//! russh's built-in check is not used: it splits lines on single spaces, ignores wildcards and
//! `@revoked`, re-reads the file on every call and prefers one key type. This one reads the
//! OpenSSH format fully — any run of blanks between fields, hashed names (`|1|salt|hmac`),
//! `[host]:port`, comma lists with `*`/`?` wildcards and `!` negation, several keys per host,
//! `@revoked` and `@cert-authority` markers (the latter skipped: we never ask for host
//! certificates) — caches parsed files until they change on disk, and appends new keys under
//! a lock, re-checking first, so that many connections accepting the same host at once record
//! it once.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{KeyInit, Mac};
use russh::keys::ssh_key::{HashAlg, PublicKey};

use crate::pattern::{ListMatch, match_list};

/// A `@` marker at the start of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

/// The host field of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hosts {
    /// `|1|salt|hash`: HMAC-SHA1 of the name keyed by the salt.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    /// A comma list of patterns.
    Patterns(String),
}

impl Hosts {
    fn matches(&self, name: &str) -> bool {
        match self {
            Hosts::Hashed { salt, hash } => {
                let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                    return false;
                };
                mac.update(name.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
            Hosts::Patterns(list) => match_list(list.split(','), name) == ListMatch::Positive,
        }
    }
}

/// One key line.
#[derive(Debug, Clone)]
struct Entry {
    marker: Marker,
    hosts: Hosts,
    key_type: String,
    blob: Vec<u8>,
    line: usize,
}

/// One parsed file.
#[derive(Debug, Default)]
struct ParsedFile {
    entries: Vec<Entry>,
}

/// What a known_hosts line failed to parse as; such lines are skipped, as OpenSSH does.
fn parse_line(line: &str, number: usize) -> Option<Entry> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_ascii_whitespace();
    let mut first = fields.next()?;
    let marker = match first {
        "@revoked" => Marker::Revoked,
        "@cert-authority" => Marker::CertAuthority,
        m if m.starts_with('@') => return None,
        _ => Marker::None,
    };
    if marker != Marker::None {
        first = fields.next()?;
    }
    let hosts = if let Some(rest) = first.strip_prefix("|1|") {
        let (salt, hash) = rest.split_once('|')?;
        Hosts::Hashed {
            salt: B64.decode(salt).ok()?,
            hash: B64.decode(hash).ok()?,
        }
    } else {
        Hosts::Patterns(first.to_ascii_lowercase())
    };
    let key_type = fields.next()?.to_string();
    let blob = B64.decode(fields.next()?).ok()?;
    Some(Entry {
        marker,
        hosts,
        key_type,
        blob,
        line: number,
    })
}

fn parse(text: &str) -> ParsedFile {
    ParsedFile {
        entries: text
            .lines()
            .enumerate()
            .filter_map(|(i, l)| parse_line(l, i + 1))
            .collect(),
    }
}

/// The key type a known_hosts line records a key under: the key's algorithm name without any
/// signature hash (`ssh-rsa` for rsa-sha2-512 too).
fn key_type_of(key: &PublicKey) -> String {
    key.key_data().algorithm().as_str().to_string()
}

fn blob_of(key: &PublicKey) -> Vec<u8> {
    key.to_bytes().unwrap_or_default()
}

/// The SHA256 fingerprint as OpenSSH prints it (`SHA256:...`).
pub(crate) fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The verdict on a presented host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Recorded for this host.
    Known,
    /// No key is recorded for this host.
    Unknown,
    /// Keys are recorded for this host, but not this one. `path:line` is the first entry of the
    /// same key type if there is one, else the first entry for the host.
    Changed { path: PathBuf, line: usize },
    /// The key is marked `@revoked`.
    Revoked { path: PathBuf, line: usize },
}

#[derive(Debug, Clone)]
struct CacheEntry {
    stamp: Option<(SystemTime, u64)>,
    parsed: Arc<ParsedFile>,
}

/// Parsed files, kept until their modification time or size changes.
static CACHE: LazyLock<Mutex<HashMap<PathBuf, CacheEntry>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn load(path: &Path) -> Arc<ParsedFile> {
    let now = stamp(path);
    if let Some(hit) = CACHE
        .lock()
        .expect("known_hosts cache poisoned")
        .get(path)
        .filter(|c| c.stamp == now && now.is_some())
    {
        return hit.parsed.clone();
    }
    let parsed = Arc::new(match std::fs::read(path) {
        Ok(bytes) => parse(&String::from_utf8_lossy(&bytes)),
        Err(_) => ParsedFile::default(),
    });
    CACHE.lock().expect("known_hosts cache poisoned").insert(
        path.to_path_buf(),
        CacheEntry {
            stamp: now,
            parsed: parsed.clone(),
        },
    );
    parsed
}

/// Judges `key` for a host known under `names` against `files` (parsed already).
fn judge(files: &[(PathBuf, Arc<ParsedFile>)], names: &[String], key: &PublicKey) -> Verdict {
    let key_type = key_type_of(key);
    let blob = blob_of(key);
    let mut same_type: Option<(PathBuf, usize)> = None;
    let mut any: Option<(PathBuf, usize)> = None;
    let mut known = false;
    for (path, file) in files {
        for e in &file.entries {
            if !names.iter().any(|n| e.hosts.matches(n)) {
                continue;
            }
            match e.marker {
                Marker::CertAuthority => continue,
                Marker::Revoked => {
                    if e.blob == blob {
                        return Verdict::Revoked {
                            path: path.clone(),
                            line: e.line,
                        };
                    }
                }
                Marker::None => {
                    if e.blob == blob && e.key_type == key_type {
                        known = true;
                    } else if e.key_type == key_type {
                        same_type.get_or_insert((path.clone(), e.line));
                    } else {
                        any.get_or_insert((path.clone(), e.line));
                    }
                }
            }
        }
    }
    if known {
        return Verdict::Known;
    }
    match same_type.or(any) {
        Some((path, line)) => Verdict::Changed { path, line },
        None => Verdict::Unknown,
    }
}

/// The known_hosts files one target is checked against.
#[derive(Debug, Clone)]
pub(crate) struct KnownHosts {
    /// The user's file (read, and written by `accept-new`).
    pub user_file: PathBuf,
    /// Further files, read only.
    pub extra: Vec<PathBuf>,
}

impl KnownHosts {
    fn files(&self) -> Vec<(PathBuf, Arc<ParsedFile>)> {
        std::iter::once(&self.user_file)
            .chain(&self.extra)
            .map(|p| (p.clone(), load(p)))
            .collect()
    }

    /// Checks a presented key for a host recorded under `names`.
    pub(crate) fn check(&self, names: &[String], key: &PublicKey) -> Verdict {
        judge(&self.files(), names, key)
    }

    /// The key types recorded for a host, so that the handshake can ask for those first (as
    /// OpenSSH does) instead of a type the server has but we never recorded.
    pub(crate) fn known_key_types(&self, names: &[String]) -> Vec<String> {
        let mut types = Vec::new();
        for (_, file) in self.files() {
            for e in &file.entries {
                if e.marker == Marker::None
                    && !types.contains(&e.key_type)
                    && names.iter().any(|n| e.hosts.matches(n))
                {
                    types.push(e.key_type.clone());
                }
            }
        }
        types
    }

    /// Records `key` for `names[0]` in the user file unless, checked again under the file
    /// lock, the host turned out to be recorded meanwhile (by another connection or process).
    /// Returns the verdict of that re-check: `Unknown` means the key was appended now.
    pub(crate) fn accept_new(&self, names: &[String], key: &PublicKey) -> std::io::Result<Verdict> {
        static LOCAL: Mutex<()> = Mutex::new(());
        // Threads of this process queue here; other processes on the file lock below.
        let _local = LOCAL.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dir) = self
            .user_file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            std::fs::create_dir_all(dir)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.user_file)?;
        file.lock()?;
        let mut text = Vec::new();
        file.seek(SeekFrom::Start(0))?;
        file.read_to_end(&mut text)?;
        let mut files = vec![(
            self.user_file.clone(),
            Arc::new(parse(&String::from_utf8_lossy(&text))),
        )];
        files.extend(self.extra.iter().map(|p| (p.clone(), load(p))));
        let verdict = judge(&files, names, key);
        if verdict == Verdict::Unknown {
            let mut line = String::new();
            if !text.is_empty() && !text.ends_with(b"\n") {
                line.push('\n');
            }
            line.push_str(&format!(
                "{} {} {}\n",
                names[0],
                key_type_of(key),
                B64.encode(blob_of(key))
            ));
            file.write_all(line.as_bytes())?;
            file.flush()?;
        }
        file.unlock()?;
        Ok(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Keys generated with ssh-keygen for these tests (`ssh-keygen -t ed25519`).
    const ED_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIM0m0dk/ZAzp1fuhoQ6kj8QHwIoOfOlUYfhOzMmEMut9";
    const ED_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIHN9drzwQXiW4rCy/Fw+wzRQrVIUsqUiIMA7Gc+P6x+o";

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).unwrap()
    }

    fn hashed(name: &str, salt: &[u8]) -> String {
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt).unwrap();
        mac.update(name.as_bytes());
        format!(
            "|1|{}|{}",
            B64.encode(salt),
            B64.encode(mac.finalize().into_bytes())
        )
    }

    fn check(text: &str, names: &[&str], k: &str) -> Verdict {
        let files = vec![(PathBuf::from("kh"), Arc::new(parse(text)))];
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        judge(&files, &names, &key(k))
    }

    #[test]
    fn plain_and_bracketed_entries() {
        let text = format!(
            "host1,10.0.0.1 ssh-ed25519 {ED_A} comment with  spaces\n[host2]:2222\tssh-ed25519\t{ED_A}\n"
        );
        assert_eq!(check(&text, &["host1"], ED_A), Verdict::Known);
        assert_eq!(check(&text, &["10.0.0.1"], ED_A), Verdict::Known);
        assert_eq!(check(&text, &["[host2]:2222"], ED_A), Verdict::Known);
        assert_eq!(
            check(&text, &["host2"], ED_A),
            Verdict::Unknown,
            "port 22 is a different entry"
        );
        assert_eq!(
            check(&text, &["host1"], ED_B),
            Verdict::Changed {
                path: "kh".into(),
                line: 1
            }
        );
    }

    #[test]
    fn hashed_names_match_only_their_host() {
        let text = format!(
            "{} ssh-ed25519 {ED_A}\n",
            hashed("[127.0.0.7]:2022", b"0123456789abcdefghij")
        );
        assert_eq!(check(&text, &["[127.0.0.7]:2022"], ED_A), Verdict::Known);
        assert_eq!(check(&text, &["[127.0.0.8]:2022"], ED_A), Verdict::Unknown);
        assert!(matches!(
            check(&text, &["[127.0.0.7]:2022"], ED_B),
            Verdict::Changed { line: 1, .. }
        ));
    }

    #[test]
    fn a_line_hashed_by_ssh_keygen_is_understood() {
        // `ssh-keygen -H` output for "[example.org]:2222" with key A.
        let line = format!(
            "|1|2HrX75vkWqf3mp78pKYoMJ5SZ2Q=|q+y0p51lYfklpNdwauVTTFjxvN8= ssh-ed25519 {ED_A}"
        );
        assert_eq!(check(&line, &["[example.org]:2222"], ED_A), Verdict::Known);
        assert_eq!(check(&line, &["example.org"], ED_A), Verdict::Unknown);
        assert_eq!(
            hashed(
                "[example.org]:2222",
                &B64.decode("2HrX75vkWqf3mp78pKYoMJ5SZ2Q=").unwrap()
            ),
            "|1|2HrX75vkWqf3mp78pKYoMJ5SZ2Q=|q+y0p51lYfklpNdwauVTTFjxvN8="
        );
    }

    #[test]
    fn wildcards_and_negation() {
        let text =
            format!("*.lab,!secret.lab ssh-ed25519 {ED_A}\n[10.1.*]:222? ssh-ed25519 {ED_A}\n");
        assert_eq!(check(&text, &["a.lab"], ED_A), Verdict::Known);
        assert_eq!(check(&text, &["secret.lab"], ED_A), Verdict::Unknown);
        assert_eq!(check(&text, &["[10.1.2.3]:2222"], ED_A), Verdict::Known);
    }

    #[test]
    fn several_keys_per_host_and_markers() {
        let text = format!(
            "h ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7\n@cert-authority h ssh-ed25519 {ED_B}\nh ssh-ed25519 {ED_A}\n@revoked * ssh-ed25519 {ED_B}\n@bogus h ssh-ed25519 {ED_A}\n"
        );
        assert_eq!(check(&text, &["h"], ED_A), Verdict::Known);
        assert_eq!(
            check(&text, &["h"], ED_B),
            Verdict::Revoked {
                path: "kh".into(),
                line: 4
            },
            "a revoked key is refused even though a CA line lists it"
        );
        // A host with only a key of another type recorded: refused, citing that line.
        let text = "h ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7\n".to_string();
        assert_eq!(
            check(&text, &["h"], ED_A),
            Verdict::Changed {
                path: "kh".into(),
                line: 1
            }
        );
        // A cert-authority line alone does not make a host known.
        let text = format!("@cert-authority h ssh-ed25519 {ED_A}\n");
        assert_eq!(check(&text, &["h"], ED_A), Verdict::Unknown);
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let text = format!(
            "# comment\n\nonlyhost\nh ssh-ed25519 !!notbase64\n   h ssh-ed25519 {ED_A}   \n"
        );
        assert_eq!(check(&text, &["h"], ED_A), Verdict::Known);
    }

    #[test]
    fn accept_new_appends_once_and_refuses_a_changed_key() {
        let dir = tempfile::tempdir().unwrap();
        let kh = KnownHosts {
            user_file: dir.path().join("sub/known_hosts"),
            extra: vec![],
        };
        let names = vec!["[127.0.0.3]:2022".to_string()];
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| kh.accept_new(&names, &key(ED_A)).unwrap());
            }
        });
        let text = std::fs::read_to_string(&kh.user_file).unwrap();
        assert_eq!(text, format!("[127.0.0.3]:2022 ssh-ed25519 {ED_A}\n"));
        assert_eq!(kh.check(&names, &key(ED_A)), Verdict::Known);
        assert!(matches!(
            kh.accept_new(&names, &key(ED_B)).unwrap(),
            Verdict::Changed { line: 1, .. }
        ));
        assert_eq!(std::fs::read_to_string(&kh.user_file).unwrap(), text);
        assert_eq!(kh.known_key_types(&names), vec!["ssh-ed25519"]);
    }
}
