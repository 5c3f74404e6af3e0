//! [`AdbDevice`]: one Android device behind an adb server.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use devbatch_core::{
    Capability, Command, CommandOutput, Device, DeviceError, DeviceState, Labels, OutputCollector,
    RebootMode, TransferStats,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{AdbServer, Conn, Target, short};
use crate::error::AdbError;
use crate::protocol::{
    ConnectReply, LegacyDecoder, ShellPacket, ShellV2Decoder, encode_shell_packet,
    parse_connect_reply, shell_id,
};
use crate::sync::{SyncSession, TempGuard, remote_join, temp_beside};

const CAPABILITIES: &[Capability] = &[
    Capability::Exec,
    Capability::Push,
    Capability::Pull,
    Capability::Reboot,
];

/// An Android device reached through an adb server (`backend = "adb"`).
///
/// Every operation opens its own connection to the server (the server multiplexes devices);
/// dropping an operation's future closes that connection, which makes the server close the
/// stream on the device. The device's feature list (`shell_v2`, `stat_v2`, `cmd`, `abb_exec`,
/// ...) is fetched once and cached until a reboot.
#[derive(Debug)]
pub struct AdbDevice {
    id: String,
    serial: String,
    target: Target,
    server: AdbServer,
    labels: Labels,
    state: DeviceState,
    transport_id: Option<u64>,
    connect_addr: Option<String>,
    features: Mutex<Option<Arc<Vec<String>>>>,
}

impl AdbDevice {
    #[expect(clippy::too_many_arguments, reason = "one internal constructor")]
    pub(crate) fn new(
        id: String,
        serial: String,
        target: Target,
        server: AdbServer,
        labels: Labels,
        state: DeviceState,
        transport_id: Option<u64>,
        connect_addr: Option<String>,
    ) -> Self {
        AdbDevice {
            id,
            serial,
            target,
            server,
            labels,
            state,
            transport_id,
            connect_addr,
            features: Mutex::new(None),
        }
    }

    /// A copy addressing the same device, for cleanup work that must outlive a cancelled
    /// operation.
    pub(crate) fn detached(&self) -> AdbDevice {
        AdbDevice {
            id: self.id.clone(),
            serial: self.serial.clone(),
            target: self.target.clone(),
            server: self.server.clone(),
            labels: self.labels.clone(),
            state: self.state.clone(),
            transport_id: self.transport_id,
            connect_addr: self.connect_addr.clone(),
            features: Mutex::new(
                self.features
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            ),
        }
    }

    /// The serial, exactly as the adb server lists it.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// The address of the adb server this device is reached through.
    pub fn server_addr(&self) -> &str {
        self.server.addr()
    }

    /// The server's transport id when the device was listed.
    pub fn transport_id(&self) -> Option<u64> {
        self.transport_id
    }

    /// The device's adb features (`shell_v2`, `stat_v2`, `cmd`, `abb_exec`, ...), fetched once.
    pub async fn features(&self) -> Result<Arc<Vec<String>>, DeviceError> {
        Ok(self.features_inner().await?)
    }

    pub(crate) async fn features_inner(&self) -> Result<Arc<Vec<String>>, AdbError> {
        if let Some(f) = self
            .features
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(f);
        }
        let text = self
            .with_reconnect(|| self.server.device_query(&self.target, "features"))
            .await?;
        let list: Arc<Vec<String>> = Arc::new(
            text.trim()
                .split(',')
                .filter(|f| !f.is_empty())
                .map(str::to_string)
                .collect(),
        );
        *self.features.lock().unwrap_or_else(|p| p.into_inner()) = Some(list.clone());
        Ok(list)
    }

    pub(crate) async fn has_feature(&self, name: &str) -> Result<bool, AdbError> {
        Ok(self.features_inner().await?.iter().any(|f| f == name))
    }

    fn forget_features(&self) {
        *self.features.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Runs `f`; if the server no longer knows the device and it is a network device named in
    /// the pool, `host:connect`s it again and retries once.
    async fn with_reconnect<T, F, Fut>(&self, f: F) -> Result<T, AdbError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, AdbError>>,
    {
        match f().await {
            Err(AdbError::NotFound { .. }) if self.connect_addr.is_some() => {
                self.connect().await?;
                f().await
            }
            other => other,
        }
    }

    /// `host:connect` to this device's network address.
    pub(crate) async fn connect(&self) -> Result<(), AdbError> {
        let Some(addr) = &self.connect_addr else {
            return Ok(());
        };
        let reply = self.server.query(&format!("host:connect:{addr}")).await?;
        match parse_connect_reply(&reply) {
            ConnectReply::Connected => {
                // The server may answer before the handshake is done (the device is listed
                // `offline` meanwhile): give it a few seconds to come online.
                for _ in 0..50 {
                    match self.listing().await? {
                        Some(d) if d.state == "offline" || d.state == "connecting" => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        _ => break,
                    }
                }
                Ok(())
            }
            ConnectReply::Unauthorized(_) => Err(AdbError::NotReady {
                state: "unauthorized".into(),
                hint: crate::error::state_hint("unauthorized"),
            }),
            ConnectReply::Failed(text) => Err(AdbError::NotFound {
                serial: format!("{} ({text})", self.serial),
                server: self.server.addr().to_string(),
            }),
        }
    }

    /// Opens a device service.
    pub(crate) async fn open_service(&self, service: &str) -> Result<Conn, AdbError> {
        self.with_reconnect(|| self.server.service(&self.target, service))
            .await
    }

    /// Runs a command; the crate-internal error type.
    pub(crate) async fn run_inner(&self, command: &Command) -> Result<CommandOutput, AdbError> {
        let line = command.to_shell_line();
        if self.has_feature("shell_v2").await? {
            self.run_v2(&line, command).await
        } else {
            self.run_legacy(&line, command).await
        }
    }

    async fn run_v2(&self, line: &str, command: &Command) -> Result<CommandOutput, AdbError> {
        let mut conn = self
            .open_service(&format!("shell,v2,raw:{line}"))
            .await?
            .reset_unless_finished();
        let out = self.shell_v2_stream(&mut conn, command).await?;
        conn.finish();
        Ok(out)
    }

    /// Feeds stdin to a `shell,v2` stream and collects its output up to the exit status.
    async fn shell_v2_stream(
        &self,
        conn: &mut Conn,
        command: &Command,
    ) -> Result<CommandOutput, AdbError> {
        let (mut rd, mut wr) = conn.stream.split();
        let stdin = command.stdin.clone().unwrap_or_default();
        let writer = async move {
            for chunk in stdin.chunks(32 * 1024) {
                wr.write_all(&encode_shell_packet(shell_id::STDIN, chunk))
                    .await?;
            }
            wr.write_all(&encode_shell_packet(shell_id::CLOSE_STDIN, &[]))
                .await?;
            // Keep the write half open: shutting it down would make the server close the stream.
            Ok::<_, std::io::Error>(wr)
        };
        tokio::pin!(writer);
        let mut writing = true;
        let mut _writer_half = None;
        let mut collector = OutputCollector::new(command.max_output);
        let limit = |_| AdbError::OutputLimit(command.max_output);
        let mut decoder = ShellV2Decoder::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                w = &mut writer, if writing => {
                    writing = false;
                    // A write error means the stream is going away; the read side says how.
                    _writer_half = w.ok();
                }
                n = rd.read(&mut buf) => {
                    let n = n.map_err(|e| AdbError::Disconnected(format!(
                        "the shell stream of {} broke: {e}", self.serial)))?;
                    if n == 0 {
                        return Err(AdbError::Disconnected(format!(
                            "the shell stream of {} ended without an exit status (the device disconnected or the command was killed)",
                            self.serial
                        )));
                    }
                    decoder.feed(&buf[..n]);
                    while let Some(packet) = decoder.next_packet()? {
                        match packet {
                            ShellPacket::Stdout(d) => collector.stdout(&d).map_err(limit)?,
                            ShellPacket::Stderr(d) => collector.stderr(&d).map_err(limit)?,
                            ShellPacket::Exit(code) => return Ok(collector.finish(i32::from(code))),
                        }
                    }
                }
            }
        }
    }

    async fn run_legacy(&self, line: &str, command: &Command) -> Result<CommandOutput, AdbError> {
        if command.stdin.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(AdbError::Unsupported(format!(
                "device {} has no shell protocol v2 (Android before 7), so a command's stdin cannot be ended; pass the input as a file (push it first) instead",
                self.serial
            )));
        }
        let decoder = LegacyDecoder::new();
        let mut conn = self
            .open_service(&format!("shell:{}", decoder.wrap(line)))
            .await?
            .reset_unless_finished();
        let out = self.legacy_stream(&mut conn, decoder, command).await?;
        conn.finish();
        Ok(out)
    }

    /// Collects a legacy `shell:` stream's output up to its end and the wrapped exit status.
    async fn legacy_stream(
        &self,
        conn: &mut Conn,
        mut decoder: LegacyDecoder,
        command: &Command,
    ) -> Result<CommandOutput, AdbError> {
        let mut collector = OutputCollector::new(command.max_output);
        let limit = |_| AdbError::OutputLimit(command.max_output);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = conn.stream.read(&mut buf).await.map_err(|e| {
                AdbError::Disconnected(format!("the shell stream of {} broke: {e}", self.serial))
            })?;
            if n == 0 {
                break;
            }
            let out = decoder.feed(&buf[..n]);
            collector.stdout(&out).map_err(limit)?;
        }
        match decoder.finish() {
            Some((rest, code)) => {
                collector.stdout(&rest).map_err(limit)?;
                Ok(collector.finish(code))
            }
            None => Err(AdbError::Disconnected(format!(
                "the shell stream of {} ended without an exit status (the device disconnected or the command was killed)",
                self.serial
            ))),
        }
    }

    /// Opens `service` (an `exec:` or `abb_exec:` service), writes `input`, and reads the
    /// device's output until it closes the stream; at most `max_output` bytes.
    pub(crate) async fn exec_raw(
        &self,
        service: &str,
        input: Option<&Path>,
        max_output: usize,
    ) -> Result<Vec<u8>, AdbError> {
        let mut conn = self.open_service(service).await?.reset_unless_finished();
        let out = self
            .exec_stream(&mut conn, service, input, max_output)
            .await?;
        conn.finish();
        Ok(out)
    }

    /// Streams `input` into an open `exec:`-like service and reads its output to the end.
    async fn exec_stream(
        &self,
        conn: &mut Conn,
        service: &str,
        input: Option<&Path>,
        max_output: usize,
    ) -> Result<Vec<u8>, AdbError> {
        let (mut rd, mut wr) = conn.stream.split();
        let writer = async move {
            if let Some(path) = input {
                let mut file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| AdbError::io(format!("open {}", path.display()), e))?;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = file
                        .read(&mut buf)
                        .await
                        .map_err(|e| AdbError::io(format!("read {}", path.display()), e))?;
                    if n == 0 {
                        break;
                    }
                    wr.write_all(&buf[..n]).await.map_err(|e| {
                        AdbError::Disconnected(format!(
                            "the device link was lost while streaming {}: {e}",
                            path.display()
                        ))
                    })?;
                }
            }
            Ok::<_, AdbError>(wr)
        };
        tokio::pin!(writer);
        let mut writing = true;
        let mut _writer_half = None;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                w = &mut writer, if writing => {
                    writing = false;
                    match w {
                        Ok(half) => _writer_half = Some(half),
                        Err(e @ AdbError::Io { .. }) => return Err(e),
                        Err(_) => {}
                    }
                }
                n = rd.read(&mut buf) => {
                    let n = n.map_err(|e| AdbError::Disconnected(format!(
                        "the '{}' stream of {} broke: {e}", short(service), self.serial)))?;
                    if n == 0 {
                        // The writer may have finished without being polled yet: give it a
                        // moment; a device that closed early makes it fail or stall.
                        if writing {
                            match tokio::time::timeout(Duration::from_secs(5), &mut writer).await {
                                Ok(Ok(_)) => {}
                                Ok(Err(e @ AdbError::Io { .. })) => return Err(e),
                                _ => {
                                    return Err(AdbError::Disconnected(format!(
                                        "the device closed '{}' before it had all its input",
                                        short(service)
                                    )));
                                }
                            }
                        }
                        return Ok(out);
                    }
                    if out.len() + n > max_output {
                        return Err(AdbError::OutputLimit(max_output));
                    }
                    out.extend_from_slice(&buf[..n]);
                }
            }
        }
    }

    async fn sync(&self) -> Result<SyncSession, AdbError> {
        let features = self.features_inner().await?;
        let has = |f: &str| features.iter().any(|x| x == f);
        let (stat_v2, ls_v2) = (has("stat_v2"), has("ls_v2"));
        let conn = self.open_service("sync:").await?;
        Ok(SyncSession::new(conn, stat_v2, ls_v2))
    }

    pub(crate) async fn push_inner(
        &self,
        local: &Path,
        remote: &str,
    ) -> Result<TransferStats, AdbError> {
        let meta = tokio::fs::metadata(local)
            .await
            .map_err(|e| AdbError::io(format!("read {}", local.display()), e))?;
        if !meta.is_file() && !meta.is_dir() {
            // A FIFO or a device would be read until the timeout, or forever.
            return Err(AdbError::InvalidInput(format!(
                "{} is neither a regular file nor a directory",
                local.display()
            )));
        }
        let mut files = Vec::new();
        let mut stats = TransferStats::default();
        if meta.is_dir() {
            stats.skipped = collect_files(local, remote, &mut files).await?;
        } else {
            files.push((local.to_path_buf(), remote.to_string()));
        }
        let mut session = self.sync().await?;
        for (path, dest) in files {
            let (mode, mtime) = local_mode(&path).await?;
            stats.bytes += session.send_file(&path, &dest, mode, mtime).await?;
            stats.files += 1;
        }
        session.quit().await;
        Ok(stats)
    }

    pub(crate) async fn pull_inner(
        &self,
        remote: &str,
        local: &Path,
    ) -> Result<TransferStats, AdbError> {
        let mut session = self.sync().await?;
        let Some(mut st) = session.stat(remote).await? else {
            return Err(AdbError::Remote {
                context: format!("remote path '{remote}' on {}", self.serial),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such file or directory",
                ),
            });
        };
        if st.is_symlink() && !remote.ends_with('/') {
            // STAT (v1) does not follow a final symlink (`/sdcard` on old devices); a trailing
            // slash makes the device resolve it.
            // Some devices answer for the link itself even then; a link whose listing has
            // entries is a directory too.
            let slashed = format!("{remote}/");
            match session.stat(&slashed).await? {
                Some(target) if target.is_dir() => st = target,
                _ => {
                    if !session.list(&slashed).await?.is_empty() {
                        st.mode = (st.mode & !0o170000) | 0o040000;
                    }
                }
            }
        }
        if !st.is_dir() && !st.is_file() && !st.is_symlink() {
            // A FIFO or a device would be read until the timeout, or forever.
            return Err(AdbError::InvalidInput(format!(
                "remote '{remote}' on {} is neither a regular file nor a directory",
                self.serial
            )));
        }
        let guard = TempGuard::new(temp_beside(local));
        let mut stats = TransferStats::default();
        if st.is_dir() {
            tokio::fs::create_dir(guard.path())
                .await
                .map_err(|e| AdbError::io(format!("create {}", guard.path().display()), e))?;
            let mut stack = vec![(remote.to_string(), guard.path().to_path_buf())];
            while let Some((rdir, ldir)) = stack.pop() {
                for (name, entry) in session.list(&rdir).await? {
                    if name.contains('/') || name == "." || name == ".." {
                        return Err(AdbError::Protocol(format!(
                            "the device listed an unsafe name {name:?} in '{rdir}'"
                        )));
                    }
                    let rpath = remote_join(&rdir, &name);
                    let lpath = ldir.join(&name);
                    if entry.is_dir() {
                        tokio::fs::create_dir(&lpath)
                            .await
                            .map_err(|e| AdbError::io(format!("create {}", lpath.display()), e))?;
                        stack.push((rpath, lpath));
                    } else if entry.is_file() || entry.is_symlink() {
                        stats.bytes += session.recv_file(&rpath, &lpath).await?;
                        stats.files += 1;
                    } else {
                        tracing::warn!(serial = %self.serial, path = %rpath, "skipped: neither a regular file, a symbolic link nor a folder");
                        stats.skipped += 1;
                    }
                }
            }
        } else {
            stats.bytes = session.recv_file(remote, guard.path()).await?;
            stats.files = 1;
        }
        session.quit().await;
        guard.commit(local).await?;
        Ok(stats)
    }

    /// The device's entry in the server's list, if listed.
    async fn listing(&self) -> Result<Option<crate::protocol::ListedDevice>, AdbError> {
        Ok(self
            .server
            .devices()
            .await?
            .into_iter()
            .find(|d| d.serial == self.serial))
    }

    pub(crate) async fn reboot_inner(&self, mode: RebootMode, wait: bool) -> Result<(), AdbError> {
        if wait && matches!(self.target, Target::TransportId(_)) {
            return Err(AdbError::Unsupported(format!(
                "{} is listed twice by the adb server, so it can only be told apart by a transport id that changes on reboot; reboot it without wait",
                self.serial
            )));
        }
        let before = self.listing().await?.and_then(|d| d.transport_id);
        let service = match mode {
            RebootMode::System => "reboot:",
            RebootMode::Bootloader => "reboot:bootloader",
            RebootMode::Recovery => "reboot:recovery",
        };
        let mut conn = self.open_service(service).await?;
        // The device answers and drops its link; read until then (bounded: a device may also
        // keep the stream open while it shuts down).
        let mut sink = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(2), conn.stream.read_to_end(&mut sink)).await;
        drop(conn);
        self.forget_features();
        if !wait {
            return Ok(());
        }
        let wanted = match mode {
            RebootMode::System => "device",
            RebootMode::Bootloader => "bootloader",
            RebootMode::Recovery => "recovery",
        };
        let mut gone = false;
        let mut last_connect = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if gone
                && self.connect_addr.is_some()
                && last_connect.elapsed() >= Duration::from_secs(1)
            {
                // The server retries a dropped TCP device only every ~10 s; ask it now.
                last_connect = tokio::time::Instant::now();
                let _ = self.connect().await;
            }
            match self.listing().await? {
                None => gone = true,
                Some(d) if d.state != wanted => gone = true,
                Some(d) => {
                    if before.is_some() && d.transport_id != before {
                        break;
                    }
                    if gone {
                        break;
                    }
                }
            }
        }
        if mode == RebootMode::System {
            loop {
                let probe = Command::shell("getprop sys.boot_completed").with_max_output(4096);
                if let Ok(out) = self.run_inner(&probe).await
                    && String::from_utf8_lossy(&out.stdout).trim() == "1"
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Ok(())
    }
}

/// Every regular file under `dir` (symbolic links followed), with its remote path under
/// `remote`; returns how many entries were skipped as neither files nor folders.
async fn collect_files(
    dir: &Path,
    remote: &str,
    out: &mut Vec<(std::path::PathBuf, String)>,
) -> Result<u64, AdbError> {
    let mut skipped = 0;
    let mut stack = vec![(dir.to_path_buf(), remote.to_string())];
    while let Some((ldir, rdir)) = stack.pop() {
        let mut entries = tokio::fs::read_dir(&ldir)
            .await
            .map_err(|e| AdbError::io(format!("list {}", ldir.display()), e))?;
        let mut found = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| AdbError::io(format!("list {}", ldir.display()), e))?
        {
            found.push(entry.path());
        }
        found.sort();
        for path in found {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let meta = tokio::fs::metadata(&path)
                .await
                .map_err(|e| AdbError::io(format!("stat {}", path.display()), e))?;
            let rpath = remote_join(&rdir, &name);
            if meta.is_dir() {
                stack.push((path, rpath));
            } else if meta.is_file() {
                out.push((path, rpath));
            } else {
                tracing::warn!(path = %path.display(), "skipped: neither a regular file nor a folder");
                skipped += 1;
            }
        }
    }
    Ok(skipped)
}

/// The mode (with the regular-file type bits) and mtime to send for a local file.
async fn local_mode(path: &Path) -> Result<(u32, u32), AdbError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| AdbError::io(format!("stat {}", path.display()), e))?;
    let mode = 0o100000 | (meta.permissions().mode() & 0o7777);
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as u32);
    Ok((mode, mtime))
}

#[async_trait]
impl Device for AdbDevice {
    fn id(&self) -> &str {
        &self.id
    }

    fn backend(&self) -> &str {
        "adb"
    }

    fn labels(&self) -> &Labels {
        &self.labels
    }

    fn capabilities(&self) -> &[Capability] {
        CAPABILITIES
    }

    fn state(&self) -> DeviceState {
        self.state.clone()
    }

    async fn run(&self, command: &Command) -> Result<CommandOutput, DeviceError> {
        Ok(self.run_inner(command).await?)
    }

    async fn push(&self, local: &Path, remote: &str) -> Result<TransferStats, DeviceError> {
        Ok(self.push_inner(local, remote).await?)
    }

    async fn pull(&self, remote: &str, local: &Path) -> Result<TransferStats, DeviceError> {
        Ok(self.pull_inner(remote, local).await?)
    }

    async fn reboot(&self, mode: RebootMode, wait: bool) -> Result<(), DeviceError> {
        Ok(self.reboot_inner(mode, wait).await?)
    }
}
