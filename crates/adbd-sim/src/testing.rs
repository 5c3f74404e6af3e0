//! Test harness: a private, real adb server to `connect` simulated devices to.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use adbd_sim::{DeviceConfig, SimDevice, testing::AdbServer};
//!
//! let server = AdbServer::start().await?;          // /usr/bin/adb on a free port, keys in a temp HOME
//! let phone = SimDevice::start(DeviceConfig::modern("sim-1")).await?;
//! let serial = server.connect(&phone).await?;      // "127.0.0.1:PORT", listed as `device`
//! let out = server.adb().args(["-s", &serial, "shell", "echo", "hi"]).output()?;
//! assert_eq!(out.stdout, b"hi\n");
//! # Ok(()) }
//! ```

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::SimHandle;

/// Where the harness looks for adb unless `ADBD_SIM_ADB` names another binary.
pub const DEFAULT_ADB: &str = "/usr/bin/adb";

/// What can go wrong with the test server.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The adb binary is not installed.
    #[error("adb server binary {0} not found: install adb (apt-get install adb) or set ADBD_SIM_ADB")]
    AdbMissing(PathBuf),
    /// The server did not come up.
    #[error("adb server did not start on port {port}: {reason}; server log:\n{log}")]
    Start {
        /// The port tried last.
        port: u16,
        /// Why it was given up.
        reason: String,
        /// The end of the server's log.
        log: String,
    },
    /// The server refused a request (`FAIL` reply).
    #[error("adb server refused {request:?}: {message}")]
    Refused {
        /// The host request.
        request: String,
        /// The FAIL message.
        message: String,
    },
    /// `host:connect` did not connect.
    #[error("adb server could not connect {addr}: {reply}")]
    ConnectFailed {
        /// The device address.
        addr: String,
        /// The server's reply text.
        reply: String,
    },
    /// A wait ran out.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    /// Socket trouble talking to the server.
    #[error("talking to the adb server: {0}")]
    Io(#[from] io::Error),
}

/// A real adb server (`adb -P PORT nodaemon server`) on a free loopback port, with `HOME` in a temporary
/// directory so it never touches the user's keys or server. Killed when dropped.
#[derive(Debug)]
pub struct AdbServer {
    port: u16,
    adb: PathBuf,
    child: Child,
    home: tempfile::TempDir,
}

fn free_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl AdbServer {
    /// Starts the server and waits until it answers `host:version`.
    pub async fn start() -> Result<AdbServer, HarnessError> {
        let adb = std::env::var_os("ADBD_SIM_ADB").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_ADB));
        if !adb.is_file() {
            return Err(HarnessError::AdbMissing(adb));
        }
        let home = tempfile::Builder::new().prefix("adbd-sim-adb-").tempdir()?;
        let log_path = home.path().join("server.log");
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            let log = std::fs::File::create(&log_path)?;
            let mut child = Command::new(&adb)
                .args(["-P", &port.to_string(), "nodaemon", "server"])
                .env("HOME", home.path())
                .env("ANDROID_SDK_HOME", home.path())
                .env("ANDROID_USER_HOME", home.path().join(".android"))
                .env("ADB_MDNS", "0")
                .env_remove("ADB_VENDOR_KEYS")
                .env_remove("ANDROID_ADB_SERVER_PORT")
                .env_remove("ANDROID_SERIAL")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = child.try_wait()? {
                    last = Some((port, format!("server exited with {status}")));
                    break;
                }
                if query(port, "host:version").await.is_ok() {
                    return Ok(AdbServer { port, adb, child, home });
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = Some((port, "no answer to host:version within 30 s".to_string()));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let (port, reason) = last.unwrap_or((0, "never tried".into()));
        Err(HarnessError::Start { port, reason, log: tail(&log_path) })
    }

    /// The server's port (what `adb -P` and `ANDROID_ADB_SERVER_PORT` take).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary `HOME` of the server (its keys live in `.android/`).
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// An `adb` CLI command aimed at this server (`-P PORT`, same `HOME`).
    pub fn adb(&self) -> Command {
        let mut cmd = Command::new(&self.adb);
        cmd.arg("-P")
            .arg(self.port.to_string())
            .env("HOME", self.home.path())
            .env("ANDROID_SDK_HOME", self.home.path())
            .env("ADB_MDNS", "0")
            .env_remove("ADB_VENDOR_KEYS")
            .env_remove("ANDROID_SERIAL")
            .env_remove("TERM")
            .stdin(Stdio::null());
        cmd
    }

    /// The same as [`AdbServer::adb`] for tokio (killed when dropped).
    pub fn adb_async(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::from(self.adb());
        cmd.kill_on_drop(true);
        cmd
    }

    /// Sends one host request and returns the length-prefixed reply body after `OKAY`.
    pub async fn query(&self, request: &str) -> Result<String, HarnessError> {
        query(self.port, request).await
    }

    /// `host:connect:ADDR`: the server's reply text, whatever it says (it answers `OKAY` even on failure).
    pub async fn connect_addr(&self, addr: &str) -> Result<String, HarnessError> {
        self.query(&format!("host:connect:{addr}")).await
    }

    /// Connects a simulated device and waits until the server lists it as `device`; returns its serial.
    pub async fn connect(&self, device: &SimHandle) -> Result<String, HarnessError> {
        let serial = device.serial();
        let reply = self.connect_addr(&serial).await?;
        if !reply.starts_with("connected to") && !reply.starts_with("already connected to") {
            return Err(HarnessError::ConnectFailed { addr: serial, reply });
        }
        self.wait_for_state(&serial, "device", Duration::from_secs(30)).await?;
        Ok(serial)
    }

    /// `host:disconnect:SERIAL`.
    pub async fn disconnect(&self, serial: &str) -> Result<String, HarnessError> {
        self.query(&format!("host:disconnect:{serial}")).await
    }

    /// `host:devices` as (serial, state) pairs.
    pub async fn devices(&self) -> Result<Vec<(String, String)>, HarnessError> {
        let body = self.query("host:devices").await?;
        Ok(body
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .map(|(serial, state)| (serial.to_string(), state.to_string()))
            .collect())
    }

    /// The state of one serial in `host:devices` (`None` when it is not listed).
    pub async fn state(&self, serial: &str) -> Result<Option<String>, HarnessError> {
        Ok(self.devices().await?.into_iter().find(|(s, _)| s == serial).map(|(_, state)| state))
    }

    /// Polls `host:devices` until `serial` shows `state`.
    pub async fn wait_for_state(&self, serial: &str, state: &str, timeout: Duration) -> Result<(), HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.state(serial).await?.as_deref() == Some(state) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let now = self.state(serial).await?;
                return Err(HarnessError::Timeout(timeout, format!("{serial} to be {state} (it is {now:?})")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for AdbServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One host-service request on a fresh connection: `OKAY` + hex4 body, or the `FAIL` message.
async fn query(port: u16, request: &str) -> Result<String, HarnessError> {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).await?;
    sock.write_all(format!("{:04x}{request}", request.len()).as_bytes()).await?;
    let mut status = [0u8; 4];
    sock.read_exact(&mut status).await?;
    let body = match &status {
        b"OKAY" | b"FAIL" => {
            let mut len = [0u8; 4];
            match sock.read_exact(&mut len).await {
                Ok(_) => {
                    let len = usize::from_str_radix(std::str::from_utf8(&len).unwrap_or("zz"), 16).map_err(|_| {
                        HarnessError::Io(io::Error::new(io::ErrorKind::InvalidData, "bad hex4 length"))
                    })?;
                    let mut body = vec![0u8; len];
                    sock.read_exact(&mut body).await?;
                    String::from_utf8_lossy(&body).into_owned()
                }
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof && &status == b"OKAY" => String::new(),
                Err(err) => return Err(err.into()),
            }
        }
        other => {
            return Err(HarnessError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected status {:?}", String::from_utf8_lossy(other)),
            )));
        }
    };
    if &status == b"FAIL" {
        return Err(HarnessError::Refused { request: request.to_string(), message: body });
    }
    Ok(body)
}
