//! A client of one adb server: a fresh TCP connection per request (the server multiplexes
//! devices itself), a deadline on every request's setup, and a concurrency limit per server.
//!
//! Cancellation is by drop: a [`Conn`] owns its socket, so dropping the future that holds it
//! closes the socket, and the server then closes the device stream (CLSE) for us. A streamed
//! service (sync, shell, exec) arms [`Conn::reset_unless_finished`] so that this close is a
//! reset: after a normal close the server would first relay all we had written.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{AdbError, state_from_fail, state_hint};
use crate::protocol::{ListedDevice, encode_request, parse_devices_l, parse_hex4};

/// The default adb server port.
pub(crate) const DEFAULT_PORT: u16 = 5037;

/// The server address used when a pool entry names none: `127.0.0.1:5037`, or the port in
/// `ANDROID_ADB_SERVER_PORT`.
pub(crate) fn default_server() -> Result<String, String> {
    match std::env::var("ANDROID_ADB_SERVER_PORT") {
        Ok(p) if !p.trim().is_empty() => match p.trim().parse::<u16>() {
            Ok(port) if port > 0 => Ok(format!("127.0.0.1:{port}")),
            _ => Err(format!(
                "ANDROID_ADB_SERVER_PORT must be a port number (1-65535), got {p:?}"
            )),
        },
        _ => Ok(format!("127.0.0.1:{DEFAULT_PORT}")),
    }
}

/// Which device a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// By serial (the usual case).
    Serial(String),
    /// By the server's transport id: for devices listed twice under one serial.
    TransportId(u64),
}

impl Target {
    fn transport_request(&self) -> String {
        match self {
            Target::Serial(s) => format!("host:transport:{s}"),
            Target::TransportId(id) => format!("host:transport-id:{id}"),
        }
    }

    /// The prefix of per-device host requests (`host-serial:S:features`).
    pub(crate) fn host_prefix(&self) -> String {
        match self {
            Target::Serial(s) => format!("host-serial:{s}:"),
            Target::TransportId(id) => format!("host-transport-id:{id}:"),
        }
    }
}

/// What every client of one server address shares: the concurrency limit.
#[derive(Debug)]
struct Shared {
    permits: Arc<Semaphore>,
    limit: usize,
}

fn shared_for(addr: &str, limit: usize) -> Arc<Shared> {
    static SERVERS: OnceLock<Mutex<HashMap<String, Arc<Shared>>>> = OnceLock::new();
    let mut map = SERVERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let entry = map.entry(addr.to_string()).or_insert_with(|| {
        Arc::new(Shared {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        })
    });
    if entry.limit != limit {
        tracing::warn!(
            server = addr,
            kept = entry.limit,
            asked = limit,
            "max_requests differs between pool entries of one adb server; the first value is kept"
        );
    }
    entry.clone()
}

/// A handle on one adb server.
#[derive(Debug, Clone)]
pub(crate) struct AdbServer {
    addr: String,
    shared: Arc<Shared>,
    /// Deadline for connecting and for each request's replies (not for a running command).
    timeout: Duration,
}

/// One open connection to the server, holding a slot of the server's concurrency limit.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    /// Reset the connection when dropped (see [`Conn::reset_unless_finished`]).
    reset_on_drop: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.reset_on_drop {
            // SO_LINGER 0: the close that follows is a reset (it never blocks).
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AdbServer {
    /// A client of `addr`; clients of one address share one limit of `max_requests`.
    pub(crate) fn new(addr: &str, max_requests: usize, timeout: Duration) -> Self {
        AdbServer {
            addr: addr.to_string(),
            shared: shared_for(addr, max_requests),
            timeout,
        }
    }

    /// The server's address.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    async fn deadline<T>(
        &self,
        what: impl FnOnce() -> String,
        fut: impl Future<Output = Result<T, AdbError>>,
    ) -> Result<T, AdbError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(AdbError::Timeout {
                what: what(),
                after: self.timeout,
            }),
        }
    }

    /// Opens a connection, waiting for a free slot first.
    async fn open(&self) -> Result<Conn, AdbError> {
        let permit = self
            .shared
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AdbError::Protocol("the adb client was shut down".into()))?;
        let stream = self
            .deadline(
                || format!("a connection to the adb server at {}", self.addr),
                async {
                    TcpStream::connect(&self.addr).await.map_err(|source| {
                        AdbError::ServerUnreachable {
                            addr: self.addr.clone(),
                            source,
                        }
                    })
                },
            )
            .await?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            _permit: permit,
            reset_on_drop: false,
        })
    }

    /// A host request answered with `OKAY<hex4><body>`: returns the body.
    pub(crate) async fn query(&self, request: &str) -> Result<String, AdbError> {
        self.deadline(
            || format!("the adb server at {} to answer '{request}'", self.addr),
            async {
                let mut conn = self.open().await?;
                conn.request(request).await?;
                let body = conn.read_hex4_body().await?;
                Ok(String::from_utf8_lossy(&body).into_owned())
            },
        )
        .await
    }

    /// `host:devices-l`.
    pub(crate) async fn devices(&self) -> Result<Vec<ListedDevice>, AdbError> {
        Ok(parse_devices_l(&self.query("host:devices-l").await?))
    }

    /// Opens a device service: `host:transport*` then the service; after the second `OKAY`
    /// the connection is a byte pipe to the device stream.
    pub(crate) async fn service(&self, target: &Target, service: &str) -> Result<Conn, AdbError> {
        self.deadline(
            || format!("the device to accept '{}'", short(service)),
            async {
                let mut conn = self.open().await?;
                conn.request(&target.transport_request())
                    .await
                    .map_err(|e| device_fail(e, target, &self.addr))?;
                match conn.request(service).await {
                    Err(AdbError::ServerFail { message, .. }) if message == "closed" => {
                        Err(AdbError::Refused(short(service)))
                    }
                    Err(e) => Err(device_fail(e, target, &self.addr)),
                    Ok(()) => Ok(conn),
                }
            },
        )
        .await
    }

    /// A per-device host request (`host-serial:S:features`), with the device's FAIL messages
    /// mapped to its state.
    pub(crate) async fn device_query(
        &self,
        target: &Target,
        what: &str,
    ) -> Result<String, AdbError> {
        self.query(&format!("{}{what}", target.host_prefix()))
            .await
            .map_err(|e| device_fail(e, target, &self.addr))
    }
}

/// Shortens a service string for messages (a shell line can be long).
pub(crate) fn short(service: &str) -> String {
    if service.chars().count() > 120 {
        format!("{}...", service.chars().take(120).collect::<String>())
    } else {
        service.to_string()
    }
}

/// Turns a server FAIL about a device into the matching error: not found, not ready.
fn device_fail(e: AdbError, target: &Target, server: &str) -> AdbError {
    match e {
        AdbError::ServerFail { message, request } => {
            if let Some(state) = state_from_fail(&message) {
                AdbError::NotReady {
                    state: state.to_string(),
                    hint: state_hint(state),
                }
            } else if message.contains("not found") || message.starts_with("no device") {
                // `device 'X' not found`, `no devices/emulators found`,
                // `no device with transport id 'N'` (adb 29).
                AdbError::NotFound {
                    serial: match target {
                        Target::Serial(s) => s.clone(),
                        Target::TransportId(id) => format!("transport id {id}"),
                    },
                    server: server.to_string(),
                }
            } else {
                AdbError::ServerFail { request, message }
            }
        }
        other => other,
    }
}

impl Conn {
    /// Makes this connection reset instead of close when it is dropped before [`Conn::finish`]
    /// (a timeout, a cancellation, an error). For streamed services: on a normal close the adb
    /// server would still relay what it has buffered (the rest of an upload, a push's DONE) and
    /// only then close the device stream, so a timed-out push or install could complete on the
    /// device long after, keeping a slow device busy meanwhile. After a reset the server relays
    /// at most what it had already read from the connection (about one socket buffer, a few
    /// hundred KiB on loopback), discards everything still on our side, and closes the device
    /// stream.
    pub(crate) fn reset_unless_finished(mut self) -> Conn {
        self.reset_on_drop = true;
        self
    }

    /// The service's exchange is complete: the connection closes normally when dropped.
    pub(crate) fn finish(&mut self) {
        self.reset_on_drop = false;
    }

    /// Sends a request and reads its `OKAY` / `FAIL` status.
    pub(crate) async fn request(&mut self, payload: &str) -> Result<(), AdbError> {
        let bytes = encode_request(payload)?;
        self.stream.write_all(&bytes).await.map_err(|e| {
            AdbError::Protocol(format!("the adb server closed the connection: {e}"))
        })?;
        self.read_status(payload).await
    }

    /// Reads `OKAY`, or `FAIL<hex4><message>` as an error.
    pub(crate) async fn read_status(&mut self, request: &str) -> Result<(), AdbError> {
        let mut status = [0u8; 4];
        self.read_exact(&mut status, request).await?;
        match &status {
            b"OKAY" => Ok(()),
            b"FAIL" => {
                let msg = self.read_hex4_body().await?;
                Err(AdbError::ServerFail {
                    request: short(request),
                    message: String::from_utf8_lossy(&msg).trim_end().to_string(),
                })
            }
            other => Err(AdbError::Protocol(format!(
                "the adb server answered '{}' with {:?} instead of OKAY or FAIL",
                short(request),
                String::from_utf8_lossy(other)
            ))),
        }
    }

    /// Reads `<hex4><body>`.
    pub(crate) async fn read_hex4_body(&mut self) -> Result<Vec<u8>, AdbError> {
        let mut len = [0u8; 4];
        self.read_exact(&mut len, "a length").await?;
        let len = parse_hex4(&len)?;
        let mut body = vec![0u8; len];
        self.read_exact(&mut body, "a reply").await?;
        Ok(body)
    }

    async fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), AdbError> {
        self.stream.read_exact(buf).await.map(|_| ()).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                AdbError::Protocol(format!(
                    "the adb server closed the connection while we waited for its answer to '{}'",
                    short(what)
                ))
            } else {
                AdbError::Protocol(format!("reading from the adb server: {e}"))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A fake server that answers one connection with a canned reply and records the request.
    async fn fake_server(reply: &'static [u8]) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = vec![0u8; 4];
            s.read_exact(&mut req).await.unwrap();
            let len = usize::from_str_radix(std::str::from_utf8(&req).unwrap(), 16).unwrap();
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).await.unwrap();
            req.extend(body);
            s.write_all(reply).await.unwrap();
            req
        });
        (addr, task)
    }

    #[tokio::test]
    async fn query_reads_the_body_and_fail_is_an_error() {
        let (addr, task) = fake_server(b"OKAY0004abcd").await;
        let server = AdbServer::new(&addr, 4, Duration::from_secs(5));
        assert_eq!(server.query("host:version").await.unwrap(), "abcd");
        assert_eq!(task.await.unwrap(), b"000chost:version");

        let (addr, _task) = fake_server(b"FAIL000edevice offline").await;
        let server = AdbServer::new(&addr, 4, Duration::from_secs(5));
        let err = server
            .device_query(&Target::Serial("s 1".into()), "features")
            .await
            .unwrap_err();
        assert!(
            matches!(err, AdbError::NotReady { ref state, .. } if state == "offline"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_silent_server_hits_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let _keep = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(s);
        });
        let server = AdbServer::new(&addr, 4, Duration::from_millis(300));
        let started = std::time::Instant::now();
        let err = server.query("host:devices-l").await.unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(
            err.to_string()
                .starts_with("timed out after 300ms waiting for the adb server at"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn no_server_is_unreachable_with_advice() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let server = AdbServer::new(&addr, 4, Duration::from_secs(5));
        let err = server.devices().await.unwrap_err();
        assert!(matches!(err, AdbError::ServerUnreachable { .. }));
        assert!(err.to_string().contains("adb start-server"), "{err}");
    }

    #[test]
    fn targets_build_requests() {
        let t = Target::Serial("127.0.0.1:6100".into());
        assert_eq!(t.transport_request(), "host:transport:127.0.0.1:6100");
        assert_eq!(t.host_prefix(), "host-serial:127.0.0.1:6100:");
        let t = Target::TransportId(7);
        assert_eq!(t.transport_request(), "host:transport-id:7");
        assert_eq!(t.host_prefix(), "host-transport-id:7:");
    }
}
