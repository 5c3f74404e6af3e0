//! Pool files: which devices exist, how to reach them, batch defaults and plugins.
//!
//! ```toml
//! plugins = ["plugins/libdisk_usage.so"]   # relative to this file
//!
//! [defaults]
//! concurrency = 20
//! timeout = "2m"
//! retries = 1
//! max_output = "8MiB"
//!
//! [[devices]]
//! backend = "ssh"          # any registered backend, plugins' included
//! id = "web1"
//! labels = { role = "web" }
//! host = "10.0.0.5"        # everything else is the backend's own settings
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use devbatch_core::{Device, DevicePool, DeviceSpec, Labels, Registry};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::cli::{parse_duration, parse_size};
use crate::error::CliError;

/// Batch defaults a pool file may set; flags override them.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Defaults {
    pub concurrency: Option<usize>,
    pub timeout: Option<Duration>,
    pub deadline: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub max_output: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    concurrency: Option<toml::Spanned<usize>>,
    timeout: Option<toml::Spanned<String>>,
    deadline: Option<toml::Spanned<String>>,
    connect_timeout: Option<toml::Spanned<String>>,
    retries: Option<u32>,
    max_output: Option<toml::Spanned<toml::Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    #[serde(default)]
    plugins: Vec<PathBuf>,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    devices: Vec<toml::Spanned<toml::Table>>,
}

/// A pool file read and checked, its devices not yet built (plugins may provide backends).
#[derive(Debug)]
pub(crate) struct PoolFile {
    path: PathBuf,
    text: String,
    pub defaults: Defaults,
    /// Plugin paths, resolved against the file's folder.
    pub plugins: Vec<PathBuf>,
    entries: Vec<(usize, toml::Table)>,
}

/// `file:line:` for a byte offset.
fn location(path: &Path, text: &str, offset: usize) -> String {
    let line = text[..offset.min(text.len())].matches('\n').count() + 1;
    format!("{}:{line}", path.display())
}

/// The folder relative paths in the pool file at `path` are relative to (empty: the current
/// one).
fn folder_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The key of the `key = value` whose value starts at `offset`, to name it in messages: the
/// last key before it on its line (inside an inline table too), dotted, or quoted.
fn key_before(text: &str, offset: usize) -> Option<&str> {
    let before = text.get(..offset)?;
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    let assignment = line.trim_end().strip_suffix('=')?;
    let key = assignment
        .rsplit(['{', ','])
        .next()?
        .trim()
        .trim_matches('"');
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    plain.then_some(key)
}

impl PoolFile {
    pub(crate) fn read(path: &Path) -> Result<Self, CliError> {
        let text = std::fs::read_to_string(path).map_err(|source| CliError::File {
            context: "cannot read pool file",
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, text)
    }

    pub(crate) fn parse(path: &Path, text: String) -> Result<Self, CliError> {
        let raw: RawPool = toml::from_str(&text).map_err(|e| {
            let at = e.span().map_or_else(
                || path.display().to_string(),
                |s| location(path, &text, s.start),
            );
            let key = e.span().and_then(|s| key_before(&text, s.start));
            let hint = match key.and_then(|k| k.rsplit('.').next()) {
                Some("timeout" | "deadline" | "connect_timeout") => {
                    " (a duration such as \"30s\" or \"2m\")"
                }
                _ => "",
            };
            let key = key.map(|k| format!("{k}: ")).unwrap_or_default();
            CliError::Pool(format!("{at}: {key}{}{hint}", e.message().trim()))
        })?;
        // `file:line` of a value in [defaults].
        let at = |span: std::ops::Range<usize>| location(path, &text, span.start);
        let duration =
            |key: &str, v: Option<toml::Spanned<String>>| -> Result<Option<Duration>, CliError> {
                v.map(|s| {
                    parse_duration(s.get_ref()).map_err(|e| {
                        CliError::Pool(format!(
                            "{}: [defaults] {key} = {:?}: {e}",
                            at(s.span()),
                            s.get_ref()
                        ))
                    })
                })
                .transpose()
            };
        let d = raw.defaults;
        let max_output = match d.max_output {
            None => None,
            Some(v) => {
                let span = v.span();
                match v.into_inner() {
                    toml::Value::Integer(n) if n > 0 => Some(n as usize),
                    toml::Value::String(s) => Some(parse_size(&s).map_err(|e| {
                        CliError::Pool(format!("{}: [defaults] max_output: {e}", at(span)))
                    })?),
                    other => {
                        return Err(CliError::Pool(format!(
                            "{}: [defaults] max_output must be a size such as \"4MiB\" or a positive number of bytes, got {other}",
                            at(span)
                        )));
                    }
                }
            }
        };
        if let Some(c) = &d.concurrency
            && *c.get_ref() == 0
        {
            return Err(CliError::Pool(format!(
                "{}: [defaults] concurrency must be at least 1",
                at(c.span())
            )));
        }
        let defaults = Defaults {
            concurrency: d.concurrency.map(toml::Spanned::into_inner),
            timeout: duration("timeout", d.timeout)?,
            deadline: duration("deadline", d.deadline)?,
            connect_timeout: duration("connect_timeout", d.connect_timeout)?,
            retries: d.retries,
            max_output,
        };
        let base = folder_of(path);
        // Device entries' paths are resolved the same way, by their backends (`base_dir`).
        let plugins = raw
            .plugins
            .into_iter()
            .map(|p| if p.is_absolute() { p } else { base.join(p) })
            .collect();
        let entries = raw
            .devices
            .into_iter()
            .map(|s| (s.span().start, s.into_inner()))
            .collect();
        Ok(PoolFile {
            path: path.to_path_buf(),
            text,
            defaults,
            plugins,
            entries,
        })
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Builds every device the file describes.
    pub(crate) async fn build(
        &self,
        registry: &Registry,
        defaults: &Defaults,
    ) -> Result<DevicePool, CliError> {
        let mut pool = DevicePool::new();
        for (n, (offset, table)) in self.entries.iter().enumerate() {
            let at = location(&self.path, &self.text, *offset);
            let fail =
                |what: String| CliError::Pool(format!("{at}: device entry #{}: {what}", n + 1));
            let (backend_name, mut spec) = entry_spec(table, defaults).map_err(&fail)?;
            spec.base_dir = Some(folder_of(&self.path));
            let backend = registry
                .backend(&backend_name)
                .map_err(|e| fail(e.to_string()))?;
            let what = match &spec.id {
                Some(id) => format!("{backend_name} device '{id}'"),
                None => format!("{backend_name} entry"),
            };
            let devices = backend
                .open(spec)
                .await
                .map_err(|e| fail(format!("{what}: {e}")))?;
            add_all(&mut pool, devices).map_err(&fail)?;
        }
        Ok(pool)
    }
}

/// Splits a pool entry into its backend, common keys and the backend's own settings.
fn entry_spec(table: &toml::Table, defaults: &Defaults) -> Result<(String, DeviceSpec), String> {
    let backend =
        match table.get("backend") {
            Some(toml::Value::String(b)) => b.clone(),
            Some(other) => return Err(format!("`backend` must be a string, got {other}")),
            None => return Err(
                "missing key `backend` (the kind of device: local, mock, ssh, adb, or a plugin's)"
                    .into(),
            ),
        };
    let id = match table.get("id") {
        None => None,
        Some(toml::Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(other) => return Err(format!("`id` must be a non-empty string, got {other}")),
    };
    let mut labels = Labels::new();
    match table.get("labels") {
        None => {}
        Some(toml::Value::Table(t)) => {
            for (k, v) in t {
                match v {
                    toml::Value::String(s) => labels.insert(k.clone(), s.clone()),
                    other => return Err(format!("label `{k}` must be a string, got {other}")),
                };
            }
        }
        Some(other) => return Err(format!("`labels` must be a table of strings, got {other}")),
    }
    let mut settings = Map::new();
    for (k, v) in table {
        if !matches!(k.as_str(), "backend" | "id" | "labels") {
            let json = serde_json::to_value(v).map_err(|e| format!("key `{k}`: {e}"))?;
            settings.insert(k.clone(), json);
        }
    }
    if let Some(t) = defaults.connect_timeout
        && CONNECTING_BACKENDS.contains(&backend.as_str())
        && !settings.contains_key("connect_timeout")
    {
        settings.insert(
            "connect_timeout".into(),
            Value::String(humantime::format_duration(t).to_string()),
        );
    }
    Ok((
        backend,
        DeviceSpec {
            id,
            labels,
            settings,
            base_dir: None,
        },
    ))
}

/// Backends that take a `connect_timeout` setting, filled in from `--connect-timeout` or the
/// pool's defaults when an entry has none.
const CONNECTING_BACKENDS: &[&str] = &["ssh", "adb"];

fn add_all(pool: &mut DevicePool, devices: Vec<Arc<dyn Device>>) -> Result<(), String> {
    for d in devices {
        pool.add(d).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The pool used when no pool file is found: this machine, plus every device of the default
/// adb server when one answers (none, silently, when none does).
pub(crate) async fn embedded_default(
    registry: &Registry,
    defaults: &Defaults,
) -> Result<DevicePool, CliError> {
    let mut pool = DevicePool::new();
    let local = registry
        .backend("local")
        .map_err(|e| CliError::Pool(e.to_string()))?;
    let devices = local
        .open(DeviceSpec {
            id: Some("local".into()),
            ..DeviceSpec::default()
        })
        .await
        .map_err(|e| CliError::Pool(format!("embedded default pool: {e}")))?;
    add_all(&mut pool, devices).map_err(CliError::Pool)?;
    if let Ok(adb) = registry.backend("adb") {
        let mut table = toml::Table::new();
        table.insert("backend".into(), toml::Value::String("adb".into()));
        table.insert("discover".into(), toml::Value::Boolean(true));
        let (_, spec) = entry_spec(&table, defaults).map_err(CliError::Pool)?;
        match tokio::time::timeout(Duration::from_secs(3), adb.open(spec)).await {
            Ok(Ok(devices)) => add_all(&mut pool, devices).map_err(CliError::Pool)?,
            // A mistake of the user's (ANDROID_ADB_SERVER_PORT=abc) is worth saying.
            Ok(Err(e @ devbatch_core::ConfigError::Settings(_))) => {
                tracing::warn!("no adb devices in the default pool: {e}")
            }
            Ok(Err(e)) => tracing::debug!("no adb devices in the default pool: {e}"),
            Err(_) => tracing::debug!(
                "no adb devices in the default pool: the adb server did not answer in 3s"
            ),
        }
    }
    Ok(pool)
}

/// Where the pool comes from, in lookup order: `--pool`/`$DEVBATCH_POOL` (given), then
/// `./devbatch.toml`, then the user's config folder.
pub(crate) fn find(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p.to_path_buf());
    }
    // An empty $DEVBATCH_POOL counts as unset.
    if let Some(p) = std::env::var_os("DEVBATCH_POOL").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let local = PathBuf::from("devbatch.toml");
    if local.is_file() {
        return Some(local);
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    let user = config.join("devbatch").join("pool.toml");
    user.is_file().then_some(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PoolFile, String> {
        PoolFile::parse(Path::new("fleet.toml"), text.to_string()).map_err(|e| e.to_string())
    }

    #[test]
    fn malformed_files_name_file_line_and_key() {
        let e = parse("[defaults]\nconcurrency = 4\n\n[[devices]]\nbackend = \"mock\"\nid = \n")
            .unwrap_err();
        assert!(e.starts_with("fleet.toml:6: "), "{e}");
        let e = parse("[defaults]\nconcurency = 4\n").unwrap_err();
        assert!(
            e.starts_with("fleet.toml:2: unknown field `concurency`, expected one of"),
            "{e}"
        );
        let e = parse("[defaults]\ntimeout = \"soon\"\n").unwrap_err();
        assert!(
            e.starts_with("fleet.toml:2: [defaults] timeout = \"soon\": "),
            "{e}"
        );
        // The line of the key itself, not of a longer key or a comment that contains its name.
        let e = parse(
            "# timeout = \"1s\" is a good value\n[defaults]\nconnect_timeout = \"1s\"\ntimeout = \"soon\"\n",
        )
        .unwrap_err();
        assert!(
            e.starts_with("fleet.toml:4: [defaults] timeout = \"soon\": "),
            "{e}"
        );
        let e = parse("[defaults]\n\nmax_output = \"lots\"\n").unwrap_err();
        assert!(
            e.starts_with("fleet.toml:3: [defaults] max_output: "),
            "{e}"
        );
        let e = parse("[defaults]\nconcurrency = \"ten\"\n").unwrap_err();
        assert_eq!(
            e,
            "fleet.toml:2: concurrency: invalid type: string \"ten\", expected usize"
        );
        let e = parse("defaults = { retries = 1, concurrency = \"ten\" }\n").unwrap_err();
        assert!(
            e.starts_with("fleet.toml:1: concurrency: invalid type"),
            "{e}"
        );
        let e = parse("defaults.timeout = 5\n").unwrap_err();
        assert!(
            e.starts_with("fleet.toml:1: defaults.timeout: invalid type"),
            "{e}"
        );
        assert!(e.ends_with("(a duration such as \"30s\" or \"2m\")"), "{e}");
        let e = parse("[defaults]\n\"retries\" = \"x\"\n").unwrap_err();
        assert!(e.starts_with("fleet.toml:2: retries: invalid type"), "{e}");
        let e = parse("[defaults]\ntimeout = 5\n").unwrap_err();
        assert_eq!(
            e,
            "fleet.toml:2: timeout: invalid type: integer `5`, expected a string (a duration such as \"30s\" or \"2m\")"
        );
    }

    #[test]
    fn entries_split_into_common_keys_and_settings() {
        let pool = parse("plugins = [\"libx.so\"]\n[[devices]]\nbackend = \"mock\"\nid = \"a\"\nlabels = { os = \"android\" }\ncount = 3\n").unwrap();
        assert_eq!(pool.plugins, vec![PathBuf::from("libx.so")]);
        let (backend, spec) = entry_spec(&pool.entries[0].1, &Defaults::default()).unwrap();
        assert_eq!(backend, "mock");
        assert_eq!(spec.id.as_deref(), Some("a"));
        assert_eq!(spec.labels.get("os").map(String::as_str), Some("android"));
        assert_eq!(spec.settings.get("count"), Some(&serde_json::json!(3)));
        let bad: toml::Table = toml::from_str("id = \"x\"").unwrap();
        assert!(
            entry_spec(&bad, &Defaults::default())
                .unwrap_err()
                .starts_with("missing key `backend`")
        );
    }
}
