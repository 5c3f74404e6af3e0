//! One simulated device: the listener, the per-link transport state machine and the stream table.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{DeviceConfig, Fault, RebootBehavior};
use crate::instrument::InstrumentationScript;
use crate::pm::{InstallOutcome, PackageManager};
use crate::proto::{A_AUTH, A_CLSE, A_CNXN, A_OKAY, A_OPEN, A_WRTE, AUTH_TOKEN, Message, command_name};
use crate::services::{self, Service};

/// Locks a mutex, ignoring poisoning (the data are plain values that stay consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State of one device shared by its listener, links, streams and handle.
pub(crate) struct Shared {
    pub(crate) config: DeviceConfig,
    pub(crate) addr: SocketAddr,
    /// The sandbox: Android paths map below it.
    pub(crate) root: PathBuf,
    /// The simulator's control directory (tool scripts, props file), outside the sandbox.
    pub(crate) ctl: PathBuf,
    fault: Mutex<Fault>,
    fault_bytes: AtomicU64,
    props: Mutex<BTreeMap<String, String>>,
    reboot: Mutex<RebootBehavior>,
    /// When new links may complete their handshake; `None`: never (a device that did not come back).
    available_at: Mutex<Option<Instant>>,
    boot_generation: AtomicU64,
    links: Mutex<CancellationToken>,
    link_count: AtomicUsize,
    pub(crate) shutdown: CancellationToken,
    pub(crate) pm: Mutex<PackageManager>,
    pub(crate) scripts: Mutex<crate::tools::Scripts>,
}

impl Shared {
    pub(crate) fn fault(&self) -> Fault {
        *lock(&self.fault)
    }

    fn set_fault(&self, fault: Fault) {
        *lock(&self.fault) = fault;
        self.fault_bytes.store(0, Ordering::SeqCst);
        if matches!(fault, Fault::NeverAnswer | Fault::Unauthorized | Fault::CloseImmediately) {
            self.drop_links();
        }
    }

    /// Accounts `n` bytes of stream payload; `false` when the link must drop now (`DropAfterBytes`).
    fn pass_payload(&self, n: usize) -> bool {
        let mut fault = lock(&self.fault);
        if let Fault::DropAfterBytes(limit) = *fault {
            let total = self.fault_bytes.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
            if total > limit {
                tracing::info!(addr = %self.addr, total, limit, "fault: dropping the link");
                *fault = Fault::None;
                return false;
            }
        }
        true
    }

    /// Drops every current link (TCP close, no CLSE); the server will reconnect.
    pub(crate) fn drop_links(&self) {
        let mut links = lock(&self.links);
        links.cancel();
        *links = self.shutdown.child_token();
    }

    fn link_token(&self) -> CancellationToken {
        lock(&self.links).child_token()
    }

    pub(crate) fn props(&self) -> BTreeMap<String, String> {
        lock(&self.props).clone()
    }

    pub(crate) fn prop(&self, key: &str) -> Option<String> {
        lock(&self.props).get(key).cloned()
    }

    pub(crate) fn set_prop(&self, key: &str, value: &str) {
        let mut props = lock(&self.props);
        props.insert(key.to_string(), value.to_string());
        if let Err(err) = write_props_file(&self.ctl, &props) {
            tracing::warn!(%err, "cannot write the props file");
        }
    }

    /// Takes the device away as `reboot` does, and brings it back per its [`RebootBehavior`].
    pub(crate) fn reboot(self: &Arc<Self>) {
        let behavior = *lock(&self.reboot);
        let generation = self.boot_generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.set_prop("sys.boot_completed", "0");
        match behavior {
            RebootBehavior::NeverReturns => *lock(&self.available_at) = None,
            RebootBehavior::Returns { down, booting } => {
                *lock(&self.available_at) = Some(Instant::now() + down);
                let shared = Arc::clone(self);
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::time::sleep(down + booting) => {}
                        _ = shared.shutdown.cancelled() => return,
                    }
                    if shared.boot_generation.load(Ordering::SeqCst) == generation {
                        shared.set_prop("sys.boot_completed", "1");
                    }
                });
            }
        }
        tracing::info!(addr = %self.addr, ?behavior, "rebooting");
        self.drop_links();
    }

    /// Waits until the device may answer a handshake (it is not rebooting). Never returns for a device that
    /// does not come back; the caller selects on cancellation.
    async fn wait_available(&self) {
        loop {
            let at = *lock(&self.available_at);
            match at {
                Some(at) if at <= Instant::now() => return,
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

fn write_props_file(ctl: &Path, props: &BTreeMap<String, String>) -> io::Result<()> {
    let mut text = String::new();
    for (k, v) in props {
        text.push_str(k);
        text.push('=');
        text.push_str(&v.replace('\n', " "));
        text.push('\n');
    }
    let tmp = ctl.join(format!("props.tmp.{}", fastrand::u64(..)));
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, ctl.join("props"))
}

/// Starts simulated devices.
#[derive(Debug, Clone, Copy)]
pub struct SimDevice;

impl SimDevice {
    /// Binds the configured address (default `127.0.0.1:0`), prepares the sandbox and serves links until
    /// the returned handle is stopped or dropped.
    pub async fn start(config: DeviceConfig) -> io::Result<SimHandle> {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let tmp = tempfile::Builder::new().prefix("adbd-sim-").tempdir()?;
        let root = match &config.root {
            Some(root) => root.clone(),
            None => tmp.path().join("root"),
        };
        let ctl = tmp.path().join("ctl");
        for dir in ["data/local/tmp", "sdcard", "storage/emulated/0", "data/app"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        std::fs::create_dir_all(ctl.join("calls"))?;
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            addr,
            root,
            ctl,
            fault: Mutex::new(config.fault),
            fault_bytes: AtomicU64::new(0),
            props: Mutex::new(config.props.clone()),
            reboot: Mutex::new(config.reboot),
            available_at: Mutex::new(Some(Instant::now())),
            boot_generation: AtomicU64::new(0),
            links: Mutex::new(shutdown.child_token()),
            link_count: AtomicUsize::new(0),
            shutdown,
            pm: Mutex::new(PackageManager::default()),
            scripts: Mutex::new(crate::tools::Scripts::default()),
            config,
        });
        write_props_file(&shared.ctl, &lock(&shared.props))?;
        crate::tools::install(&shared)?;
        tokio::spawn(accept_loop(Arc::clone(&shared), listener));
        crate::tools::spawn_call_server(Arc::clone(&shared))?;
        tracing::debug!(%addr, serial = shared.config.device_serial(), "simulated device listening");
        Ok(SimHandle { shared, _tmp: tmp })
    }
}

/// A running simulated device. Dropping it stops the device and removes its temporary sandbox.
pub struct SimHandle {
    shared: Arc<Shared>,
    _tmp: tempfile::TempDir,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.shared.addr)
            .field("device_serial", &self.shared.config.device_serial())
            .field("root", &self.shared.root)
            .finish()
    }
}

impl SimHandle {
    /// The TCP port the device listens on.
    pub fn port(&self) -> u16 {
        self.shared.addr.port()
    }

    /// The listening address (`127.0.0.1:PORT`).
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The serial the adb server lists this device under once connected: `127.0.0.1:PORT` (for TCP devices
    /// the server uses the address, not the banner's serial).
    pub fn serial(&self) -> String {
        self.shared.addr.to_string()
    }

    /// The device's own serial (`ro.serialno`, the name given to [`DeviceConfig::modern`]).
    pub fn device_serial(&self) -> &str {
        self.shared.config.device_serial()
    }

    /// The sandbox directory: the Android path `/data/local/tmp/x` is `root()/data/local/tmp/x`.
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// Maps an Android path to its file in the sandbox (`..` never leaves the sandbox).
    pub fn path(&self, android_path: &str) -> PathBuf {
        crate::sandbox::map_path(&self.shared.root, android_path)
    }

    /// The configuration the device was started with.
    pub fn config(&self) -> &DeviceConfig {
        &self.shared.config
    }

    /// Sets a fault (see [`Fault`]). `NeverAnswer`, `Unauthorized` and `CloseImmediately` also drop the
    /// current links, so the server's reconnect meets the new behaviour; the others apply to live links.
    pub fn set_fault(&self, fault: Fault) {
        self.shared.set_fault(fault);
    }

    /// The fault in force (a one-shot `DropAfterBytes` reads `None` once it fired).
    pub fn fault(&self) -> Fault {
        self.shared.fault()
    }

    /// Drops every current link at once (TCP close without CLSE), as a pulled cable would.
    pub fn drop_links(&self) {
        self.shared.drop_links();
    }

    /// How many transport links (TCP connections from adb servers) are open now.
    pub fn link_count(&self) -> usize {
        self.shared.link_count.load(Ordering::SeqCst)
    }

    /// Sets a system property at run time (what `getprop` prints from now on).
    pub fn set_prop(&self, key: &str, value: &str) {
        self.shared.set_prop(key, value);
    }

    /// Reads a system property.
    pub fn prop(&self, key: &str) -> Option<String> {
        self.shared.prop(key)
    }

    /// Changes what the next `reboot` does.
    pub fn set_reboot_behavior(&self, reboot: RebootBehavior) {
        *lock(&self.shared.reboot) = reboot;
    }

    /// Reboots the device now, as the `reboot:` service would.
    pub fn reboot(&self) {
        self.shared.reboot();
    }

    /// Brings a device that was told [`RebootBehavior::NeverReturns`] back at once (booted).
    pub fn power_on(&self) {
        *lock(&self.shared.available_at) = Some(Instant::now());
        self.shared.set_prop("sys.boot_completed", "1");
    }

    /// Scripts what the next installs do (until changed); [`InstallOutcome::Install`] restores the default.
    pub fn set_install_outcome(&self, outcome: InstallOutcome) {
        lock(&self.shared.pm).outcome = outcome;
    }

    /// The packages installed now (system packages included), sorted.
    pub fn installed_packages(&self) -> Vec<String> {
        lock(&self.shared.pm).packages.keys().cloned().collect()
    }

    /// Whether `package` is installed.
    pub fn is_installed(&self, package: &str) -> bool {
        lock(&self.shared.pm).packages.contains_key(package)
    }

    /// Installs `package` directly (version code 1), e.g. before an uninstall test.
    pub fn preinstall(&self, package: &str) {
        lock(&self.shared.pm).packages.insert(package.to_string(), crate::pm::Installed { version_code: 1 });
    }

    /// Sets the test run `am instrument` replays.
    pub fn set_instrumentation(&self, script: InstrumentationScript) {
        lock(&self.shared.scripts).instrumentation = script;
    }

    /// How many screenshots `screencap` has taken.
    pub fn screenshots_taken(&self) -> u32 {
        lock(&self.shared.scripts).screenshots
    }

    /// Adds a line to the device log (`logcat -d` prints it).
    pub fn log(&self, tag: &str, message: &str) {
        crate::tools::log_line(&self.shared, tag, message);
    }

    /// Stops the device: closes the listener and every link. The sandbox stays until the handle is dropped.
    pub fn stop(&self) {
        self.shared.shutdown.cancel();
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shared.shutdown.cancelled() => return,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let token = shared.link_token();
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    shared.link_count.fetch_add(1, Ordering::SeqCst);
                    tracing::debug!(addr = %shared.addr, %peer, "link accepted");
                    if let Err(err) = serve_link(&shared, tcp, token).await {
                        tracing::debug!(addr = %shared.addr, %err, "link ended with an error");
                    }
                    shared.link_count.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Err(err) => {
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The host side of one stream as seen by a stream's writer: WRTE gated by the host's OKAY.
#[derive(Clone)]
pub(crate) struct StreamWriter {
    local: u32,
    remote: u32,
    out: mpsc::UnboundedSender<Message>,
    credit: Arc<Semaphore>,
    max: usize,
}

impl StreamWriter {
    /// Sends `data` as WRTE messages of at most the link's payload size, each after the host's OKAY.
    pub(crate) async fn write(&self, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(self.max) {
            let permit = self
                .credit
                .acquire()
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "stream closed by the host"))?;
            permit.forget();
            self.out
                .send(Message::new(A_WRTE, self.local, self.remote, chunk.to_vec()))
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "link closed"))?;
        }
        Ok(())
    }

    /// The largest payload of one WRTE on this link.
    pub(crate) fn max_payload(&self) -> usize {
        self.max
    }
}

/// The inbound side of one stream: host WRTE data, acknowledged as it is taken.
pub(crate) struct StreamReader {
    local: u32,
    remote: u32,
    inbound: mpsc::UnboundedReceiver<Vec<u8>>,
    out: mpsc::UnboundedSender<Message>,
}

impl StreamReader {
    /// The next chunk the host wrote; `None` once the host closed the stream (or the link dropped).
    pub(crate) async fn recv(&mut self) -> Option<Vec<u8>> {
        let data = self.inbound.recv().await?;
        let _ = self.out.send(Message::new(A_OKAY, self.local, self.remote, Vec::new()));
        Some(data)
    }
}

/// Both halves of a stream, handed to a service.
pub(crate) struct StreamIo {
    pub(crate) reader: StreamReader,
    pub(crate) writer: StreamWriter,
}

struct Slot {
    remote: u32,
    inbound: mpsc::UnboundedSender<Vec<u8>>,
    credit: Arc<Semaphore>,
}

type StreamTable = Arc<Mutex<HashMap<u32, Slot>>>;

async fn serve_link(shared: &Arc<Shared>, tcp: TcpStream, token: CancellationToken) -> io::Result<()> {
    if shared.fault() == Fault::CloseImmediately {
        return Ok(());
    }
    tcp.set_nodelay(true)?;
    let (mut rd, wr) = tcp.into_split();
    let (tx, rx) = mpsc::unbounded_channel::<Message>();
    let mut writer = tokio::spawn(write_loop(Arc::clone(shared), wr, rx, token.clone()));
    let result = tokio::select! {
        r = link_loop(shared, &mut rd, tx, &token) => r,
        _ = token.cancelled() => Ok(()),
        _ = &mut writer => Ok(()),
    };
    token.cancel();
    writer.abort();
    result
}

async fn write_loop(
    shared: Arc<Shared>,
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Message>,
    token: CancellationToken,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut slow_bytes = 0usize;
        while let Some(msg) = next.take() {
            let fault = shared.fault();
            if fault == Fault::Hang && msg.command != A_CNXN && msg.command != A_AUTH {
                // a hung device sends nothing more
            } else {
                if msg.command == A_WRTE {
                    if !shared.pass_payload(msg.payload.len()) {
                        let _ = wr.write_all(&buf).await;
                        token.cancel();
                        return;
                    }
                    if matches!(fault, Fault::SlowLink(_)) {
                        slow_bytes += msg.payload.len();
                    }
                }
                buf.extend_from_slice(&msg.encode());
            }
            if buf.len() < 256 * 1024 && slow_bytes == 0 {
                next = rx.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            if wr.write_all(&buf).await.is_err() {
                token.cancel();
                return;
            }
            buf.clear();
        }
        if let Fault::SlowLink(bps) = shared.fault()
            && slow_bytes > 0
        {
            tokio::time::sleep(Duration::from_secs_f64(slow_bytes as f64 / bps.max(1) as f64)).await;
        }
    }
}

async fn link_loop(
    shared: &Arc<Shared>,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    tx: mpsc::UnboundedSender<Message>,
    token: &CancellationToken,
) -> io::Result<()> {
    // Handshake: wait for the host's CNXN.
    let (version, max) = loop {
        let Some(msg) = Message::read(rd).await? else { return Ok(()) };
        match msg.command {
            A_CNXN => match shared.fault() {
                Fault::NeverAnswer => {
                    // Swallow everything until the host gives up.
                    while Message::read(rd).await?.is_some() {}
                    return Ok(());
                }
                Fault::Unauthorized => {
                    send_token(&tx);
                }
                _ => {
                    tokio::select! {
                        _ = shared.wait_available() => {}
                        _ = token.cancelled() => return Ok(()),
                    }
                    let version = msg.arg0.min(shared.config.version);
                    let max = msg.arg1.min(shared.config.max_data).max(256) as usize;
                    let banner = shared.config.banner(&shared.props());
                    let _ = tx.send(Message::new(A_CNXN, shared.config.version, shared.config.max_data, banner.into()));
                    tracing::debug!(addr = %shared.addr, version, max, "link online");
                    break (version, max);
                }
            },
            A_AUTH if shared.fault() == Fault::Unauthorized => {
                // A signature (2) that we never accept: ask again, as a real device does; a public key (3)
                // leaves the user prompt pending forever.
                if msg.arg0 == 2 {
                    send_token(&tx);
                }
            }
            other => tracing::debug!(command = command_name(other), "ignored before the handshake"),
        }
    };
    let _ = version;

    let table: StreamTable = Arc::new(Mutex::new(HashMap::new()));
    let next_id = AtomicU32::new(1);
    let mut tasks = JoinSet::new();
    loop {
        // Reap finished stream tasks without blocking (a read must never be cancelled midway).
        while tasks.try_join_next().is_some() {}
        let Some(msg) = Message::read(rd).await? else { return Ok(()) };
        let fault = shared.fault();
        if fault == Fault::Hang {
            continue;
        }
        match msg.command {
            A_OPEN => {
                let remote = msg.arg0;
                let name = String::from_utf8_lossy(msg.payload.strip_suffix(b"\0").unwrap_or(&msg.payload))
                    .into_owned();
                let Some(service) = Service::parse(&name) else {
                    tracing::debug!(addr = %shared.addr, service = %name, "refused");
                    let _ = tx.send(Message::new(A_CLSE, 0, remote, Vec::new()));
                    continue;
                };
                tracing::debug!(addr = %shared.addr, service = %name, remote, "open");
                let local = next_id.fetch_add(1, Ordering::SeqCst);
                let (in_tx, in_rx) = mpsc::unbounded_channel();
                let credit = Arc::new(Semaphore::new(1));
                lock(&table).insert(local, Slot { remote, inbound: in_tx, credit: Arc::clone(&credit) });
                let _ = tx.send(Message::new(A_OKAY, local, remote, Vec::new()));
                let io = StreamIo {
                    reader: StreamReader { local, remote, inbound: in_rx, out: tx.clone() },
                    writer: StreamWriter { local, remote, out: tx.clone(), credit, max },
                };
                let shared = Arc::clone(shared);
                let table = Arc::clone(&table);
                let out = tx.clone();
                tasks.spawn(async move {
                    services::run(&shared, service, io).await;
                    // Close our side unless the host closed first.
                    if lock(&table).remove(&local).is_some() {
                        let _ = out.send(Message::new(A_CLSE, local, remote, Vec::new()));
                    }
                });
            }
            A_WRTE => {
                if let Fault::SlowLink(bps) = fault {
                    tokio::time::sleep(Duration::from_secs_f64(msg.payload.len() as f64 / bps.max(1) as f64)).await;
                }
                if !shared.pass_payload(msg.payload.len()) {
                    token.cancel();
                    return Ok(());
                }
                let table = lock(&table);
                match table.get(&msg.arg1) {
                    Some(slot) if slot.remote == msg.arg0 => {
                        let _ = slot.inbound.send(msg.payload);
                    }
                    _ => {
                        let _ = tx.send(Message::new(A_CLSE, 0, msg.arg0, Vec::new()));
                    }
                }
            }
            A_OKAY => {
                if let Some(slot) = lock(&table).get(&msg.arg1)
                    && slot.remote == msg.arg0
                    && slot.credit.available_permits() == 0
                {
                    slot.credit.add_permits(1);
                }
            }
            A_CLSE => {
                let mut table = lock(&table);
                if table.get(&msg.arg1).is_some_and(|slot| slot.remote == msg.arg0)
                    && let Some(slot) = table.remove(&msg.arg1)
                {
                    slot.credit.close();
                }
            }
            A_CNXN => {
                // The host restarted the handshake on this link: answer again.
                let banner = shared.config.banner(&shared.props());
                let _ = tx.send(Message::new(A_CNXN, shared.config.version, shared.config.max_data, banner.into()));
            }
            other => tracing::debug!(command = command_name(other), "ignored"),
        }
    }
}

fn send_token(tx: &mpsc::UnboundedSender<Message>) {
    let token: Vec<u8> = (0..20).map(|_| fastrand::u8(..)).collect();
    let _ = tx.send(Message::new(A_AUTH, AUTH_TOKEN, 0, token));
}
