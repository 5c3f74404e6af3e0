//! What a pool-file entry says about one SSH target, what `~/.ssh/config` adds to it, and the
//! resolved [`Target`] the connection code works from.
//!
//! Precedence: a key given in the pool file wins, then the first value `ssh_config` gives for
//! a matching `Host` block (OpenSSH's "first obtained value" rule), then the defaults.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use devbatch_core::ConfigError;
use serde::Deserialize;

use crate::pattern::{ListMatch, match_list};

/// How host keys are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// Only hosts whose key is already recorded are accepted (the default).
    #[default]
    Strict,
    /// An unknown host's key is recorded on first use; a changed key is still refused.
    AcceptNew,
    /// A host with no recorded key is accepted (not recorded), with a warning on every such
    /// connection; a recorded key that differs, or a revoked one, is still refused. Explicit
    /// only.
    Off,
}

impl HostKeyPolicy {
    fn from_ssh_config(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "yes" | "ask" => Some(HostKeyPolicy::Strict),
            "accept-new" => Some(HostKeyPolicy::AcceptNew),
            "no" | "off" => Some(HostKeyPolicy::Off),
            _ => None,
        }
    }
}

/// The settings of an `ssh` pool-file entry (every key besides `backend`, `id`, `labels`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct SshSettings {
    /// Host name, address or `~/.ssh/config` alias.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    #[serde(default)]
    pub identity_files: Vec<PathBuf>,
    #[serde(default, deserialize_with = "secret_text")]
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub passphrase_env: Option<String>,
    pub use_agent: Option<bool>,
    /// Extra known_hosts files to trust (read only).
    #[serde(default)]
    pub known_hosts: Vec<PathBuf>,
    /// The user's known_hosts file, where `accept-new` records keys (default
    /// `~/.ssh/known_hosts`).
    pub user_known_hosts: Option<PathBuf>,
    pub host_key_policy: Option<HostKeyPolicy>,
    /// The OpenSSH client config to read aliases from (default `~/.ssh/config`); `"none"`
    /// reads none.
    pub ssh_config: Option<PathBuf>,
    /// Jump host(s), in `ProxyJump` syntax: `[user@]host[:port][,...]`.
    pub jump: Option<String>,
    pub connect_timeout: Option<String>,
    pub max_channels: Option<usize>,
    pub max_handshakes: Option<usize>,
    pub handshake_attempts: Option<u32>,
    pub keepalive: Option<String>,
}

/// A secret setting: a string, and a value of any other type is refused without showing it
/// (serde's own message would quote it).
fn secret_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(Some(s)),
        serde_json::Value::Null => Ok(None),
        _ => Err(serde::de::Error::custom(
            "must be a string (the value given is not shown)",
        )),
    }
}

impl SshSettings {
    /// Makes the entry's relative file names relative to the pool file (`ssh_config = "none"`
    /// stays a word).
    pub(crate) fn resolve_paths(&mut self, spec: &devbatch_core::DeviceSpec) {
        for path in self
            .identity_files
            .iter_mut()
            .chain(self.known_hosts.iter_mut())
            .chain(self.user_known_hosts.as_mut())
            .chain(self.ssh_config.as_mut().filter(|p| p.as_os_str() != "none"))
        {
            *path = spec.resolve_path(path);
        }
    }
}

impl fmt::Debug for SshSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("identity_files", &self.identity_files)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_env", &self.password_env)
            .field("passphrase_env", &self.passphrase_env)
            .field("host_key_policy", &self.host_key_policy)
            .field("jump", &self.jump)
            .finish_non_exhaustive()
    }
}

/// A secret that never shows in `Debug` output or messages.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One hop of a connection: where to connect and as whom.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Hop {
    /// The name as written (alias or host), used for known_hosts look-ups together with `port`.
    pub host: String,
    /// The name or address actually connected to.
    pub hostname: String,
    pub port: u16,
    pub user: String,
    pub identity_files: Vec<PathBuf>,
    /// Whether the identity files came from explicit configuration (a missing one is then
    /// reported) rather than the defaults.
    pub explicit_identities: bool,
}

impl Hop {
    /// `host:port` as shown in messages.
    pub fn display(&self) -> String {
        if self.hostname.contains(':') {
            format!("[{}]:{}", self.hostname, self.port)
        } else {
            format!("{}:{}", self.hostname, self.port)
        }
    }

    /// The names this host is recorded under in known_hosts: `host` for port 22, else
    /// `[host]:port`; the HostName too when the alias differs from it.
    pub fn known_hosts_names(&self) -> Vec<String> {
        let name = |h: &str| {
            if self.port == 22 {
                h.to_ascii_lowercase()
            } else {
                format!("[{}]:{}", h.to_ascii_lowercase(), self.port)
            }
        };
        let mut names = vec![name(&self.hostname)];
        if !self.host.eq_ignore_ascii_case(&self.hostname) {
            names.push(name(&self.host));
        }
        names
    }
}

/// Everything needed to reach and authenticate to one target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Target {
    pub hop: Hop,
    /// Jump hosts, outermost first.
    pub jumps: Vec<Hop>,
    pub password: Option<Secret>,
    pub passphrase: Option<Secret>,
    pub use_agent: bool,
    pub known_hosts: Vec<PathBuf>,
    pub user_known_hosts: PathBuf,
    pub policy: HostKeyPolicy,
    pub connect_timeout: Duration,
    pub max_channels: usize,
    pub max_handshakes: usize,
    /// How many times a handshake the server drops is tried in all.
    pub handshake_attempts: u32,
    pub keepalive: Option<Duration>,
}

/// The default connect timeout (TCP, banner, key exchange and authentication together).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default number of channels open at once on one connection (sshd's `MaxSessions` is 10,
/// and refuses some opens well before that under load).
pub const DEFAULT_MAX_CHANNELS: usize = 5;
/// The default number of handshakes in flight at once to one server address (below sshd's
/// default `MaxStartups 10:30:100`).
pub const DEFAULT_MAX_HANDSHAKES: usize = 8;
/// The default number of tries of a handshake the server keeps dropping (sshd `MaxStartups`);
/// with backoff they span about 20 s.
pub const DEFAULT_HANDSHAKE_ATTEMPTS: u32 = 10;
/// The default keepalive interval.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn current_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "root".to_string())
}

/// Expands a leading `~/`.
pub(crate) fn expand_tilde(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), home()) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => path.to_path_buf(),
    }
}

fn parse_duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value).map_err(|e| {
        ConfigError::Settings(format!(
            "{key} = {value:?} is not a duration like \"10s\" or \"500ms\": {e}"
        ))
    })
}

fn env_secret(key: &str, var: &str) -> Result<Secret, ConfigError> {
    std::env::var(var).map(Secret).map_err(|_| {
        ConfigError::Setup(format!(
            "{key} = {var:?} names an environment variable that is not set (or not UTF-8)"
        ))
    })
}

/// Parses one `ProxyJump`-style hop: `[user@]host[:port]`, or `ssh://[user@]host[:port]`.
fn parse_jump_hop(text: &str) -> Result<(Option<String>, String, Option<u16>), ConfigError> {
    let bad = || {
        ConfigError::Settings(format!(
            "jump host {text:?} is not of the form [user@]host[:port]"
        ))
    };
    let t = text.trim().trim_start_matches("ssh://");
    let (user, rest) = match t.rsplit_once('@') {
        Some((u, r)) if !u.is_empty() => (Some(u.to_string()), r),
        Some(_) => return Err(bad()),
        None => (None, t),
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (h, after) = inner.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().map_err(|_| bad())?),
            None if after.is_empty() => None,
            None => return Err(bad()),
        };
        (h.to_string(), port)
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.parse().map_err(|_| bad())?)),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((user, host, port))
}

/// The values a `Host` block set, for the keys we use. Each is the first value obtained.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct HostConfig {
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<String>,
    pub proxy_jump: Option<String>,
    pub identities_only: Option<bool>,
    pub user_known_hosts: Option<String>,
    pub strict_host_key_checking: Option<String>,
    pub connect_timeout: Option<u64>,
}

/// Reads an OpenSSH client config for `alias`. Supports `Host` (patterns, negation), `Include`
/// (with `*` globs in the file name) and the keys in [`HostConfig`]; `Match` blocks are
/// skipped with a warning (their conditions are not evaluated).
pub(crate) fn read_ssh_config(path: &Path, alias: &str) -> Result<HostConfig, ConfigError> {
    let mut out = HostConfig::default();
    let mut active = true;
    read_config_file(path, alias, &mut out, &mut active, 0)?;
    Ok(out)
}

fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut has = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                has = true;
            }
            c if !quoted && (c.is_whitespace() || (c == '=' && words.is_empty())) => {
                if has {
                    words.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            c => {
                cur.push(c);
                has = true;
            }
        }
    }
    if has {
        words.push(cur);
    }
    words
}

fn read_config_file(
    path: &Path,
    alias: &str,
    out: &mut HostConfig,
    active: &mut bool,
    depth: usize,
) -> Result<(), ConfigError> {
    if depth > 8 {
        return Err(ConfigError::Setup(format!(
            "ssh config {}: Include nested too deeply",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::Setup(format!("cannot read ssh config {}: {e}", path.display()))
    })?;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words = split_words(line);
        let Some((key, args)) = words.split_first() else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        let bad = |what: &str| {
            ConfigError::Setup(format!("ssh config {}:{}: {what}", path.display(), n + 1))
        };
        match key.as_str() {
            "host" => {
                *active = match_list(args.iter().map(String::as_str), alias) == ListMatch::Positive;
                continue;
            }
            "match" => {
                tracing::warn!(
                    file = %path.display(),
                    line = n + 1,
                    "ssh config Match blocks are not supported; the block is skipped"
                );
                *active = false;
                continue;
            }
            _ => {}
        }
        if !*active {
            continue;
        }
        let first = || args.first().cloned().ok_or_else(|| bad("missing value"));
        match key.as_str() {
            "include" => {
                for pattern in args {
                    let p = expand_tilde(Path::new(pattern));
                    let p = if p.is_absolute() {
                        p
                    } else {
                        home().map(|h| h.join(".ssh")).unwrap_or_default().join(p)
                    };
                    for file in glob_file_name(&p) {
                        read_config_file(&file, alias, out, active, depth + 1)?;
                    }
                }
            }
            "hostname" if out.hostname.is_none() => out.hostname = Some(first()?),
            "user" if out.user.is_none() => out.user = Some(first()?),
            "port" if out.port.is_none() => {
                out.port = Some(first()?.parse().map_err(|_| bad("Port is not a number"))?)
            }
            "identityfile" => out.identity_files.push(first()?),
            "proxyjump" if out.proxy_jump.is_none() => out.proxy_jump = Some(first()?),
            "identitiesonly" if out.identities_only.is_none() => {
                out.identities_only = Some(first()?.eq_ignore_ascii_case("yes"))
            }
            "userknownhostsfile" if out.user_known_hosts.is_none() => {
                out.user_known_hosts = Some(first()?)
            }
            "stricthostkeychecking" if out.strict_host_key_checking.is_none() => {
                out.strict_host_key_checking = Some(first()?)
            }
            "connecttimeout" if out.connect_timeout.is_none() => {
                out.connect_timeout = Some(
                    first()?
                        .parse()
                        .map_err(|_| bad("ConnectTimeout is not a number of seconds"))?,
                )
            }
            _ => {}
        }
    }
    Ok(())
}

/// The files a path with `*`/`?` in its last component names, sorted; the path itself if it
/// has none and exists.
fn glob_file_name(path: &Path) -> Vec<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return if path.is_file() {
            vec![path.to_path_buf()]
        } else {
            Vec::new()
        };
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| crate::pattern::wildcard_match(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
}

/// Expands the `%` tokens OpenSSH allows in `IdentityFile` and `HostName`.
fn expand_tokens(value: &str, host: &str, user: &str, port: u16) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(host),
            Some('r') => out.push_str(user),
            Some('u') => out.push_str(&current_user()),
            Some('p') => out.push_str(&port.to_string()),
            Some('d') => out.push_str(&home().unwrap_or_default().to_string_lossy()),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

fn default_identities() -> Vec<PathBuf> {
    let Some(home) = home() else {
        return Vec::new();
    };
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|n| home.join(".ssh").join(n))
        .collect()
}

/// Builds a hop for `host` from an ssh_config (if any) and explicit overrides.
fn resolve_hop(
    host: &str,
    user: Option<String>,
    port: Option<u16>,
    identity_files: &[PathBuf],
    ssh_config: Option<&Path>,
) -> Result<(Hop, HostConfig), ConfigError> {
    let cfg = match ssh_config {
        Some(p) => read_ssh_config(p, host)?,
        None => HostConfig::default(),
    };
    let user = user.or(cfg.user.clone()).unwrap_or_else(current_user);
    let port = port.or(cfg.port).unwrap_or(22);
    let hostname = cfg
        .hostname
        .as_deref()
        .map(|h| expand_tokens(h, host, &user, port))
        .unwrap_or_else(|| host.to_string());
    let (identity_files, explicit) = if !identity_files.is_empty() {
        (
            identity_files.iter().map(|p| expand_tilde(p)).collect(),
            true,
        )
    } else if !cfg.identity_files.is_empty() {
        (
            cfg.identity_files
                .iter()
                .map(|f| expand_tilde(Path::new(&expand_tokens(f, &hostname, &user, port))))
                .collect(),
            true,
        )
    } else {
        (default_identities(), false)
    };
    Ok((
        Hop {
            host: host.to_string(),
            hostname,
            port,
            user,
            identity_files,
            explicit_identities: explicit,
        },
        cfg,
    ))
}

impl SshSettings {
    /// Resolves the settings into a [`Target`], reading ssh_config and environment variables.
    pub(crate) fn resolve(&self, id: Option<&str>) -> Result<Target, ConfigError> {
        let host = self
            .host
            .clone()
            .or_else(|| id.map(str::to_string))
            .ok_or_else(|| ConfigError::Missing {
                key: "host".into(),
                expected: "the host name, address or ~/.ssh/config alias to connect to".into(),
            })?;
        // `user@host` is accepted as `ssh` accepts it; an explicit `user` wins.
        let (host, user_in_host) = match host.rsplit_once('@') {
            Some((u, h)) if !u.is_empty() && !h.is_empty() => (h.to_string(), Some(u.to_string())),
            _ => (host, None),
        };
        if host.is_empty() || host.contains('@') {
            return Err(ConfigError::Settings(format!(
                "host {host:?} is not a host name, address or [user@]host"
            )));
        }
        let ssh_config = match &self.ssh_config {
            Some(p) if p.as_os_str() == "none" => None,
            Some(p) => {
                let p = expand_tilde(p);
                if !p.is_file() {
                    return Err(ConfigError::Setup(format!(
                        "ssh_config {} does not exist",
                        p.display()
                    )));
                }
                Some(p)
            }
            None => home()
                .map(|h| h.join(".ssh/config"))
                .filter(|p| p.is_file()),
        };
        let (hop, cfg) = resolve_hop(
            &host,
            self.user.clone().or(user_in_host),
            self.port,
            &self.identity_files,
            ssh_config.as_deref(),
        )?;
        let jump_spec = self
            .jump
            .clone()
            .or(cfg.proxy_jump.clone())
            .filter(|j| !j.eq_ignore_ascii_case("none"));
        let mut jumps = Vec::new();
        if let Some(spec) = jump_spec {
            for part in spec.split(',') {
                let (user, jhost, port) = parse_jump_hop(part)?;
                let (jhop, _) = resolve_hop(&jhost, user, port, &[], ssh_config.as_deref())?;
                // The target's explicit keys are offered to jump hosts too, as `ssh -J` does
                // with the keys it has loaded.
                let mut jhop = jhop;
                if !jhop.explicit_identities && hop.explicit_identities {
                    jhop.identity_files = hop.identity_files.clone();
                    jhop.explicit_identities = true;
                }
                jumps.push(jhop);
            }
        }
        let password = match (&self.password, &self.password_env) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Settings(
                    "give either password or password_env, not both".into(),
                ));
            }
            (Some(p), None) => Some(Secret(p.clone())),
            (None, Some(var)) => Some(env_secret("password_env", var)?),
            (None, None) => None,
        };
        let passphrase = match &self.passphrase_env {
            Some(var) => Some(env_secret("passphrase_env", var)?),
            None => None,
        };
        let policy = match self.host_key_policy {
            Some(p) => p,
            None => match cfg.strict_host_key_checking.as_deref() {
                Some(v) => HostKeyPolicy::from_ssh_config(v).ok_or_else(|| {
                    ConfigError::Setup(format!(
                        "ssh config StrictHostKeyChecking {v:?} is not yes, accept-new or no"
                    ))
                })?,
                None => HostKeyPolicy::Strict,
            },
        };
        let user_known_hosts = match (&self.user_known_hosts, &cfg.user_known_hosts) {
            (Some(p), _) => expand_tilde(p),
            (None, Some(p)) => expand_tilde(Path::new(p.split_whitespace().next().unwrap_or(p))),
            (None, None) => home()
                .map(|h| h.join(".ssh/known_hosts"))
                .unwrap_or_else(|| PathBuf::from(".ssh/known_hosts")),
        };
        let mut known_hosts: Vec<PathBuf> =
            self.known_hosts.iter().map(|p| expand_tilde(p)).collect();
        // Files named in the entry are meant to be read: a missing one is a mistake, not an
        // empty list (which would only show later as an unknown host key).
        for file in &known_hosts {
            let problem = match std::fs::metadata(file) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist",
                Err(_) => "cannot be read",
                Ok(m) if m.is_dir() => "is a folder",
                Ok(_) => continue,
            };
            return Err(ConfigError::Setup(format!(
                "known_hosts file {} {problem}",
                file.display()
            )));
        }
        let global = PathBuf::from("/etc/ssh/ssh_known_hosts");
        if !known_hosts.contains(&global) {
            known_hosts.push(global);
        }
        let connect_timeout = match &self.connect_timeout {
            Some(t) => parse_duration("connect_timeout", t)?,
            None => cfg
                .connect_timeout
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        };
        if connect_timeout.is_zero() {
            return Err(ConfigError::Settings(
                "connect_timeout must be more than 0".into(),
            ));
        }
        let keepalive = match self.keepalive.as_deref() {
            None => Some(DEFAULT_KEEPALIVE),
            Some("off") | Some("0") => None,
            Some(t) => Some(parse_duration("keepalive", t)?).filter(|d| !d.is_zero()),
        };
        let max_channels = self.max_channels.unwrap_or(DEFAULT_MAX_CHANNELS);
        if max_channels == 0 {
            return Err(ConfigError::Settings(
                "max_channels must be at least 1".into(),
            ));
        }
        let max_handshakes = self.max_handshakes.unwrap_or(DEFAULT_MAX_HANDSHAKES);
        if max_handshakes == 0 {
            return Err(ConfigError::Settings(
                "max_handshakes must be at least 1".into(),
            ));
        }
        let handshake_attempts = self
            .handshake_attempts
            .unwrap_or(DEFAULT_HANDSHAKE_ATTEMPTS);
        if handshake_attempts == 0 {
            return Err(ConfigError::Settings(
                "handshake_attempts must be at least 1".into(),
            ));
        }
        let use_agent = self
            .use_agent
            .unwrap_or(!cfg.identities_only.unwrap_or(false));
        Ok(Target {
            hop,
            jumps,
            password,
            passphrase,
            use_agent,
            known_hosts,
            user_known_hosts,
            policy,
            connect_timeout,
            max_channels,
            max_handshakes,
            handshake_attempts,
            keepalive,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: serde_json::Value) -> SshSettings {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn ssh_config_aliases_fill_in_what_the_pool_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        let extra = dir.path().join("extra.conf");
        std::fs::write(&extra, "Host lab-*\n  User fromextra\n").unwrap();
        let cfg = dir.path().join("config");
        std::fs::write(
            &cfg,
            format!(
                "# comment\nInclude {}/extra*.conf\nHost board1 !board2\n  HostName 127.0.0.9\n  Port=2200\n  IdentityFile \"{}/key %h\"\n  ProxyJump admin@bastion:2022\nHost *\n  User fallback\n  Port 22\nMatch all\n  User ignored\n",
                dir.path().display(),
                dir.path().display()
            ),
        )
        .unwrap();
        let t = settings(serde_json::json!({"host": "board1", "ssh_config": cfg}))
            .resolve(None)
            .unwrap();
        assert_eq!(t.hop.hostname, "127.0.0.9");
        assert_eq!(t.hop.port, 2200);
        assert_eq!(t.hop.user, "fallback");
        assert_eq!(t.hop.identity_files, vec![dir.path().join("key 127.0.0.9")]);
        assert_eq!(t.jumps.len(), 1);
        assert_eq!(t.jumps[0].hostname, "bastion");
        assert_eq!(t.jumps[0].user, "admin");
        assert_eq!(t.jumps[0].port, 2022);
        assert_eq!(
            t.hop.known_hosts_names(),
            vec!["[127.0.0.9]:2200", "[board1]:2200"]
        );

        let t = settings(serde_json::json!({"host": "lab-3", "ssh_config": cfg, "user": "me"}))
            .resolve(None)
            .unwrap();
        assert_eq!(t.hop.user, "me", "the pool file wins over ssh_config");
        let t = settings(serde_json::json!({"host": "lab-3", "ssh_config": cfg}))
            .resolve(None)
            .unwrap();
        assert_eq!(t.hop.user, "fromextra", "Include is read in place");
        let t = settings(serde_json::json!({"host": "ci@lab-3", "ssh_config": cfg}))
            .resolve(None)
            .unwrap();
        assert_eq!((t.hop.user.as_str(), t.hop.host.as_str()), ("ci", "lab-3"));
        assert_eq!(t.hop.port, 22);
        assert!(t.jumps.is_empty());
    }

    #[test]
    fn bad_settings_are_named() {
        let e = serde_json::from_value::<SshSettings>(serde_json::json!({"hots": "x"}))
            .err()
            .unwrap();
        assert!(e.to_string().contains("unknown field `hots`"), "{e}");
        let e = settings(
            serde_json::json!({"host": "x", "connect_timeout": "soon", "ssh_config": "none"}),
        )
        .resolve(None)
        .unwrap_err();
        assert!(e.to_string().contains("connect_timeout = \"soon\""), "{e}");
        let e = settings(serde_json::json!({"host": "x", "jump": "a@", "ssh_config": "none"}))
            .resolve(None)
            .unwrap_err();
        assert!(e.to_string().contains("jump host \"a@\""), "{e}");
        let e = settings(serde_json::json!({"host": "x", "password_env": "DEVBATCH_SURELY_UNSET_VAR", "ssh_config": "none"}))
            .resolve(None)
            .unwrap_err();
        assert!(e.to_string().contains("DEVBATCH_SURELY_UNSET_VAR"), "{e}");
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let s =
            settings(serde_json::json!({"host": "x", "password": "hunter2", "ssh_config": "none"}));
        assert!(!format!("{s:?}").contains("hunter2"));
        let t = s.resolve(None).unwrap();
        assert!(!format!("{t:?}").contains("hunter2"));
        // A password of the wrong type is refused without quoting it.
        let e = serde_json::from_value::<SshSettings>(serde_json::json!({"password": 98765432}))
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("must be a string (the value given is not shown)"),
            "{e}"
        );
        assert!(!e.to_string().contains("98765432"), "{e}");
    }

    #[test]
    fn known_hosts_may_be_dev_null_but_not_a_folder() {
        let open = |file: &str| {
            settings(serde_json::json!({"host": "x", "ssh_config": "none", "known_hosts": [file]}))
                .resolve(None)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert_eq!(open("/dev/null"), Ok(()));
        assert_eq!(open("/"), Err("known_hosts file / is a folder".to_string()));
    }

    #[test]
    fn a_missing_known_hosts_file_is_named() {
        let e = settings(serde_json::json!({
            "host": "x", "ssh_config": "none", "known_hosts": ["/nonexistent/fleet_known_hosts"]
        }))
        .resolve(None)
        .err()
        .unwrap();
        assert_eq!(
            e.to_string(),
            "known_hosts file /nonexistent/fleet_known_hosts does not exist"
        );
    }

    #[test]
    fn jump_hops_parse() {
        assert_eq!(
            parse_jump_hop("u@h:2").unwrap(),
            (Some("u".into()), "h".into(), Some(2))
        );
        assert_eq!(
            parse_jump_hop("ssh://[::1]:22").unwrap(),
            (None, "::1".into(), Some(22))
        );
        assert!(parse_jump_hop("h:x").is_err());
    }
}
