//! Android tools simulated inside the device shell.
//!
//! `getprop` is a small `sh` script reading the props file. The others (`pm`, `cmd`, `am`, `screencap`,
//! `reboot`, `setprop`, `logcat`, `wm`) are scripts that call back into the simulator: the script writes its
//! arguments into `ctl/calls/PID/`, sends its PID down the request FIFO `ctl/req` and waits on
//! `ctl/calls/PID/rc`. The simulator opens the script's own stdin/stdout/stderr through `/proc/PID/fd/`, runs
//! the tool in Rust (so output streams, and `-S SIZE` installs read the APK straight from the shell's
//! stdin), then writes the exit status into the `rc` FIFO. `abb_exec:` calls the same code with the stream
//! as stdin and stdout.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::device::{Shared, StreamIo, StreamReader, StreamWriter, lock};
use crate::instrument::InstrumentationScript;
use crate::pm::{InstallFlags, Reply};
use crate::sandbox::map_path;

/// Scripted behaviour of the simulated tools beyond the package manager.
#[derive(Debug, Default)]
pub(crate) struct Scripts {
    pub(crate) instrumentation: InstrumentationScript,
    pub(crate) screenshots: u32,
    pub(crate) log: Vec<String>,
}

const GETPROP: &str = r#"#!/bin/sh
# adbd-sim: getprop [KEY [DEFAULT]]
f="@CTL@/props"
if [ $# -eq 0 ]; then
  while IFS= read -r line; do printf '[%s]: [%s]\n' "${line%%=*}" "${line#*=}"; done < "$f"
  exit 0
fi
while IFS= read -r line; do
  if [ "${line%%=*}" = "$1" ]; then printf '%s\n' "${line#*=}"; exit 0; fi
done < "$f"
printf '%s\n' "${2-}"
"#;

const CALL: &str = r#"#!/bin/sh
# adbd-sim: @TOOL@ is simulated by the device simulator; this script hands the call over.
d="@CTL@/calls/$$"
rm -rf "$d"; mkdir "$d" || exit 125
printf '%s' "@TOOL@" > "$d/0"
i=1
for a in "$@"; do printf '%s' "$a" > "$d/$i"; i=$((i+1)); done
printf '%s' "$PWD" > "$d/cwd"
mkfifo "$d/rc" || exit 125
printf '%s\n' "$$" > "@CTL@/req"
rc=$(cat "$d/rc")
rm -rf "$d"
exit "${rc:-125}"
"#;

/// The tools handed to the simulator (all but `getprop`).
const CALL_TOOLS: &[&str] = &["pm", "am", "screencap", "reboot", "setprop", "logcat", "wm", "cmd"];

/// Writes the tool scripts into the control directory's `bin/`.
pub(crate) fn install(shared: &Shared) -> io::Result<()> {
    let bin = shared.ctl.join("bin");
    std::fs::create_dir_all(&bin)?;
    let ctl = shared.ctl.to_string_lossy();
    if ctl.contains(['\'', '"', '$', '`', '\\', ' ', '\n']) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("control directory {ctl:?} has shell metacharacters")));
    }
    let has_cmd = shared.config.features.iter().any(|f| f == "cmd");
    let mut scripts = vec![("getprop".to_string(), GETPROP.replace("@CTL@", &ctl))];
    for tool in CALL_TOOLS {
        if *tool == "cmd" && !has_cmd {
            continue; // `cmd` arrived with Android 7
        }
        scripts.push((tool.to_string(), CALL.replace("@CTL@", &ctl).replace("@TOOL@", tool)));
    }
    for (name, text) in scripts {
        let path = bin.join(name);
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    nix_mkfifo(&shared.ctl.join("req"))
}

fn nix_mkfifo(path: &Path) -> io::Result<()> {
    let status = std::process::Command::new("mkfifo").arg("-m").arg("600").arg(path).status()?;
    if status.success() { Ok(()) } else { Err(io::Error::other(format!("mkfifo {} failed: {status}", path.display()))) }
}

/// Starts the task that answers tool calls made from this device's shells.
pub(crate) fn spawn_call_server(shared: Arc<Shared>) -> io::Result<()> {
    let rx = tokio::net::unix::pipe::OpenOptions::new().read_write(true).open_receiver(shared.ctl.join("req"))?;
    tokio::spawn(async move {
        let mut lines = BufReader::new(rx).lines();
        loop {
            let line = tokio::select! {
                line = lines.next_line() => line,
                _ = shared.shutdown.cancelled() => return,
            };
            let Ok(Some(line)) = line else { return };
            let Ok(pid) = line.trim().parse::<u32>() else { continue };
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let shutdown = shared.shutdown.clone();
                tokio::select! {
                    _ = serve_call(&shared, pid) => {}
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    });
    Ok(())
}

/// Where a tool's input comes from.
pub(crate) enum Input<'a> {
    /// The calling script's stdin (`/proc/PID/fd/0`), opened on first use.
    Proc(u32, Option<tokio::fs::File>),
    /// An `abb_exec:` stream.
    Stream(&'a mut StreamReader, Vec<u8>),
}

impl Input<'_> {
    /// Exactly `n` bytes, or an error naming how many came.
    async fn read_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        match self {
            Input::Proc(pid, file) => {
                if file.is_none() {
                    *file = Some(tokio::fs::File::open(format!("/proc/{pid}/fd/0")).await?);
                }
                let f = file.as_mut().expect("opened above");
                let mut buf = vec![0u8; n];
                let mut got = 0;
                while got < n {
                    let k = f.read(&mut buf[got..]).await?;
                    if k == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("stdin ended after {got} of {n} bytes")));
                    }
                    got += k;
                }
                Ok(buf)
            }
            Input::Stream(reader, buf) => {
                while buf.len() < n {
                    let Some(more) = reader.recv().await else {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("stream ended after {} of {n} bytes", buf.len())));
                    };
                    buf.extend_from_slice(&more);
                }
                let rest = buf.split_off(n);
                Ok(std::mem::replace(buf, rest))
            }
        }
    }
}

/// Where a tool's output goes.
pub(crate) enum Output<'a> {
    /// One of the calling script's fds through `/proc/PID/fd/N`, opened on first use.
    Proc(u32, u8, Option<tokio::fs::File>),
    /// An `abb_exec:` stream (stdout and stderr merged).
    Stream(&'a StreamWriter),
}

impl Output<'_> {
    async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        match self {
            Output::Proc(pid, fd, file) => {
                if file.is_none() {
                    let f = tokio::fs::OpenOptions::new().append(true).open(format!("/proc/{pid}/fd/{fd}")).await?;
                    *file = Some(f);
                }
                let f = file.as_mut().expect("opened above");
                f.write_all(data).await?;
                f.flush().await
            }
            Output::Stream(writer) => writer.write(data).await,
        }
    }
}

/// One tool invocation.
pub(crate) struct Call<'a> {
    shared: &'a Arc<Shared>,
    cwd: PathBuf,
    input: Input<'a>,
    out: Output<'a>,
    err: Output<'a>,
    /// The calling script, for tools that wait until it is gone (`logcat`).
    pid: Option<u32>,
}

impl Call<'_> {
    async fn reply(&mut self, reply: Reply) -> io::Result<u8> {
        self.out.write(reply.out.as_bytes()).await?;
        self.err.write(reply.err.as_bytes()).await?;
        Ok(reply.status)
    }

    /// A path argument: already rewritten into the sandbox by the shell, or an Android path, or relative.
    fn path(&self, arg: &str) -> PathBuf {
        let root = &self.shared.root;
        if Path::new(arg).starts_with(root) {
            PathBuf::from(arg)
        } else if arg.starts_with('/') {
            map_path(root, arg)
        } else {
            self.cwd.join(arg)
        }
    }
}

async fn serve_call(shared: &Arc<Shared>, pid: u32) {
    let dir = shared.ctl.join("calls").join(pid.to_string());
    let mut args = Vec::new();
    for i in 0.. {
        match tokio::fs::read(dir.join(i.to_string())).await {
            Ok(bytes) => args.push(String::from_utf8_lossy(&bytes).into_owned()),
            Err(_) => break,
        }
    }
    let cwd = tokio::fs::read(dir.join("cwd"))
        .await
        .map(|b| PathBuf::from(String::from_utf8_lossy(&b).into_owned()))
        .unwrap_or_else(|_| shared.root.clone());
    let mut call = Call {
        shared,
        cwd,
        input: Input::Proc(pid, None),
        out: Output::Proc(pid, 1, None),
        err: Output::Proc(pid, 2, None),
        pid: Some(pid),
    };
    let status = match run_tool(&mut call, &args).await {
        Ok(status) => status,
        Err(err) => {
            tracing::debug!(?args, %err, "tool failed");
            let _ = call.err.write(format!("{}: {err}\n", args.first().map(String::as_str).unwrap_or("tool")).as_bytes()).await;
            1
        }
    };
    drop(call);
    // Hand the exit status over; the script opens the FIFO for reading when it gets there.
    let rc = dir.join("rc");
    for _ in 0..6000 {
        match tokio::net::unix::pipe::OpenOptions::new().open_sender(&rc) {
            Ok(mut tx) => {
                let _ = tx.write_all(format!("{status}\n").as_bytes()).await;
                return;
            }
            Err(err) if err.raw_os_error() == Some(nix::libc::ENXIO) => {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    return; // the script is gone (its shell was killed)
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => return,
        }
    }
}

/// `abb_exec:SERVICE\0ARG...`: the package service, with the stream as stdin and stdout.
pub(crate) async fn run_abb_exec(shared: &Arc<Shared>, io: StreamIo, args: Vec<String>) -> io::Result<()> {
    let StreamIo { mut reader, writer } = io;
    let mut call = Call {
        shared,
        cwd: shared.root.clone(),
        input: Input::Stream(&mut reader, Vec::new()),
        out: Output::Stream(&writer),
        err: Output::Stream(&writer),
        pid: None,
    };
    let mut argv = vec!["cmd".to_string()];
    argv.extend(args);
    run_tool(&mut call, &argv).await.map(|_| ())
}

async fn run_tool(call: &mut Call<'_>, args: &[String]) -> io::Result<u8> {
    let tool = args.first().map(String::as_str).unwrap_or("");
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match tool {
        "pm" => pm(call, &rest).await,
        "cmd" => match rest.split_first() {
            Some((&"package", more)) => pm(call, more).await,
            Some((&"activity", more)) => am(call, more).await,
            Some((&"window", more)) => wm(call, more).await,
            Some((service, _)) => call.reply(Reply::err(format!("cmd: Can't find service: {service}\n"), 20)).await,
            None => call.reply(Reply::err("cmd: No service specified; use -l to list all running services\n", 20)).await,
        },
        "am" => am(call, &rest).await,
        "wm" => wm(call, &rest).await,
        "screencap" => screencap(call, &rest).await,
        "setprop" => match rest.as_slice() {
            [key, value] => {
                call.shared.set_prop(key, value);
                Ok(0)
            }
            _ => call.reply(Reply::err("usage: setprop NAME VALUE\n", 1)).await,
        },
        "reboot" => {
            let shared = Arc::clone(call.shared);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                shared.reboot();
            });
            // The link goes before the shell returns, as on a real device.
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(0)
        }
        "logcat" => logcat(call, &rest).await,
        other => call.reply(Reply::err(format!("{other}: not simulated\n"), 127)).await,
    }
}

fn is_legacy(shared: &Shared) -> bool {
    shared.prop("ro.build.version.sdk").and_then(|v| v.parse::<u32>().ok()).is_some_and(|sdk| sdk < 24)
}

pub(crate) fn log_line(shared: &Shared, tag: &str, message: &str) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (secs, millis) = (now.as_secs(), now.subsec_millis());
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    lock(&shared.scripts).log.push(format!("01-01 {h:02}:{m:02}:{s:02}.{millis:03}  1000  1000 I {tag}: {message}"));
}

async fn pm(call: &mut Call<'_>, args: &[&str]) -> io::Result<u8> {
    let legacy = is_legacy(call.shared);
    match args.split_first() {
        Some((&"install", opts)) => {
            let mut flags = InstallFlags::default();
            let mut size: Option<usize> = None;
            let mut path: Option<&str> = None;
            let mut it = opts.iter();
            while let Some(opt) = it.next() {
                match *opt {
                    "-r" => flags.replace = true,
                    "-d" => flags.downgrade = true,
                    "-g" | "-t" | "--dont-kill" | "--fastdeploy" | "--streaming" | "--no-streaming" => {}
                    "-S" => size = it.next().and_then(|s| s.parse().ok()),
                    "-i" | "--user" | "--install-reason" | "--pkg" | "--abi" => {
                        it.next();
                    }
                    other if other.starts_with('-') => {
                        return call.reply(Reply::err(format!("Error: Unknown option: {other}\n"), 1)).await;
                    }
                    other => path = Some(other),
                }
            }
            let (apk, shown) = match (size, path) {
                (Some(n), _) => (call.input.read_exact(n).await?, None),
                (None, Some(p)) if p != "-" => {
                    let file = call.path(p);
                    match tokio::fs::read(&file).await {
                        Ok(bytes) => (bytes, Some(p.to_string())),
                        Err(_) => {
                            let msg = format!("Error: Can't open file: {p}\n");
                            return call.reply(Reply::err(msg, 1)).await;
                        }
                    }
                }
                _ => return call.reply(Reply::err("Error: must either specify a package size or an APK file\n", 1)).await,
            };
            let (mut reply, installed) = lock(&call.shared.pm).install(&apk, flags, legacy);
            if let Some(pkg) = installed {
                log_line(call.shared, "PackageManager", &format!("installed {pkg}"));
                let dir = map_path(&call.shared.root, &format!("/data/app/{pkg}-1"));
                if tokio::fs::create_dir_all(&dir).await.is_ok() {
                    let _ = tokio::fs::write(dir.join("base.apk"), &apk).await;
                }
            }
            if legacy && let Some(shown) = shown {
                // Android 6's pm names the file first.
                let android = shown.strip_prefix(&*call.shared.root.to_string_lossy()).unwrap_or(&shown).to_string();
                reply.out = format!("\tpkg: {android}\n{}", reply.out);
            }
            call.reply(reply).await
        }
        Some((&"uninstall", opts)) => {
            let Some(pkg) = opts.iter().find(|o| !o.starts_with('-')) else {
                return call.reply(Reply::err("Error: package name not specified\n", 1)).await;
            };
            let reply = lock(&call.shared.pm).uninstall(pkg);
            if reply.status == 0 {
                let _ = tokio::fs::remove_dir_all(map_path(&call.shared.root, &format!("/data/app/{pkg}-1"))).await;
            }
            call.reply(reply).await
        }
        Some((&"list", more)) if more.first() == Some(&"packages") => {
            let filter = more.iter().skip(1).find(|a| !a.starts_with('-')).copied();
            let text: String = lock(&call.shared.pm)
                .packages
                .keys()
                .filter(|p| filter.is_none_or(|f| p.contains(f)))
                .map(|p| format!("package:{p}\n"))
                .collect();
            call.reply(Reply::out(text, 0)).await
        }
        Some((&"path", [pkg, ..])) => {
            let known = lock(&call.shared.pm).packages.contains_key(*pkg);
            let reply =
                if known { Reply::out(format!("package:/data/app/{pkg}-1/base.apk\n"), 0) } else { Reply::out("", 1) };
            call.reply(reply).await
        }
        Some((&"install-create", _)) => {
            let id = lock(&call.shared.pm).create_session();
            call.reply(Reply::out(format!("Success: created install session [{id}]\n"), 0)).await
        }
        Some((&"install-write", opts)) => {
            // install-write -S SIZE SESSION NAME -
            let mut size = None;
            let mut positional = Vec::new();
            let mut it = opts.iter();
            while let Some(opt) = it.next() {
                if *opt == "-S" {
                    size = it.next().and_then(|s| s.parse::<usize>().ok());
                } else {
                    positional.push(*opt);
                }
            }
            let (Some(size), Some(id)) = (size, positional.first().and_then(|s| s.parse::<u32>().ok())) else {
                return call.reply(Reply::err("Error: usage: install-write -S SIZE SESSION NAME -\n", 1)).await;
            };
            let data = call.input.read_exact(size).await?;
            let ok = lock(&call.shared.pm).write_session(id, &data);
            let reply = if ok {
                Reply::out(format!("Success: streamed {size} bytes\n"), 0)
            } else {
                Reply::err(format!("Error: Invalid session id: {id}\n"), 1)
            };
            call.reply(reply).await
        }
        Some((&"install-commit", [id, ..])) => {
            let session = id.parse::<u32>().ok().and_then(|id| lock(&call.shared.pm).take_session(id));
            let reply = match session {
                Some(apk) => {
                    let flags = InstallFlags { replace: true, downgrade: false };
                    lock(&call.shared.pm).install(&apk, flags, legacy).0
                }
                None => Reply::err(format!("Error: Invalid session id: {id}\n"), 1),
            };
            call.reply(reply).await
        }
        Some((&"install-abandon", [id, ..])) => {
            let _ = id.parse::<u32>().ok().and_then(|id| lock(&call.shared.pm).take_session(id));
            call.reply(Reply::out("Success\n", 0)).await
        }
        Some((&"grant", _)) | Some((&"revoke", _)) | Some((&"clear", _)) => call.reply(Reply::out("Success\n", 0)).await,
        Some((other, _)) => call.reply(Reply::err(format!("Unknown command: {other}\n"), 1)).await,
        None => call.reply(Reply::err("usage: pm [list|path|install|uninstall] ...\n", 1)).await,
    }
}

async fn am(call: &mut Call<'_>, args: &[&str]) -> io::Result<u8> {
    match args.split_first() {
        Some((&"instrument", opts)) => {
            let mut raw = false;
            let mut filter = None;
            let mut component = None;
            let mut it = opts.iter();
            while let Some(opt) = it.next() {
                match *opt {
                    "-r" => raw = true,
                    "-w" | "-m" | "--no-window-animation" | "--no-hidden-api-checks" => {}
                    "-e" => {
                        let (key, value) = (it.next(), it.next());
                        if key == Some(&"class") {
                            filter = value.map(|v| v.to_string());
                        }
                    }
                    "--user" | "-p" | "--abi" => {
                        it.next();
                    }
                    other => component = Some(other.to_string()),
                }
            }
            let Some(component) = component.filter(|c| c.contains('/')) else {
                return call.reply(Reply::err("Error: Bad component name\n", 1)).await;
            };
            let runner = component.rsplit('/').next().unwrap_or("").rsplit('.').next().unwrap_or("").to_string();
            let script = lock(&call.shared.scripts).instrumentation.clone();
            log_line(call.shared, "ActivityManager", &format!("Start instrumentation {component}"));
            for (delay, chunk) in script.replay(&runner, filter.as_deref(), raw) {
                tokio::time::sleep(delay).await;
                call.out.write(chunk.as_bytes()).await?;
            }
            Ok(0)
        }
        Some((&"force-stop", _)) | Some((&"kill", _)) | Some((&"broadcast", _)) => Ok(0),
        Some((&"start", _)) => call.reply(Reply::out("Starting: Intent { }\n", 0)).await,
        Some((other, _)) => call.reply(Reply::err(format!("Error: Unknown command: {other}\n"), 1)).await,
        None => call.reply(Reply::err("usage: am [instrument|start|force-stop] ...\n", 1)).await,
    }
}

async fn wm(call: &mut Call<'_>, args: &[&str]) -> io::Result<u8> {
    match args.first() {
        Some(&"size") => call.reply(Reply::out("Physical size: 1080x2400\n", 0)).await,
        Some(&"density") => call.reply(Reply::out("Physical density: 420\n", 0)).await,
        _ => call.reply(Reply::err("usage: wm [size|density]\n", 1)).await,
    }
}

/// Screen size of a screenshot (a tenth of 1080x2400 in each direction keeps files small).
const SHOT_W: u32 = 108;
const SHOT_H: u32 = 240;

async fn screencap(call: &mut Call<'_>, args: &[&str]) -> io::Result<u8> {
    let png = args.contains(&"-p");
    let file = args.iter().find(|a| !a.starts_with('-')).map(|f| call.path(f));
    let shot = {
        let mut scripts = lock(&call.shared.scripts);
        scripts.screenshots += 1;
        scripts.screenshots
    };
    let seed = crate::apk::crc32(format!("{}|{}", call.shared.config.device_serial(), call.shared.addr).as_bytes());
    let image = crate::png::screen(seed, shot, SHOT_W, SHOT_H);
    let png = png || file.as_ref().is_some_and(|f| f.extension().is_some_and(|e| e == "png"));
    let bytes = if png {
        image
    } else {
        // raw: width, height, format (1 = RGBA_8888), then pixels; a flat colour is enough
        let mut raw = Vec::with_capacity(12 + (SHOT_W * SHOT_H * 4) as usize);
        for v in [SHOT_W, SHOT_H, 1] {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        for _ in 0..SHOT_W * SHOT_H {
            raw.extend_from_slice(&[(seed >> 16) as u8, (seed >> 8) as u8, seed as u8, 255]);
        }
        raw
    };
    match file {
        Some(path) => {
            tokio::fs::write(&path, bytes).await?;
            Ok(0)
        }
        None => {
            call.out.write(&bytes).await?;
            Ok(0)
        }
    }
}

async fn logcat(call: &mut Call<'_>, args: &[&str]) -> io::Result<u8> {
    if args.contains(&"-c") {
        lock(&call.shared.scripts).log.clear();
        return Ok(0);
    }
    let text: String = lock(&call.shared.scripts).log.iter().map(|l| format!("{l}\n")).collect();
    call.out.write(text.as_bytes()).await?;
    if args.contains(&"-d") {
        return Ok(0);
    }
    // Follow mode: keep the stream open until the caller goes away.
    if let Some(pid) = call.pid {
        while Path::new(&format!("/proc/{pid}")).exists() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(0)
}
