//! The `adb` backend: pool-file settings and discovery.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use devbatch_core::{Backend, ConfigError, Device, DeviceSpec, DeviceState, Labels};
use serde::Deserialize;

use crate::client::{AdbServer, Target, default_server};
use crate::device::AdbDevice;
use crate::error::{AdbError, state_hint};
use crate::protocol::{ConnectReply, ListedDevice, parse_connect_reply};

/// Default limit of requests in flight to one adb server.
pub const DEFAULT_MAX_REQUESTS: usize = 64;

/// Default deadline for reaching the server and for each request's replies.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Settings of an `adb` pool-file entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdbSettings {
    /// One device by serial.
    serial: Option<String>,
    /// The adb server, `host:port`.
    server: Option<String>,
    /// Every device the server lists.
    #[serde(default)]
    discover: bool,
    /// A network device to `adb connect` first (`host:port`, port 5555 when left out).
    connect: Option<String>,
    /// Deadline for reaching the server and for each request's replies (humantime).
    connect_timeout: Option<String>,
    /// Most requests in flight to this server at once.
    max_requests: Option<usize>,
}

/// The `adb` backend: builds [`AdbDevice`]s from pool-file entries.
///
/// | key | meaning |
/// |---|---|
/// | `serial` | one device, by its serial as `adb devices` lists it |
/// | `connect` | a network device (`host:port`) to `adb connect` first; its serial is that address |
/// | `discover = true` | every device the server lists (ids = serials) |
/// | `server` | the adb server, `host:port` (default `127.0.0.1:5037`, or `ANDROID_ADB_SERVER_PORT`) |
/// | `connect_timeout` | deadline for reaching the server and each reply, e.g. `"10s"` (default 15 s) |
/// | `max_requests` | requests in flight to that server at once (default 64), shared by every entry naming it |
#[derive(Debug, Clone, Copy, Default)]
pub struct AdbBackend;

/// Normalises a network address: `localhost` becomes `127.0.0.1` (the server would otherwise
/// list one device twice) and a missing port becomes 5555.
fn normalise_addr(addr: &str) -> Result<String, ConfigError> {
    let addr = addr.trim();
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>().map_err(|_| {
                ConfigError::Settings(format!("connect = {addr:?}: the port must be a number"))
            })?,
        ),
        None => (addr, 5555),
    };
    if host.is_empty() {
        return Err(ConfigError::Settings(format!(
            "connect = {addr:?}: a host is needed (host:port)"
        )));
    }
    let host = if host.eq_ignore_ascii_case("localhost") {
        "127.0.0.1"
    } else {
        host
    };
    Ok(format!("{host}:{port}"))
}

fn labels_for(base: &Labels, listed: Option<&ListedDevice>, server: &str) -> Labels {
    let mut labels = base.clone();
    labels
        .entry("os".into())
        .or_insert_with(|| "android".into());
    labels
        .entry("adb_server".into())
        .or_insert_with(|| server.to_string());
    if let Some(d) = listed {
        for key in ["model", "product", "device"] {
            if let Some(v) = d.field(key) {
                labels.entry(key.into()).or_insert_with(|| v.to_string());
            }
        }
    }
    labels
}

fn state_of(listed: Option<&ListedDevice>) -> DeviceState {
    match listed {
        Some(d) if d.state != "device" => DeviceState::NotReady {
            state: d.state.clone(),
            hint: state_hint(&d.state),
        },
        _ => DeviceState::Ready,
    }
}

/// The server could not be reached or did not answer (as opposed to answering with a refusal).
fn server_silent(e: &AdbError) -> bool {
    matches!(
        e,
        AdbError::ServerUnreachable { .. } | AdbError::Timeout { .. } | AdbError::Protocol(_)
    )
}

fn setup(e: AdbError) -> ConfigError {
    ConfigError::Setup(e.to_string())
}

#[async_trait]
impl Backend for AdbBackend {
    fn name(&self) -> &str {
        "adb"
    }

    fn description(&self) -> &str {
        "Android devices through an adb server (native host protocol): one serial, a network device to connect, or every device discovered"
    }

    async fn open(&self, spec: DeviceSpec) -> Result<Vec<Arc<dyn Device>>, ConfigError> {
        let s: AdbSettings = spec.settings()?;
        let chosen = [s.serial.is_some(), s.connect.is_some(), s.discover]
            .iter()
            .filter(|b| **b)
            .count();
        if chosen != 1 {
            return Err(ConfigError::Settings(
                "an adb entry needs exactly one of `serial = \"...\"`, `connect = \"host:port\"` or `discover = true`".into(),
            ));
        }
        let addr = match &s.server {
            Some(a) if a.trim().is_empty() || !a.contains(':') => {
                return Err(ConfigError::Settings(format!(
                    "server = {a:?}: expected host:port, e.g. \"127.0.0.1:5037\""
                )));
            }
            Some(a) => a.trim().to_string(),
            None => default_server().map_err(ConfigError::Settings)?,
        };
        let timeout = match &s.connect_timeout {
            Some(t) => humantime::parse_duration(t).map_err(|e| {
                ConfigError::Settings(format!(
                    "connect_timeout = {t:?}: {e} (write e.g. \"10s\" or \"500ms\")"
                ))
            })?,
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        if timeout.is_zero() {
            return Err(ConfigError::Settings(
                "connect_timeout must be more than zero".into(),
            ));
        }
        let max_requests = s.max_requests.unwrap_or(DEFAULT_MAX_REQUESTS);
        if max_requests == 0 {
            return Err(ConfigError::Settings(
                "max_requests must be at least 1".into(),
            ));
        }
        let server = AdbServer::new(&addr, max_requests, timeout);

        if s.discover {
            if spec.id.is_some() {
                return Err(ConfigError::Settings(
                    "`id` cannot be given with `discover = true`: discovered devices are named by their serials".into(),
                ));
            }
            let listed = server.devices().await.map_err(setup)?;
            return Ok(devices_from_listing(&listed, &server, &spec.labels));
        }

        let (serial, connect_addr) = match (&s.serial, &s.connect) {
            (Some(serial), _) => (serial.clone(), None),
            (None, Some(c)) => {
                let a = normalise_addr(c)?;
                (a.clone(), Some(a))
            }
            _ => unreachable!("exactly one was checked"),
        };
        // A `serial` or `connect` entry names its device, so the pool does not need the server
        // to build it: a server that does not answer now leaves the device in the pool, in the
        // state `unknown`, and its operations ask the server again (failing as `unreachable`
        // while it is down). One server down must not keep the rest of the farm from running.
        let mut connect_failure = None;
        let mut server_down = None;
        if let Some(a) = &connect_addr {
            match server.query(&format!("host:connect:{a}")).await {
                Ok(reply) => {
                    if let ConnectReply::Failed(text) = parse_connect_reply(&reply) {
                        // Not fatal for the pool: the device is listed as absent, and
                        // operations try to connect again (failing as `unreachable` with the
                        // server's words).
                        tracing::warn!(device = %a, server = %addr, "adb connect failed: {text}");
                        connect_failure = Some(text);
                    }
                }
                Err(e) if server_silent(&e) => server_down = Some(e),
                Err(e) => return Err(setup(e)),
            }
        }
        let listing = match server_down {
            Some(_) => Vec::new(),
            None => match server.devices().await {
                Ok(listing) => listing,
                Err(e) if server_silent(&e) => {
                    server_down = Some(e);
                    Vec::new()
                }
                Err(e) => return Err(setup(e)),
            },
        };
        if let Some(e) = &server_down {
            tracing::warn!(device = %serial, server = %addr, "the adb server did not answer: {e}");
        }
        let matches: Vec<ListedDevice> =
            listing.into_iter().filter(|d| d.serial == serial).collect();
        if matches.len() > 1 {
            // Two transports under one serial: both, told apart by transport id.
            return Ok(devices_from_listing(&matches, &server, &spec.labels));
        }
        let listed = matches.first();
        let id = spec.id.clone().unwrap_or_else(|| serial.clone());
        let mut labels = labels_for(&spec.labels, listed, &addr);
        labels.insert("serial".into(), serial.clone());
        let state = match (listed, connect_failure) {
            _ if server_down.is_some() => DeviceState::NotReady {
                state: "unknown".into(),
                hint: format!(
                    "the adb server at {addr} did not answer when the pool was loaded ({}); operations ask it again",
                    server_down
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                ),
            },
            (Some(_), _) => state_of(listed),
            (None, Some(text)) => DeviceState::NotReady {
                state: "absent".into(),
                hint: format!("the adb server at {addr} could not connect it: {text}"),
            },
            (None, None) => DeviceState::NotReady {
                state: "absent".into(),
                hint: format!(
                    "the adb server at {addr} does not list this serial; check the cable or `adb devices`"
                ),
            },
        };
        let device = AdbDevice::new(
            id,
            serial.clone(),
            Target::Serial(serial),
            server,
            labels,
            state,
            listed.and_then(|d| d.transport_id),
            connect_addr,
        );
        Ok(vec![Arc::new(device)])
    }
}

/// A discovered serial that is an `IP:PORT` names a network device: operations (and a reboot
/// with `wait`) may `host:connect` it again when the server has dropped it.
fn network_address(serial: &str) -> Option<String> {
    serial
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.to_string())
}

/// One device per listed line. Serials listed more than once are told apart by transport id:
/// their ids become `SERIAL#transport_id` and requests go by `host:transport-id:N`.
pub(crate) fn devices_from_listing(
    listed: &[ListedDevice],
    server: &AdbServer,
    base: &Labels,
) -> Vec<Arc<dyn Device>> {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for d in listed {
        *count.entry(d.serial.as_str()).or_default() += 1;
    }
    listed
        .iter()
        .map(|d| {
            let duplicated = count[d.serial.as_str()] > 1;
            let (id, target) = match (duplicated, d.transport_id) {
                (true, Some(tid)) => (format!("{}#{tid}", d.serial), Target::TransportId(tid)),
                _ => (d.serial.clone(), Target::Serial(d.serial.clone())),
            };
            let mut labels = labels_for(base, Some(d), server.addr());
            labels.insert("serial".into(), d.serial.clone());
            if let Some(tid) = d.transport_id {
                labels.insert("transport_id".into(), tid.to_string());
            }
            Arc::new(AdbDevice::new(
                id,
                d.serial.clone(),
                target,
                server.clone(),
                labels,
                state_of(Some(d)),
                d.transport_id,
                network_address(&d.serial),
            )) as Arc<dyn Device>
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse_devices_l;

    #[test]
    fn discovered_network_serials_can_be_reconnected() {
        assert_eq!(
            network_address("127.0.0.1:6100").as_deref(),
            Some("127.0.0.1:6100")
        );
        assert_eq!(network_address("emulator-5554"), None);
        assert_eq!(network_address("R58M 12 (work)"), None);
    }

    #[test]
    fn addresses_are_normalised() {
        assert_eq!(normalise_addr("localhost:6100").unwrap(), "127.0.0.1:6100");
        assert_eq!(normalise_addr("10.0.0.2").unwrap(), "10.0.0.2:5555");
        assert!(normalise_addr("h:x").is_err());
        assert!(normalise_addr(":5").is_err());
    }

    #[test]
    fn duplicates_are_kept_apart_and_states_carried() {
        let listing = parse_devices_l(
            "dup                    device model:A transport_id:3\n\
             dup                    device model:B transport_id:5\n\
             127.0.0.1:6100         unauthorized transport_id:6\n",
        );
        let server = AdbServer::new("127.0.0.1:1", 1, Duration::from_secs(1));
        let devices = devices_from_listing(&listing, &server, &Labels::new());
        let ids: Vec<&str> = devices.iter().map(|d| d.id()).collect();
        assert_eq!(ids, ["dup#3", "dup#5", "127.0.0.1:6100"]);
        assert_eq!(devices[1].labels()["model"], "B");
        assert_eq!(devices[2].state().as_str(), "unauthorized");
        assert_eq!(devices[0].state(), DeviceState::Ready);
    }

    /// The transport-id path against the real server: a serial listed twice cannot be produced
    /// with TCP devices, so the listing is doubled by hand; both entries address the device by
    /// `host:transport-id:N` (and `host-transport-id:N:features`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn devices_addressed_by_transport_id_work_on_the_real_server() {
        use devbatch_core::Command;
        let server = adbd_sim::testing::AdbServer::start()
            .await
            .unwrap_or_else(|e| panic!("needs the real adb server (apt-get install -y adb): {e}"));
        let sim = adbd_sim::SimDevice::start(adbd_sim::DeviceConfig::modern("twin"))
            .await
            .unwrap();
        let serial = server.connect(&sim).await.unwrap();
        let client = AdbServer::new(
            &format!("127.0.0.1:{}", server.port()),
            8,
            Duration::from_secs(30),
        );
        let mut listing = client.devices().await.unwrap();
        assert_eq!(listing.len(), 1);
        listing.push(listing[0].clone());
        let tid = listing[0].transport_id.expect("transport id listed");
        let devices = devices_from_listing(&listing, &client, &Labels::new());
        assert_eq!(devices[0].id(), format!("{serial}#{tid}"));
        let out = devices[1]
            .run(&Command::shell("getprop ro.serialno"))
            .await
            .unwrap();
        assert_eq!(out.stdout, b"twin\n");
        let bad = devices_from_listing(
            &[
                ListedDevice {
                    transport_id: Some(tid + 1000),
                    ..listing[0].clone()
                },
                ListedDevice {
                    transport_id: Some(tid + 1001),
                    ..listing[0].clone()
                },
            ],
            &client,
            &Labels::new(),
        );
        let err = bad[0].run(&Command::shell("true")).await.unwrap_err();
        assert_eq!(err.kind(), devbatch_core::ErrorKind::Unreachable, "{err}");
        assert!(
            err.to_string()
                .contains(&format!("transport id {}", tid + 1000)),
            "{err}"
        );
    }

    #[tokio::test]
    async fn settings_are_checked() {
        let open = |v: serde_json::Value| async move {
            let spec = DeviceSpec {
                settings: v.as_object().unwrap().clone(),
                ..Default::default()
            };
            AdbBackend
                .open(spec)
                .await
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        assert!(open(serde_json::json!({})).await.contains("exactly one of"));
        assert!(
            open(serde_json::json!({"serial": "x", "discover": true}))
                .await
                .contains("exactly one of")
        );
        assert!(
            open(serde_json::json!({"serial": "x", "connect_timeout": "soon"}))
                .await
                .contains("connect_timeout = \"soon\"")
        );
        assert!(
            open(serde_json::json!({"serial": "x", "max_requests": 0}))
                .await
                .contains("max_requests must be at least 1")
        );
        assert!(
            open(serde_json::json!({"serial": "x", "servr": "a:1"}))
                .await
                .contains("unknown field `servr`")
        );
        assert!(
            open(serde_json::json!({"serial": "x", "server": "nohost"}))
                .await
                .contains("expected host:port")
        );
    }
}
