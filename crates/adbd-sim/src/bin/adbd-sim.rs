//! `adbd-sim`: serve N simulated Android devices on N TCP ports ("a device farm in a box").
//!
//! ```text
//! adbd-sim --devices 20 --legacy 2 --connect-to-adb 5037
//! ```
//! prints one line per device (`SERIAL<TAB>PORT<TAB>MODEL<TAB>KIND<TAB>SANDBOX`) and serves until Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use adbd_sim::{DeviceConfig, Fault, SimDevice, SimHandle};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serve simulated Android devices (the adbd side of the ADB transport protocol) on loopback TCP ports.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// How many devices to serve in total.
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// How many of them are legacy (Android 6, no shell_v2/cmd/abb_exec/stat_v2); they come last.
    #[arg(long, default_value_t = 0)]
    legacy: usize,
    /// First port to use (the devices take consecutive ports); default: free ports chosen by the system.
    /// Ports 5555-5585 are refused: the adb server probes them for emulators.
    #[arg(long)]
    base_port: Option<u16>,
    /// `adb connect` every device to the adb server on this local port and wait until each is `device`.
    #[arg(long, value_name = "PORT")]
    connect_to_adb: Option<u16>,
    /// Prefix of the devices' own serials (`ro.serialno`): PREFIX-0001, PREFIX-0002, ...
    #[arg(long, default_value = "sim")]
    serial_prefix: String,
    /// Make device number N (1-based) play a fault: `N=hang`, `N=unauthorized`, `N=offline`,
    /// `N=slow:BYTES_PER_SEC`, `N=drop:BYTES`. Repeatable.
    #[arg(long, value_name = "N=FAULT")]
    fault: Vec<String>,
}

fn parse_fault(text: &str) -> Result<(usize, Fault), String> {
    let (n, fault) = text.split_once('=').ok_or_else(|| format!("--fault {text:?}: expected N=FAULT"))?;
    let n: usize = n.parse().map_err(|_| format!("--fault {text:?}: {n:?} is not a device number"))?;
    let fault = match fault.split_once(':') {
        None if fault == "hang" => Fault::Hang,
        None if fault == "unauthorized" => Fault::Unauthorized,
        None if fault == "offline" => Fault::NeverAnswer,
        None if fault == "close" => Fault::CloseImmediately,
        Some(("slow", v)) => Fault::SlowLink(v.parse().map_err(|_| format!("--fault {text:?}: bad rate {v:?}"))?),
        Some(("drop", v)) => {
            Fault::DropAfterBytes(v.parse().map_err(|_| format!("--fault {text:?}: bad byte count {v:?}"))?)
        }
        _ => {
            return Err(format!(
                "--fault {text:?}: unknown fault {fault:?} (hang, unauthorized, offline, close, slow:N, drop:N)"
            ));
        }
    };
    Ok((n, fault))
}

async fn host_connect(adb_port: u16, addr: &str) -> std::io::Result<String> {
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", adb_port)).await?;
    let request = format!("host:connect:{addr}");
    sock.write_all(format!("{:04x}{request}", request.len()).as_bytes()).await?;
    let mut reply = Vec::new();
    sock.read_to_end(&mut reply).await?;
    Ok(String::from_utf8_lossy(reply.get(8..).unwrap_or_default()).into_owned())
}

async fn run(args: Args) -> Result<Vec<SimHandle>, String> {
    if args.legacy > args.devices {
        return Err(format!("--legacy {} is more than --devices {}", args.legacy, args.devices));
    }
    let mut faults = std::collections::HashMap::new();
    for text in &args.fault {
        let (n, fault) = parse_fault(text)?;
        if n == 0 || n > args.devices {
            return Err(format!("--fault {text:?}: there is no device {n} (1..={})", args.devices));
        }
        faults.insert(n, fault);
    }
    let mut handles = Vec::with_capacity(args.devices);
    for i in 1..=args.devices {
        let serial = format!("{}-{i:04}", args.serial_prefix);
        let legacy = i > args.devices - args.legacy;
        let mut config = if legacy { DeviceConfig::legacy(&serial) } else { DeviceConfig::modern(&serial) };
        config = config.model(format!("{}_{i}", if legacy { "SimLegacy" } else { "SimPhone" }));
        if let Some(base) = args.base_port {
            let port = u32::from(base) + (i as u32 - 1);
            if (5555..=5585).contains(&port) || port > 65535 {
                return Err(format!("port {port} is not usable (5555-5585 belong to emulators)"));
            }
            config = config.listen(SocketAddr::from(([127, 0, 0, 1], port as u16)));
        }
        if let Some(fault) = faults.get(&i) {
            config = config.fault(*fault);
        }
        let handle = SimDevice::start(config).await.map_err(|e| format!("cannot start device {serial}: {e}"))?;
        println!(
            "{}\t{}\t{}\t{}\t{}",
            handle.serial(),
            handle.port(),
            handle.prop("ro.product.model").unwrap_or_default(),
            if legacy { "legacy" } else { "modern" },
            handle.root().display()
        );
        handles.push(handle);
    }
    if let Some(adb_port) = args.connect_to_adb {
        for handle in &handles {
            let reply = host_connect(adb_port, &handle.serial())
                .await
                .map_err(|e| format!("cannot reach the adb server on port {adb_port}: {e}"))?;
            eprintln!("{reply}");
        }
    }
    Ok(handles)
}

#[tokio::main]
async fn main() {
    tracing_subscriber_init();
    let args = Args::parse();
    match run(args).await {
        Ok(handles) => {
            eprintln!("adbd-sim: serving {} device(s); Ctrl-C to stop", handles.len());
            let _ = tokio::signal::ctrl_c().await;
            drop(handles);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(err) => {
            eprintln!("adbd-sim: {err}");
            std::process::exit(2);
        }
    }
}

/// Logs go to stderr when `RUST_LOG` asks for them.
fn tracing_subscriber_init() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    }
}
