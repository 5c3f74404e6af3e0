//! What a simulated device looks like: properties, features, protocol limits and faults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The feature list of a modern (Android 10+) adbd, as the 29 host knows them.
///
/// `sendrecv_v2*` and `delayed_ack` are left out on purpose: the simulator does not implement them.
pub const MODERN_FEATURES: &[&str] = &[
    "shell_v2",
    "cmd",
    "stat_v2",
    "ls_v2",
    "fixed_push_mkdir",
    "apex",
    "abb",
    "fixed_push_symlink_timestamp",
    "abb_exec",
    "remount_shell",
    "track_app",
];

/// A fault the device plays on demand (see [`crate::SimHandle::set_fault`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Healthy.
    #[default]
    None,
    /// The device stays connected (and answers the CNXN handshake of new links, so the server lists it as
    /// `device`) but stops answering: new streams are never accepted and running streams send nothing more.
    /// What a client's timeout is for.
    Hang,
    /// New links are accepted but the CNXN handshake is never answered: the server lists the device as
    /// `offline` and `adb connect` gives up after about 10 s with `failed to connect to H:P`.
    NeverAnswer,
    /// New links get an AUTH token instead of CNXN, and no signature or public key is ever accepted: the
    /// server lists the device as `unauthorized` and `adb connect` says `failed to authenticate to H:P`.
    Unauthorized,
    /// New links are closed as soon as they are accepted.
    CloseImmediately,
    /// Drop the link (TCP close, no CLSE) once `n` bytes of stream payload (WRTE data, both directions,
    /// counted from the moment the fault was set) have gone through; the message that would pass `n` is
    /// not delivered. One-shot: after the drop the fault resets to [`Fault::None`], so the server's
    /// reconnect finds a healthy device again.
    DropAfterBytes(u64),
    /// Stream payload (both directions) is limited to about this many bytes per second.
    SlowLink(u64),
}

/// How the device behaves after `reboot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootBehavior {
    /// The link drops; new links are held without an answer for `down` (the device is off), then the device
    /// comes back with `sys.boot_completed=0`, which turns to `1` after `booting` more.
    Returns {
        /// How long the device is away.
        down: Duration,
        /// How long it reports `sys.boot_completed=0` once it is back.
        booting: Duration,
    },
    /// The link drops and the device never answers again (until the fault or reboot behaviour is changed).
    NeverReturns,
}

/// The configuration of one simulated device. Build with [`DeviceConfig::modern`] or
/// [`DeviceConfig::legacy`] and adjust with the builder methods.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub(crate) device_serial: String,
    pub(crate) props: BTreeMap<String, String>,
    pub(crate) features: Vec<String>,
    pub(crate) version: u32,
    pub(crate) max_data: u32,
    pub(crate) listen: SocketAddr,
    pub(crate) root: Option<PathBuf>,
    pub(crate) fault: Fault,
    pub(crate) reboot: RebootBehavior,
}

impl DeviceConfig {
    /// An Android 14 (SDK 34) device with the modern feature set ([`MODERN_FEATURES`]: `shell_v2`, `cmd`,
    /// `abb_exec`, `stat_v2`, `ls_v2`, ...), 1 MiB transport payloads. `serial` is the device's own serial
    /// (`ro.serialno`); the adb server names a TCP device by its address instead (see
    /// [`crate::SimHandle::serial`]).
    pub fn modern(serial: impl Into<String>) -> DeviceConfig {
        let serial = serial.into();
        let props = [
            ("ro.product.name", "sim_phone"),
            ("ro.product.model", "SimPhone"),
            ("ro.product.device", "simdev"),
            ("ro.product.manufacturer", "Devbatch"),
            ("ro.product.brand", "devbatch"),
            ("ro.product.cpu.abi", "x86_64"),
            ("ro.product.cpu.abilist", "x86_64,arm64-v8a"),
            ("ro.build.version.release", "14"),
            ("ro.build.version.sdk", "34"),
            ("ro.build.id", "UQ1A.240105.004"),
            ("ro.build.type", "userdebug"),
            ("ro.build.fingerprint", "devbatch/sim_phone/simdev:14/UQ1A.240105.004/1:userdebug/test-keys"),
            ("ro.hardware", "ranchu"),
            ("ro.kernel.qemu", "0"),
            ("persist.sys.locale", "en-US"),
            ("sys.boot_completed", "1"),
        ];
        let mut props: BTreeMap<String, String> =
            props.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        props.insert("ro.serialno".into(), serial.clone());
        DeviceConfig {
            device_serial: serial,
            props,
            features: MODERN_FEATURES.iter().map(|f| f.to_string()).collect(),
            version: crate::proto::VERSION_SKIP_CHECKSUM,
            max_data: 1024 * 1024,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            root: None,
            fault: Fault::None,
            reboot: RebootBehavior::Returns { down: Duration::from_secs(2), booting: Duration::from_secs(1) },
        }
    }

    /// An Android 6.0.1 (SDK 23) device: no features at all (so no `shell_v2`, `cmd`, `abb_exec` or
    /// `stat_v2`: clients must use legacy `shell:`, `STAT` and push + `pm install`), protocol version
    /// 0x01000000 (checksums on every message) and 4 KiB transport payloads.
    pub fn legacy(serial: impl Into<String>) -> DeviceConfig {
        let mut config = DeviceConfig::modern(serial);
        config.features.clear();
        config.version = crate::proto::VERSION_CHECKSUM;
        config.max_data = 4096;
        for (k, v) in [
            ("ro.product.name", "sim_legacy"),
            ("ro.product.model", "SimLegacy"),
            ("ro.product.device", "simold"),
            ("ro.product.cpu.abi", "armeabi-v7a"),
            ("ro.product.cpu.abilist", "armeabi-v7a,armeabi"),
            ("ro.build.version.release", "6.0.1"),
            ("ro.build.version.sdk", "23"),
            ("ro.build.id", "MOB31T"),
            ("ro.build.fingerprint", "devbatch/sim_legacy/simold:6.0.1/MOB31T/1:userdebug/test-keys"),
        ] {
            config.props.insert(k.into(), v.into());
        }
        config
    }

    /// Sets one system property (`getprop KEY`). `ro.product.name`, `ro.product.model` and
    /// `ro.product.device` also go into the CNXN banner, so `host:devices-l` shows them.
    pub fn prop(mut self, key: impl Into<String>, value: impl Into<String>) -> DeviceConfig {
        self.props.insert(key.into(), value.into());
        self
    }

    /// Sets `ro.product.model` (shown by `adb devices -l` as `model:`).
    pub fn model(self, model: impl Into<String>) -> DeviceConfig {
        self.prop("ro.product.model", model)
    }

    /// Replaces the feature list sent in the banner.
    pub fn features<I, S>(mut self, features: I) -> DeviceConfig
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.features = features.into_iter().map(Into::into).collect();
        self
    }

    /// Adds one feature (no-op when present).
    pub fn feature(mut self, feature: impl Into<String>) -> DeviceConfig {
        let feature = feature.into();
        if !self.features.contains(&feature) {
            self.features.push(feature);
        }
        self
    }

    /// Removes one feature.
    pub fn without_feature(mut self, feature: &str) -> DeviceConfig {
        self.features.retain(|f| f != feature);
        self
    }

    /// The transport protocol version sent in CNXN (0x01000000 or 0x01000001).
    pub fn protocol_version(mut self, version: u32) -> DeviceConfig {
        self.version = version;
        self
    }

    /// The largest transport payload the device accepts (the link uses the smaller of host and device).
    pub fn max_data(mut self, max_data: u32) -> DeviceConfig {
        self.max_data = max_data.max(256);
        self
    }

    /// The address to listen on (default `127.0.0.1:0`, a free port). Keep ports out of 5555-5585: the
    /// adb server probes those for emulators.
    pub fn listen(mut self, addr: SocketAddr) -> DeviceConfig {
        self.listen = addr;
        self
    }

    /// Uses this directory as the device's sandbox (default: a fresh temporary directory removed when the
    /// handle is dropped).
    pub fn root(mut self, root: impl Into<PathBuf>) -> DeviceConfig {
        self.root = Some(root.into());
        self
    }

    /// The fault the device starts with.
    pub fn fault(mut self, fault: Fault) -> DeviceConfig {
        self.fault = fault;
        self
    }

    /// What `reboot` does (default: away for 2 s, then 1 s with `sys.boot_completed=0`).
    pub fn reboot_behavior(mut self, reboot: RebootBehavior) -> DeviceConfig {
        self.reboot = reboot;
        self
    }

    /// The device's own serial (`ro.serialno`).
    pub fn device_serial(&self) -> &str {
        &self.device_serial
    }

    /// The CNXN banner: `device::ro.product.name=..;ro.product.model=..;ro.product.device=..;features=..`.
    pub(crate) fn banner(&self, props: &BTreeMap<String, String>) -> String {
        let get = |k: &str| props.get(k).map(String::as_str).unwrap_or("");
        format!(
            "device::ro.product.name={};ro.product.model={};ro.product.device={};features={}",
            get("ro.product.name"),
            get("ro.product.model"),
            get("ro.product.device"),
            self.features.join(",")
        )
    }
}
