//! End-to-end checks of the `devbatch` binary: exit codes, output formats, selection, reports,
//! Ctrl-C, and the README's first command.

mod util;

use std::time::{Duration, Instant};

use serde_json::Value;
use util::{Dir, Run};

const MIXED_POOL: &str = r#"
[defaults]
concurrency = 8

[[devices]]
backend = "mock"
id = "phone"
count = 5
labels = { os = "android" }
[devices.ops.info]
result = "Android 14"

[[devices]]
backend = "mock"
id = "broken"
labels = { os = "android" }
[devices.ops.info]
error = { kind = "unreachable", message = "usb reset" }

[[devices]]
backend = "local"
id = "here"
labels = { os = "linux" }
"#;

#[test]
fn readme_first_command_prints_a_result_for_local() {
    let dir = Dir::new();
    let run = dir.run(&["run", "shell", "--param", "cmd=echo hello from $(uname -s)"]);
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    let out = run.stdout();
    assert!(out.contains("SUCCEEDED: shell on 1 device"), "{out}");
    assert!(out.contains("1 device: hello from Linux"), "{out}");
    assert!(out.contains("    local\n"), "{out}");
    let run = dir.run(&["run", "info", "--output", "json"]);
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    let doc = run.json();
    assert_eq!(doc["local"]["status"], "success");
    assert_eq!(doc["local"]["result"]["os"], "Linux");
}

#[test]
fn exit_codes_0_1_2_3() {
    let dir = Dir::new();
    let pool = dir.write("fleet.toml", MIXED_POOL);
    let pool = pool.to_str().unwrap();

    let ok = dir.run(&[
        "--pool",
        pool,
        "run",
        "info",
        "--select",
        "os=android",
        "--devices",
        "phone-001,phone-002",
    ]);
    assert_eq!(ok.code(), 0, "{}", ok.stderr());

    let failed = dir.run(&["--pool", pool, "run", "info", "--select", "os=android"]);
    assert_eq!(failed.code(), 1, "{}", failed.stderr());
    assert!(
        failed
            .stdout()
            .contains("broken [unreachable] unreachable: usb reset"),
        "{}",
        failed.stdout()
    );

    let err = dir
        .run(&[
            "--pool",
            pool,
            "run",
            "info",
            "--devices",
            "phone-001,ghost",
        ])
        .one_line_error(2);
    assert_eq!(err, "error: unknown device id: ghost");
    let err = dir
        .run(&["--pool", pool, "run", "reboto"])
        .one_line_error(2);
    assert_eq!(
        err,
        "error: unknown operation 'reboto'; known operations: info, install_app, pull, push, reboot, run_test, screenshot, shell, uninstall_app"
    );
    let err = dir
        .run(&[
            "--pool",
            pool,
            "run",
            "shell",
            "--param",
            "cmd=true",
            "--param",
            "colour=red",
        ])
        .one_line_error(2);
    assert_eq!(
        err,
        "error: operation 'shell' has no parameter 'colour'; its parameters are: cmd, args, stdin, ok_exit_codes"
    );
    let err = dir
        .run(&["--pool", pool, "run", "info", "--select", "os=ios"])
        .one_line_error(3);
    assert!(err.starts_with("error: no device selected: the selection os=ios matched none of the 7 devices in pool file"), "{err}");

    let empty = dir.write("empty.toml", "# no devices\n");
    let err = dir
        .run(&["--pool", empty.to_str().unwrap(), "run", "info"])
        .one_line_error(3);
    assert!(err.ends_with("empty.toml has no devices"), "{err}");
}

#[test]
fn malformed_pool_files_are_named_with_line_and_key() {
    let dir = Dir::new();
    let bad = dir.write(
        "bad.toml",
        "[[devices]]\nbackend = \"mock\"\nid = \"a\"\nlatncy_ms = 5\n",
    );
    let err = dir
        .run(&["--pool", bad.to_str().unwrap(), "devices"])
        .one_line_error(2);
    assert!(err.contains("bad.toml:1: device entry #1: mock device 'a': invalid settings: unknown field `latncy_ms`"), "{err}");
    // A wrong value names its key, nested ones by their path.
    let typed = dir.write(
        "typed.toml",
        "[[devices]]\nbackend = \"mock\"\nid = \"a\"\n[devices.ops.info]\npanic = true\n",
    );
    let err = dir
        .run(&["--pool", typed.to_str().unwrap(), "devices"])
        .one_line_error(2);
    assert_eq!(
        err,
        format!(
            "error: {}:1: device entry #1: mock device 'a': invalid settings: ops.info.panic: invalid type: boolean `true`, expected a string",
            typed.display()
        )
    );
    let syntax = dir.write("syntax.toml", "[defaults]\nconcurrency = 4\n[[devices]\n");
    let err = dir
        .run(&["--pool", syntax.to_str().unwrap(), "devices"])
        .one_line_error(2);
    assert!(err.contains("syntax.toml:3: "), "{err}");
    let unknown = dir.write(
        "unknown.toml",
        "[[devices]]\nbackend = \"telnet\"\nid = \"x\"\n",
    );
    let err = dir
        .run(&["--pool", unknown.to_str().unwrap(), "devices"])
        .one_line_error(2);
    assert!(
        err.contains("unknown.toml:1: device entry #1: unknown backend 'telnet'; known backends: "),
        "{err}"
    );
    let dup = dir.write("dup.toml", "[[devices]]\nbackend = \"mock\"\nid = \"x\"\n\n[[devices]]\nbackend = \"local\"\nid = \"x\"\n");
    let err = dir
        .run(&["--pool", dup.to_str().unwrap(), "devices"])
        .one_line_error(2);
    assert!(
        err.contains(
            "dup.toml:5: device entry #2: duplicate device id 'x' (backends mock and local)"
        ),
        "{err}"
    );
    let missing = dir.join("nowhere.toml");
    let err = dir
        .run(&["--pool", missing.to_str().unwrap(), "devices"])
        .one_line_error(2);
    assert!(
        err.starts_with("error: cannot read pool file ") && err.contains("nowhere.toml"),
        "{err}"
    );
}

#[test]
fn json_and_jsonl_parse_under_concurrency_100_with_large_and_binary_output() {
    let dir = Dir::new();
    let pool = dir.write(
        "fleet.toml",
        "[[devices]]\nbackend = \"mock\"\nid = \"m\"\ncount = 120\n",
    );
    let cmd =
        "cmd=printf 'head\\377\\376\\000'; head -c 300000 /dev/zero | tr '\\000' a; echo tail >&2";
    let run = dir.run(&[
        "--pool",
        pool.to_str().unwrap(),
        "run",
        "shell",
        "--param",
        cmd,
        "-j",
        "100",
        "-o",
        "json",
    ]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let doc = run.json();
    let map = doc.as_object().unwrap();
    assert_eq!(map.len(), 120);
    for (id, o) in map {
        assert_eq!(o["status"], "success", "{id}");
        let b64 = o["result"]["stdout_base64"]
            .as_str()
            .expect("binary stdout carries base64");
        assert!(b64.starts_with("aGVhZP/+AGFh"), "{id}: exact bytes kept");
        assert_eq!(o["result"]["stderr"], "tail\n");
    }

    let run = dir.run(&[
        "--pool",
        pool.to_str().unwrap(),
        "run",
        "shell",
        "--param",
        cmd,
        "-j",
        "100",
        "-o",
        "jsonl",
    ]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let lines: Vec<Value> = run
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 121);
    let mut ids: Vec<&str> = lines[..120]
        .iter()
        .map(|l| l["device"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 120, "one line per device");
    assert_eq!(lines[120]["summary"]["succeeded"], 120);
    assert_eq!(lines[120]["interrupted"], false);
}

#[test]
fn human_summary_groups_identical_results_and_puts_failures_first() {
    let dir = Dir::new();
    let pool = dir.write(
        "fleet.toml",
        r#"
[[devices]]
backend = "mock"
id = "phone"
count = 298
[devices.ops.info]
result = "Android 14"

[[devices]]
backend = "mock"
id = "old-phone"
[devices.ops.info]
result = "Android 13"

[[devices]]
backend = "mock"
id = "dead-phone"
[devices.ops.info]
error = { kind = "timeout", message = "30s" }
"#,
    );
    let run = dir.run(&["--pool", pool.to_str().unwrap(), "run", "info", "-j", "50"]);
    assert_eq!(run.code(), 1);
    let out = run.stdout();
    let expected_head = "FAILED: info on 1 device\n  dead-phone [timeout] timed out after 30s\nSUCCEEDED: info on 299 devices\n  298 devices: Android 14\n    phone-001, phone-002";
    assert!(out.starts_with(expected_head), "{out}");
    assert!(
        out.contains("phone-012 and 286 more\n  1 device: Android 13\n    old-phone\n"),
        "{out}"
    );
    assert!(
        out.contains("300 devices: 299 succeeded, 1 failed in "),
        "{out}"
    );
}

#[test]
fn reports_junit_and_rerun_failed() {
    let dir = Dir::new();
    let pool = dir.write("fleet.toml", MIXED_POOL);
    let pool = pool.to_str().unwrap();
    let run = dir.run(&[
        "--pool",
        pool,
        "run",
        "info",
        "-s",
        "os=android",
        "--report",
        "last.json",
        "--junit",
        "junit.xml",
        "-o",
        "json",
    ]);
    assert_eq!(run.code(), 1);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("last.json")).unwrap()).unwrap();
    assert_eq!(
        report,
        run.json(),
        "--report holds the same document as stdout"
    );
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase ").count(), 6);
    assert!(
        junit.contains("<testcase classname=\"info\" name=\"broken\""),
        "{junit}"
    );
    assert!(
        junit.contains("<failure type=\"unreachable\" message=\"unreachable: usb reset\">"),
        "{junit}"
    );

    let rerun = dir.run(&[
        "--pool",
        pool,
        "run",
        "info",
        "--rerun-failed",
        "last.json",
        "-o",
        "json",
    ]);
    assert_eq!(rerun.code(), 1);
    let doc = rerun.json();
    assert_eq!(
        doc.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["broken"]
    );

    std::fs::write(
        dir.join("good.json"),
        r#"{"phone-001": {"status": "success", "result": 1}}"#,
    )
    .unwrap();
    let err = dir
        .run(&["--pool", pool, "run", "info", "--rerun-failed", "good.json"])
        .one_line_error(3);
    assert!(
        err.starts_with("error: no device selected: every device in good.json succeeded"),
        "{err}"
    );

    // JSON lines are not a report; the message says which file to give instead.
    let lines = dir.run(&["--pool", pool, "run", "info", "-o", "jsonl"]);
    std::fs::write(dir.join("run.jsonl"), lines.stdout()).unwrap();
    let err = dir
        .run(&["--pool", pool, "run", "info", "--rerun-failed", "run.jsonl"])
        .one_line_error(2);
    assert_eq!(
        err,
        "error: run.jsonl holds JSON lines (-o jsonl); --rerun-failed reads a report written with --report or -o json"
    );
    // A report may not replace the pool file it ran from.
    let err = dir
        .run(&["--pool", pool, "run", "info", "--report", pool])
        .one_line_error(2);
    assert_eq!(
        err,
        format!("error: {pool} is the pool file: a report written there would replace it")
    );
}

#[test]
fn param_values_are_json_when_they_parse_and_strings_otherwise() {
    let dir = Dir::new();
    let shell = |extra: &[&str]| {
        let mut args = vec!["run", "shell", "-o", "json"];
        args.extend_from_slice(extra);
        dir.run(&args)
    };
    let run = shell(&[
        "--param",
        r#"args=["printf", "%s|", "a b", "$HOME", "x; echo INJECTED"]"#,
    ]);
    assert_eq!(
        run.json()["local"]["result"]["stdout"],
        "a b|$HOME|x; echo INJECTED|"
    );
    let run = shell(&["--param", "cmd=exit 3", "--param", "ok_exit_codes=[3]"]);
    assert_eq!(run.code(), 0);
    let run = shell(&["--param", "cmd=42"]);
    let error = run.json()["local"]["error"].as_str().unwrap().to_string();
    assert!(
        error.starts_with("command exited with status 127: ") && error.ends_with("42: not found"),
        "{error}"
    );
    // `cmd` is declared a string, so `true` is the command, not a boolean.
    let run = shell(&["--param", "cmd=true"]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(run.json()["local"]["result"]["exit_code"], 0);
    let err = shell(&["--param", "cmd=true", "--param", "ok_exit_codes=yes"]).one_line_error(2);
    assert_eq!(
        err,
        "error: parameter 'ok_exit_codes' of operation 'shell' must be a list of integers, got string \"yes\""
    );
    // A value meant as a JSON list that does not parse says why, instead of becoming a string.
    let err = shell(&["--param", "cmd=true", "--param", "ok_exit_codes=[1e400]"]).one_line_error(2);
    assert_eq!(
        err,
        "error: --param ok_exit_codes: the value is not valid JSON (number out of range at line 1 column 6); use --param-str ok_exit_codes=... to pass it as text"
    );
    let err =
        shell(&["--param", "cmd=true", "--param", "ok_exit_codes=[0, 1.5]"]).one_line_error(2);
    assert_eq!(
        err,
        "error: parameter 'ok_exit_codes' of operation 'shell' must be a list of integers, got list [0,1.5]"
    );
    let err = shell(&["--params-json", r#"{"cmd": 42}"#]).one_line_error(2);
    assert_eq!(
        err,
        "error: parameter 'cmd' of operation 'shell' must be a string, got number 42"
    );
    let err = shell(&["--params-json", "[1]"]).one_line_error(2);
    assert_eq!(
        err,
        "error: --params-json must be a JSON object, got a list"
    );
    let err = shell(&["--param", "novalue"]).one_line_error(2);
    assert_eq!(
        err,
        "error: --param \"novalue\": expected KEY=VALUE, for example cmd='uname -a'"
    );
    dir.write("params.json", r#"{"cmd": "echo from-file"}"#);
    let run = shell(&["--params-json", "@params.json"]);
    assert_eq!(run.json()["local"]["result"]["stdout"], "from-file\n");
}

#[test]
fn devices_and_ops_list_what_is_there() {
    let dir = Dir::new();
    let pool = dir.write("fleet.toml", MIXED_POOL);
    let run = dir.run(&[
        "--pool",
        pool.to_str().unwrap(),
        "devices",
        "--output",
        "json",
    ]);
    assert_eq!(run.code(), 0);
    let rows = run.json();
    assert_eq!(rows.as_array().unwrap().len(), 7);
    assert_eq!(
        rows[6],
        serde_json::json!({"id": "here", "backend": "local", "state": "ready", "labels": {"os": "linux"}})
    );
    let human = dir
        .run(&[
            "--pool",
            pool.to_str().unwrap(),
            "devices",
            "-s",
            "os=linux",
        ])
        .stdout();
    assert!(
        human.starts_with("ID    BACKEND  STATE  LABELS\nhere  local    ready  os=linux\n"),
        "{human}"
    );
    let ops = dir.run(&["ops", "--output", "json"]).json();
    let names: Vec<&str> = ops
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    for name in ["shell", "push", "pull", "info", "reboot", "run_test"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let human = dir.run(&["ops"]).stdout();
    assert!(
        human.contains("  --param cmd=<string>  (optional) command line for the device's shell"),
        "{human}"
    );
    for cmd in [
        &["run", "--help"][..],
        &["devices", "--help"],
        &["ops", "--help"],
        &["plugins", "--help"],
        &["--help"],
    ] {
        let help = dir.run(cmd).stdout();
        assert!(help.contains("Examples:"), "{cmd:?} --help has no examples");
    }
    assert!(
        dir.run(&["run", "--help"])
            .stdout()
            .contains("130  interrupted")
    );
}

/// Ctrl-C, SIGTERM (timeout(1), CI job limits, `docker stop`) and SIGHUP each cancel the batch
/// and still give a complete document, exiting 128 + the signal's number.
#[test]
fn a_signal_yields_a_complete_document_and_its_exit_code() {
    use nix::sys::signal::Signal;
    let dir = Dir::new();
    let pool = dir.write(
        "fleet.toml",
        r#"
[[devices]]
backend = "mock"
id = "quick"
count = 4
[devices.ops.info]
result = "ok"

[[devices]]
backend = "mock"
id = "stuck"
count = 30
[devices.ops.info]
hang = true
"#,
    );
    for (signal, code) in [
        (Signal::SIGINT, 130),
        (Signal::SIGTERM, 143),
        (Signal::SIGHUP, 129),
    ] {
        let child = dir.spawn(&[
            "--pool",
            pool.to_str().unwrap(),
            "run",
            "info",
            "-j",
            "10",
            "-o",
            "json",
        ]);
        std::thread::sleep(Duration::from_millis(700));
        util::send(&child, signal);
        let out = util::exit_within(child, Duration::from_secs(5), signal.as_str());
        assert_eq!(out.status.code(), Some(code), "{signal}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let doc: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{signal}: not valid JSON ({e}): {stdout}"));
        let map = doc.as_object().unwrap();
        assert_eq!(map.len(), 34, "{signal}: every device has its outcome");
        assert_eq!(map.values().filter(|o| o["status"] == "success").count(), 4);
        let cancelled: Vec<_> = map
            .values()
            .filter(|o| o["error_kind"] == "cancelled")
            .collect();
        assert_eq!(cancelled.len(), 30, "{signal}");
        assert_eq!(
            cancelled
                .iter()
                .filter(|o| o["error"] == "cancelled")
                .count(),
            10,
            "{signal}: those running when it came"
        );
    }
}

/// A second signal exits at once, and still kills the local commands that were running: nothing
/// is left behind for a future that will never be dropped.
#[test]
fn a_second_signal_exits_at_once_and_leaves_no_local_process() {
    let dir = Dir::new();
    let mut pool = String::from("[defaults]\nconcurrency = 200\n");
    for i in 0..200 {
        pool.push_str(&format!(
            "[[devices]]\nbackend = \"local\"\nid = \"l{i}\"\n"
        ));
    }
    let pool = dir.write("fleet.toml", &pool);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let sleep = format!("sleep 987.{nanos:09}");
    let seconds = format!("987.{nanos:09}").into_bytes();
    // `sleep` processes with this run's argument (their `sh -c` parents hold the whole line).
    let running = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .filter(|c| c.split(|b| *b == 0).any(|arg| arg == seconds.as_slice()))
            .count()
    };
    let child = dir.spawn(&[
        "--pool",
        pool.to_str().unwrap(),
        "run",
        "shell",
        "--param",
        &format!("cmd={sleep}"),
        "-o",
        "json",
    ]);
    let started = Instant::now();
    while running() < 200 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the commands never all started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    util::interrupt(&child);
    // Apart enough to be two signals, soon enough to find commands still being cancelled.
    std::thread::sleep(Duration::from_millis(20));
    util::interrupt(&child);
    let out = util::exit_within(child, Duration::from_secs(5), "two SIGINTs");
    assert_eq!(out.status.code(), Some(130));
    let since = Instant::now();
    while running() > 0 && since.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(running(), 0, "commands outlived devbatch");
}

/// A signal while the pool is still loading (here: an adb server that accepts connections and
/// never answers) stops at once: nothing runs, not even the devices that were ready.
#[test]
fn a_signal_while_the_pool_loads_stops_before_anything_runs() {
    let dir = Dir::new();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let marker = dir.path().join("ran");
    let pool = dir.write(
        "fleet.toml",
        &format!(
            r#"
[[devices]]
backend = "local"

[[devices]]
backend = "adb"
server = "{}"
discover = true
"#,
            silent.local_addr().unwrap()
        ),
    );
    let child = dir.spawn(&[
        "--pool",
        pool.to_str().unwrap(),
        "run",
        "shell",
        "--param",
        &format!(
            "cmd=touch {}",
            devbatch_core::quote(marker.to_str().unwrap())
        ),
    ]);
    std::thread::sleep(Duration::from_millis(700));
    util::interrupt(&child);
    let out = util::exit_within(child, Duration::from_secs(5), "SIGINT");
    assert_eq!(out.status.code(), Some(130));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stopped while loading the pool: nothing ran"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    assert!(!marker.exists(), "the local device ran the command");
}

/// A real adb server on a private port with simulated devices connected to it, and a way to
/// run `devbatch` against it as the default adb server (`ANDROID_ADB_SERVER_PORT`).
struct AdbFarm {
    runtime: tokio::runtime::Runtime,
    server: adbd_sim::testing::AdbServer,
    sims: Vec<adbd_sim::SimHandle>,
    dir: Dir,
}

impl AdbFarm {
    fn start(configs: Vec<adbd_sim::DeviceConfig>) -> AdbFarm {
        use adbd_sim::SimDevice;
        use adbd_sim::testing::AdbServer;

        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (server, sims) = runtime.block_on(async {
            let server = AdbServer::start()
                .await
                .expect("start the adb server (apt-get install adb)");
            let mut sims = Vec::new();
            for config in configs {
                let sim = SimDevice::start(config).await.expect("simulated device");
                server.connect(&sim).await.expect("adb connect");
                sims.push(sim);
            }
            (server, sims)
        });
        AdbFarm {
            runtime,
            server,
            sims,
            dir: Dir::new(),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        let out = self
            .dir
            .command()
            .env("ANDROID_ADB_SERVER_PORT", self.server.port().to_string())
            .args(args)
            .output()
            .unwrap();
        Run(out)
    }
}

impl Drop for AdbFarm {
    fn drop(&mut self) {
        // The simulated devices stop with the runtime that serves them.
        let _guard = self.runtime.enter();
        self.sims.clear();
    }
}

/// The embedded default pool holds the devices of the default adb server: here a real adb
/// server on a private port (named by `ANDROID_ADB_SERVER_PORT`) with 20 simulated devices.
#[test]
fn default_pool_lists_the_adb_servers_devices_and_info_reads_each_ones_own_properties() {
    let farm = AdbFarm::start(
        (1..=20)
            .map(|n| {
                adbd_sim::DeviceConfig::modern(format!("farm-{n:02}"))
                    .model(format!("Sim Phone {n}"))
            })
            .collect(),
    );

    let devices = farm.run(&["devices", "--output", "json"]);
    assert_eq!(devices.code(), 0, "{}", devices.stderr());
    let rows = devices.json();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 21, "local + 20 adb devices: {rows:?}");
    assert_eq!(rows[0]["id"], "local");
    for sim in &farm.sims {
        let row = rows
            .iter()
            .find(|r| r["id"] == sim.serial().as_str())
            .unwrap_or_else(|| panic!("{} listed", sim.serial()));
        assert_eq!(row["backend"], "adb");
        assert_eq!(row["state"], "ready");
    }

    let info = farm.run(&["run", "info", "--select", "backend=adb", "--output", "json"]);
    assert_eq!(info.code(), 0, "{}", info.stderr());
    let doc = info.json();
    assert_eq!(doc.as_object().unwrap().len(), 20);
    for (n, sim) in farm.sims.iter().enumerate() {
        let outcome = &doc[sim.serial().as_str()];
        assert_eq!(outcome["status"], "success", "{outcome}");
        assert_eq!(outcome["result"]["model"], format!("Sim Phone {}", n + 1));
        assert_eq!(outcome["result"]["serialno"], format!("farm-{:02}", n + 1));
    }
}

/// `run install_app` on 20 simulated devices, one of them scripted to refuse the package: exit
/// status 1, and the human summary names that device and its failure code.
#[test]
fn install_app_on_twenty_devices_with_one_failure_names_it_in_the_summary() {
    use adbd_sim::{DeviceConfig, InstallOutcome, TestApk};

    let farm = AdbFarm::start(
        (1..=20)
            .map(|n| {
                let serial = format!("lab-{n:02}");
                // Every fourth device is an old one (pm install of a copied file).
                if n % 4 == 0 {
                    DeviceConfig::legacy(serial)
                } else {
                    DeviceConfig::modern(serial)
                }
            })
            .collect(),
    );
    farm.sims[12].set_install_outcome(InstallOutcome::failure("INSTALL_FAILED_OLDER_SDK"));
    let apk = farm.dir.join("fleet app.apk");
    std::fs::write(&apk, TestApk::new("com.example.fleet").build()).unwrap();
    let apk = apk.to_str().unwrap();

    let run = farm.run(&[
        "run",
        "install_app",
        "--param",
        &format!("app_path={apk}"),
        "--select",
        "backend=adb",
    ]);
    assert_eq!(run.code(), 1, "{}\n{}", run.stdout(), run.stderr());
    let out = run.stdout();
    // Devices are named by their adb serial: the address they were connected by.
    let failed = farm.sims[12].serial();
    let failure = out
        .lines()
        .find(|l| l.contains(&failed))
        .unwrap_or_else(|| panic!("the failed device is named:\n{out}"));
    assert!(
        failure.contains("Failure [INSTALL_FAILED_OLDER_SDK]"),
        "{failure}"
    );
    assert!(out.contains("19 succeeded"), "{out}");
    assert!(out.contains("1 failed"), "{out}");
    for (i, sim) in farm.sims.iter().enumerate() {
        assert_eq!(
            sim.is_installed("com.example.fleet"),
            i != 12,
            "{}",
            sim.serial()
        );
    }
}

#[test]
fn plugins_load_from_the_flag_the_environment_and_the_pool_file() {
    let dir = Dir::new();
    let disk_usage = util::plugin_library("devbatch_disk_usage");
    let dir_backend = util::plugin_library("devbatch_dir");
    let disk_usage_str = disk_usage.to_str().unwrap();

    // --plugin: listed, its operation in `ops`, and it runs.
    let plugins = dir.run(&["--plugin", disk_usage_str, "plugins", "--output", "json"]);
    assert_eq!(plugins.code(), 0, "{}", plugins.stderr());
    let list = plugins.json();
    assert_eq!(list[0]["name"], "disk_usage");
    assert_eq!(list[0]["operations"], serde_json::json!(["disk_usage"]));
    let ops = dir
        .run(&["--plugin", disk_usage_str, "ops", "--output", "json"])
        .json();
    assert!(
        ops.as_array()
            .unwrap()
            .iter()
            .any(|o| o["name"] == "disk_usage"),
        "{ops}"
    );
    let run = dir.run(&[
        "--plugin",
        disk_usage_str,
        "run",
        "disk_usage",
        "--output",
        "json",
    ]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let filesystems = run.json()["local"]["result"]["filesystems"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        filesystems.iter().any(|f| f["mounted_on"] == "/"),
        "{filesystems:?}"
    );

    // The pool file names the backend plugin (relative to the file); the environment adds the
    // operation plugin as a directory.
    std::fs::create_dir(dir.join("plugins")).unwrap();
    std::fs::copy(&dir_backend, dir.join("plugins/libdevbatch_dir.so")).unwrap();
    std::fs::create_dir(dir.join("env-plugins")).unwrap();
    std::fs::copy(
        &disk_usage,
        dir.join("env-plugins/libdevbatch_disk_usage.so"),
    )
    .unwrap();
    let pool = dir.write(
        "pool.toml",
        &format!(
            "plugins = [\"plugins/libdevbatch_dir.so\"]\n\n[[devices]]\nbackend = \"dir\"\nid = \"stage-1\"\nroot = \"{}\"\ncreate = true\n",
            dir.join("stage-1").display()
        ),
    );
    let run = Run(dir
        .command()
        .env("DEVBATCH_PLUGIN_PATH", dir.join("env-plugins"))
        .args([
            "--pool",
            pool.to_str().unwrap(),
            "run",
            "shell",
            "--param",
            "cmd=echo $DEVBATCH_DEVICE_ID",
            "-o",
            "json",
        ])
        .output()
        .unwrap());
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(run.json()["stage-1"]["result"]["stdout"], "stage-1\n");
    let listed = Run(dir
        .command()
        .env("DEVBATCH_PLUGIN_PATH", dir.join("env-plugins"))
        .args([
            "--pool",
            pool.to_str().unwrap(),
            "plugins",
            "--output",
            "json",
        ])
        .output()
        .unwrap())
    .json();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"dir") && names.contains(&"disk_usage"),
        "{names:?}"
    );

    // A file that is not a plugin: one line naming the path and the reason, exit 2.
    let not_a_plugin = dir.write("libfake.so", "not a library");
    let err = dir
        .run(&["--plugin", not_a_plugin.to_str().unwrap(), "ops"])
        .one_line_error(2);
    assert!(
        err.starts_with(&format!(
            "error: plugin {}: cannot be loaded as a shared library",
            not_a_plugin.display()
        )),
        "{err}"
    );
}

#[test]
fn example_pool_files_that_need_no_server_work() {
    let dir = Dir::new();
    let pools = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/pools");
    let fleet = dir.run(&[
        "--pool",
        &format!("{pools}/mock-fleet.toml"),
        "run",
        "info",
        "-o",
        "json",
    ]);
    assert_eq!(
        fleet.code(),
        1,
        "two devices of the example fleet fail on purpose: {}",
        fleet.stderr()
    );
    let doc = fleet.json();
    assert_eq!(doc.as_object().unwrap().len(), 104);
    assert_eq!(doc["unplugged-phone"]["error_kind"], "unreachable");
    assert_eq!(doc["new-phone"]["error_kind"], "not_ready");
    assert_eq!(
        doc["flaky-phone"]["status"], "success",
        "retried once by the pool's defaults"
    );
    assert_eq!(doc["flaky-phone"]["attempts"], 2);
    let local = dir.run(&[
        "--pool",
        &format!("{pools}/local.toml"),
        "run",
        "shell",
        "--param",
        "cmd=pwd",
        "-o",
        "json",
    ]);
    assert_eq!(local.code(), 0, "{}", local.stderr());
    assert_eq!(local.json()["scratch"]["result"]["stdout"], "/tmp\n");
}

/// Listing operations or plugins builds no device, so it needs no server: a pool naming an
/// adb server that is down still lists them, while `devices` says the server is down.
#[test]
fn ops_and_plugins_need_no_device_servers() {
    let dir = Dir::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let pool = dir.write(
        "fleet.toml",
        &format!("[[devices]]\nbackend = \"adb\"\nserver = \"{addr}\"\ndiscover = true\n"),
    );
    let pool = pool.to_str().unwrap();
    let ops = dir.run(&["--pool", pool, "ops"]);
    assert_eq!(ops.code(), 0, "{}", ops.stderr());
    assert!(ops.stdout().contains("install_app"), "{}", ops.stdout());
    let plugins = dir.run(&["--pool", pool, "plugins"]);
    assert_eq!(plugins.code(), 0, "{}", plugins.stderr());
    let err = dir.run(&["--pool", pool, "devices"]).one_line_error(2);
    assert!(
        err.contains(&format!("cannot reach the adb server at {addr}")),
        "{err}"
    );
}

/// The embedded default pool skips an adb server that is not there silently, but says so when
/// ANDROID_ADB_SERVER_PORT itself is wrong.
#[test]
fn a_malformed_adb_port_variable_is_reported() {
    let dir = Dir::new();
    let out = dir
        .command()
        .env("ANDROID_ADB_SERVER_PORT", "abc")
        .arg("devices")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ANDROID_ADB_SERVER_PORT must be a port number (1-65535), got \"abc\""),
        "{stderr}"
    );
}

/// Relative paths inside a pool file are relative to the file, not to where devbatch runs.
#[test]
fn relative_paths_in_a_pool_file_are_relative_to_the_file() {
    let dir = Dir::new();
    std::fs::create_dir_all(dir.join("fleet/work dir")).unwrap();
    dir.write(
        "fleet/pool.toml",
        "[[devices]]\nbackend = \"local\"\nid = \"here\"\nworkdir = \"work dir\"\n",
    );
    let run = dir.run(&[
        "--pool",
        "fleet/pool.toml",
        "run",
        "shell",
        "--param",
        "cmd=pwd",
        "-o",
        "json",
    ]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let expected = dir.join("fleet/work dir").canonicalize().unwrap();
    assert_eq!(
        run.json()["here"]["result"]["stdout"],
        format!("{}\n", expected.display())
    );
}

#[test]
fn report_paths_are_checked_before_any_device_is_touched() {
    let dir = Dir::new();
    let marker = dir.join("ran");
    let cmd = format!("cmd=touch '{}'", marker.display());
    for (flag, path) in [
        ("--report", "/nonexistent/dir/r.json"),
        ("--junit", "/nonexistent/dir/j.xml"),
    ] {
        let run = dir.run(&["run", "shell", "--param", &cmd, flag, path]);
        let err = run.one_line_error(2);
        assert!(
            err.starts_with(&format!("error: cannot write {path}: ")),
            "{err}"
        );
        assert!(
            !marker.exists(),
            "the command ran before {flag} was checked"
        );
    }
    // A report path that is a symlink is written through, not replaced.
    let target = dir.write("kept.json", "old");
    let link = dir.join("link.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let run = dir.run(&[
        "run",
        "shell",
        "--param",
        "cmd=true",
        "-q",
        "--report",
        link.to_str().unwrap(),
    ]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&target).unwrap()).unwrap();
    assert_eq!(doc["local"]["status"], "success");
}

/// A report that cannot be written once the devices have run (a full disk) does not lose the
/// results: they are still on stdout, the error says which file, and the exit code is 4.
#[test]
fn an_unwritable_report_after_the_run_keeps_the_results_on_stdout() {
    let dir = Dir::new();
    for (flag, format) in [("--report", "json"), ("--junit", "jsonl")] {
        let run = dir.run(&[
            "run",
            "shell",
            "--param",
            "cmd=echo hi",
            "-o",
            format,
            flag,
            "/dev/full",
        ]);
        assert_eq!(run.code(), 4, "{flag}: {}", run.stderr());
        assert!(
            run.stderr()
                .contains("error: cannot write /dev/full: No space left on device"),
            "{flag}: {}",
            run.stderr()
        );
        let stdout = run.stdout();
        if format == "json" {
            assert_eq!(run.json()["local"]["result"]["stdout"], "hi\n");
        } else {
            let lines: Vec<Value> = stdout
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(lines.len(), 2, "a device line and the summary: {stdout}");
            assert_eq!(lines[0]["device"], "local", "{stdout}");
        }
    }
}

/// `devbatch ... | head -1`: the reader goes away; no panic, the exit code still tells the
/// outcome, and the report file is complete.
#[test]
fn a_closed_stdout_loses_nothing_and_panics_nowhere() {
    let dir = Dir::new();
    let pool = dir.write(
        "fleet.toml",
        "[[devices]]\nbackend = \"mock\"\nid = \"m\"\ncount = 3000\n[devices.ops.info]\nresult = \"ok\"\n",
    );
    let report = dir.join("r.json");
    for args in [
        vec!["run", "info", "--report", report.to_str().unwrap()],
        vec!["devices"],
        vec!["ops"],
    ] {
        let _ = std::fs::remove_file(&report);
        let mut child = dir.spawn(&[&["--pool", pool.to_str().unwrap()][..], &args].concat());
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        if args[0] == "run" {
            let doc: Value =
                serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
            assert_eq!(doc.as_object().unwrap().len(), 3000);
        }
    }
}

#[test]
fn device_text_cannot_drive_the_terminal_and_panics_stay_in_the_report() {
    let dir = Dir::new();
    let pool = dir.write(
        "fleet.toml",
        r#"
[[devices]]
backend = "mock"
id = "evil"
labels = { note = "a\u001b]0;owned\u0007b" }
[devices.ops.info]
error = { kind = "failed", message = "line one\nline two \u001b[31mred\u0000" }

[[devices]]
backend = "mock"
id = "crashy"
[devices.ops.info]
panic = "boom"
"#,
    );
    let pool = pool.to_str().unwrap();
    let run = dir.run(&["--pool", pool, "run", "info"]);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let out = run.stdout();
    assert!(!out.contains('\u{1b}') && !out.contains('\0'), "{out:?}");
    assert!(
        out.contains("evil [failed] line one\\nline two \\u{1b}[31mred\\u{0}"),
        "{out}"
    );
    assert!(out.contains("crashy [panicked] "), "{out}");
    // The engine reported the panic; the panic message is not printed over the report.
    assert!(!run.stderr().contains("panicked at"), "{}", run.stderr());
    let devices = dir.run(&["--pool", pool, "devices"]);
    assert_eq!(devices.code(), 0, "{}", devices.stderr());
    assert!(
        devices.stdout().contains("note=a\\u{1b}]0;owned\\u{7}b"),
        "{}",
        devices.stdout()
    );
    // Logs to a file or pipe carry no colour codes.
    let verbose = dir.run(&["--pool", pool, "-vv", "run", "info", "-d", "crashy"]);
    assert!(verbose.stderr().contains("DEBUG"), "{}", verbose.stderr());
    assert!(
        !verbose.stderr().contains('\u{1b}'),
        "{:?}",
        verbose.stderr()
    );
}

#[test]
fn device_selection_mistakes_are_usage_errors() {
    let dir = Dir::new();
    let pool = dir.write(
        "fleet.toml",
        "[[devices]]\nbackend = \"mock\"\nid = \"m\"\ncount = 2\n",
    );
    let pool = pool.to_str().unwrap();
    let err = dir
        .run(&["--pool", pool, "run", "info", "-d", " , "])
        .one_line_error(2);
    assert_eq!(
        err,
        "error: --devices: no device id given (expected ID[,ID...])"
    );
    let err = dir
        .run(&["--pool", pool, "devices", "-d", "m-001,nosuch"])
        .one_line_error(2);
    assert!(err.contains("nosuch"), "{err}");
    let listed = dir.run(&["--pool", pool, "devices", "-d", "m-002", "-o", "json"]);
    assert_eq!(listed.code(), 0);
    assert_eq!(listed.json().as_array().unwrap().len(), 1);
    // An empty $DEVBATCH_POOL is unset: the embedded default pool is used.
    let run = dir
        .command()
        .env("DEVBATCH_POOL", "")
        .args(["devices", "-o", "json"])
        .output()
        .unwrap();
    let run = Run(run);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(run.json()[0]["id"], "local");
}

#[path = "../crates/devbatch-ssh/tests/common/mod.rs"]
mod sshd;

/// A command that outlives its timeout, or a Ctrl-C, on an SSH device: by the time
/// `devbatch` has exited, the remote process is gone.
#[test]
fn remote_processes_do_not_outlive_the_cli_run() {
    let server = sshd::Sshd::start(sshd::SshdOptions {
        addrs: vec!["127.0.0.93".into()],
        ..Default::default()
    });
    let dir = Dir::new();
    let mut entry = toml::Table::new();
    entry.insert("backend".into(), "ssh".into());
    entry.insert("id".into(), "board".into());
    for (k, v) in server.settings("127.0.0.93") {
        entry.insert(k, toml::Value::try_from(v).unwrap());
    }
    let mut pool = toml::Table::new();
    pool.insert(
        "devices".into(),
        toml::Value::Array(vec![toml::Value::Table(entry)]),
    );
    let pool = dir.write("fleet.toml", &toml::to_string(&pool).unwrap());
    let pidfile = dir.join("pid");
    let cmd = format!("cmd=echo $$ > '{}'; sleep 300", pidfile.display());
    let read_pid = || -> u32 {
        let text = std::fs::read_to_string(&pidfile).unwrap_or_default();
        text.trim().parse().unwrap_or(0)
    };

    let run = dir.run(&[
        "--pool",
        pool.to_str().unwrap(),
        "run",
        "shell",
        "--param",
        &cmd,
        "--timeout",
        "2s",
        "-o",
        "json",
    ]);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    assert_eq!(run.json()["board"]["error_kind"], "timeout");
    let pid = read_pid();
    assert!(pid > 0, "the command did not start");
    assert!(
        !sshd::alive(pid),
        "the remote command (pid {pid}) outlived the run that timed it out"
    );

    std::fs::remove_file(&pidfile).unwrap();
    let child = dir.spawn(&[
        "--pool",
        pool.to_str().unwrap(),
        "run",
        "shell",
        "--param",
        &cmd,
        "-o",
        "json",
    ]);
    let started = Instant::now();
    while read_pid() == 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    util::interrupt(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let pid = read_pid();
    assert!(
        !sshd::alive(pid),
        "the remote command (pid {pid}) outlived the interrupted run"
    );
}

/// A reader of stderr that went away (`2>&1 | head -1`) stops neither the run nor its report,
/// and the exit code is still the documented one.
#[test]
fn a_closed_stderr_stops_nothing() {
    let dir = Dir::new();
    let marker = dir.join("ran");
    let report = dir.join("r.json");
    let cmd = format!("cmd=touch '{}'", marker.display());
    let cases: [(Vec<&str>, i32); 2] = [
        (
            vec![
                "-vv",
                "run",
                "shell",
                "--param",
                &cmd,
                "--report",
                report.to_str().unwrap(),
            ],
            0,
        ),
        (vec!["--pool", "/nonexistent/fleet.toml", "devices"], 2),
    ];
    for (args, code) in cases {
        let mut child = dir
            .command()
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stderr.take());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "{args:?}");
    }
    assert!(marker.exists(), "the command ran");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(doc["local"]["status"], "success");
}

#[test]
fn output_and_plugin_paths_that_cannot_work_are_refused_up_front() {
    let dir = Dir::new();
    let same = dir.join("out.xml");
    let same = same.to_str().unwrap();
    let err = dir
        .run(&[
            "run", "shell", "--param", "cmd=true", "--report", same, "--junit", same,
        ])
        .one_line_error(2);
    assert_eq!(
        err,
        format!("error: --report and --junit both name {same}: give each its own file")
    );
    let folder = dir.join("plugins");
    std::fs::create_dir(&folder).unwrap();
    let err = dir
        .run(&["--plugin", folder.to_str().unwrap(), "plugins"])
        .one_line_error(2);
    assert_eq!(
        err,
        format!(
            "error: --plugin {}: it is a folder, not a library (put folders in $DEVBATCH_PLUGIN_PATH, which loads every library in them)",
            folder.display()
        )
    );
}
