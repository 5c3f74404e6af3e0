//! A private OpenSSH server for tests: its own host key, client key, authorized_keys and
//! config in a temp dir, listening on chosen 127.0.0.X addresses (distinct addresses stand for
//! distinct hosts) on a free port, running as the current user. Never the system sshd.
//!
//! It needs `/usr/sbin/sshd` and `ssh-keygen` (Debian: `apt-get install -y openssh-server
//! openssh-client`); without them every test fails saying so.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use devbatch_core::{Backend, Device, DeviceSpec, Labels};
use devbatch_ssh::SshBackend;
use serde_json::{Map, Value, json};

pub const SSHD: &str = "/usr/sbin/sshd";

fn need(program: &str) {
    let found = Path::new(program).exists()
        || Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    assert!(
        found,
        "{program} is missing: install OpenSSH with `apt-get install -y openssh-server openssh-client` \
         (scripts/test.sh does this); the SSH tests run against a real sshd"
    );
}

/// Generates a key pair with ssh-keygen; returns the private key path.
pub fn keygen(dir: &Path, name: &str, kind: &str) -> PathBuf {
    need("ssh-keygen");
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", name, "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .status()
        .expect("run ssh-keygen");
    assert!(status.success(), "ssh-keygen -t {kind} failed");
    path
}

/// The `type base64` part of a public key file.
pub fn public_key(private: &Path) -> String {
    let text = std::fs::read_to_string(private.with_extension("pub"))
        .or_else(|_| std::fs::read_to_string(format!("{}.pub", private.display())))
        .expect("read public key");
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The SHA256 fingerprint ssh-keygen prints for a key.
pub fn fingerprint(private: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(format!("{}.pub", private.display()))
        .output()
        .expect("ssh-keygen -l");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint field")
        .to_string()
}

pub fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// How to start a test sshd.
#[derive(Debug, Clone)]
pub struct SshdOptions {
    pub addrs: Vec<String>,
    pub extra_config: String,
    /// Whether the server offers the sftp subsystem.
    pub sftp: bool,
}

impl Default for SshdOptions {
    fn default() -> Self {
        SshdOptions {
            addrs: vec!["127.0.0.1".into()],
            extra_config: String::new(),
            sftp: true,
        }
    }
}

/// A running private sshd; killed when dropped. sshd listens on at most 16 sockets, so more
/// addresses are served by several sshd processes sharing keys, port and log directory.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    children: Vec<Child>,
    pub port: u16,
    pub addrs: Vec<String>,
    pub host_key: PathBuf,
    pub client_key: PathBuf,
    pub user: String,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().unwrap().port()
}

/// sshd's MAX_LISTEN_SOCKS.
const ADDRS_PER_SSHD: usize = 16;

impl Sshd {
    pub fn start(options: SshdOptions) -> Sshd {
        need(SSHD);
        // The privilege separation directory sshd insists on.
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::tempdir().expect("temp dir");
        let host_key = keygen(dir.path(), "host_ed25519", "ed25519");
        let client_key = keygen(dir.path(), "client_ed25519", "ed25519");
        std::fs::write(
            dir.path().join("authorized_keys"),
            format!("{}\n", public_key(&client_key)),
        )
        .unwrap();
        let user = current_user();
        'attempt: for attempt in 0..5 {
            let port = free_port();
            let mut children = Vec::new();
            for (n, group) in options.addrs.chunks(ADDRS_PER_SSHD).enumerate() {
                let listen: String = group
                    .iter()
                    .map(|a| format!("ListenAddress {a}:{port}\n"))
                    .collect();
                // sshd takes the first value it reads for a keyword: the test's own lines first.
                let config = format!(
                    "{extra}\n{listen}HostKey {hk}\nAuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.{n}.pid\n\
                     StrictModes no\nUsePAM no\nPermitRootLogin yes\nPasswordAuthentication yes\n\
                     KbdInteractiveAuthentication no\n{sftp}LogLevel VERBOSE\n\
                     PrintMotd no\n",
                    hk = host_key.display(),
                    d = dir.path().display(),
                    extra = options.extra_config,
                    sftp = if options.sftp {
                        "Subsystem sftp internal-sftp\n"
                    } else {
                        ""
                    },
                );
                let config_path = dir.path().join(format!("sshd_config.{n}"));
                std::fs::write(&config_path, config).unwrap();
                let log = std::fs::File::create(dir.path().join(format!("sshd.{n}.log"))).unwrap();
                let mut child = Command::new(SSHD)
                    .arg("-D")
                    .arg("-e")
                    .arg("-f")
                    .arg(&config_path)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("start sshd");
                let ready = wait_ready(&mut child, group, port);
                children.push(child);
                if !ready {
                    let log = read_logs(dir.path());
                    for mut c in children {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    if attempt == 4 || !log.contains("Address already in use") {
                        panic!("the test sshd did not start; its log:\n{log}");
                    }
                    continue 'attempt;
                }
            }
            return Sshd {
                dir,
                children,
                port,
                addrs: options.addrs.clone(),
                host_key,
                client_key,
                user,
            };
        }
        unreachable!()
    }

    /// Everything the server processes logged so far.
    pub fn log(&self) -> String {
        read_logs(self.dir.path())
    }

    /// A known_hosts line for `addr` with this server's key.
    pub fn known_hosts_line(&self, addr: &str) -> String {
        format!("[{addr}]:{} {}\n", self.port, public_key(&self.host_key))
    }

    /// Writes a known_hosts file trusting every address of this server; returns its path.
    pub fn trusted_known_hosts(&self) -> PathBuf {
        let path = self.dir.path().join("known_hosts");
        let text: String = self
            .addrs
            .iter()
            .map(|a| self.known_hosts_line(a))
            .collect();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Pool-file settings for a device on `addr`, trusting this server's key.
    pub fn settings(&self, addr: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("host".into(), json!(addr));
        m.insert("port".into(), json!(self.port));
        m.insert("user".into(), json!(self.user));
        m.insert("identity_files".into(), json!([self.client_key]));
        m.insert("user_known_hosts".into(), json!(self.trusted_known_hosts()));
        m.insert("ssh_config".into(), json!("none"));
        m.insert("use_agent".into(), json!(false));
        m
    }

    /// Counts "Accepted publickey" lines: how many connections authenticated.
    pub fn accepted(&self) -> usize {
        self.log().matches("Accepted publickey").count()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn read_logs(dir: &Path) -> String {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect()
}

fn wait_ready(child: &mut Child, addrs: &[String], port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    for addr in addrs {
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if Instant::now() > deadline {
                return false;
            }
            if let Ok(mut s) = TcpStream::connect((addr.as_str(), port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 7];
                if s.read_exact(&mut buf).is_ok() && &buf == b"SSH-2.0" {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    true
}

/// Builds a device through the backend, as a pool file would.
pub async fn device(id: &str, settings: Map<String, Value>) -> Arc<dyn Device> {
    let spec = DeviceSpec {
        id: Some(id.to_string()),
        labels: Labels::new(),
        settings,
        base_dir: None,
    };
    let mut devices = SshBackend.open(spec).await.expect("open the ssh device");
    devices.pop().expect("one device")
}

/// Whether a process is alive (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits (up to `limit`) for a process to be gone.
pub async fn gone_within(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    !alive(pid)
}
