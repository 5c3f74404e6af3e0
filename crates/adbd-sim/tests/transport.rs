//! The transport protocol spoken straight to a simulated device (no adb server): handshake, payload
//! limits, flow control and refusals, checked byte by byte.

use adbd_sim::{DeviceConfig, Fault, SimDevice};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn msg(cmd: &[u8; 4], arg0: u32, arg1: u32, payload: &[u8]) -> Vec<u8> {
    let cmd = u32::from_le_bytes(*cmd);
    let sum = payload.iter().map(|b| u32::from(*b)).sum::<u32>();
    let mut out = Vec::new();
    for w in [
        cmd,
        arg0,
        arg1,
        payload.len() as u32,
        sum,
        cmd ^ 0xFFFF_FFFF,
    ] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(payload);
    out
}

async fn read_msg(sock: &mut TcpStream) -> ([u8; 4], u32, u32, Vec<u8>) {
    let mut h = [0u8; 24];
    sock.read_exact(&mut h).await.unwrap();
    let w = |i: usize| u32::from_le_bytes(h[i * 4..i * 4 + 4].try_into().unwrap());
    assert_eq!(w(5), w(0) ^ 0xFFFF_FFFF, "magic");
    let mut payload = vec![0u8; w(3) as usize];
    sock.read_exact(&mut payload).await.unwrap();
    assert_eq!(
        w(4),
        payload.iter().map(|b| u32::from(*b)).sum::<u32>(),
        "checksum"
    );
    (h[0..4].try_into().unwrap(), w(1), w(2), payload)
}

const HOST_BANNER: &[u8] = b"host::features=shell_v2,cmd,stat_v2";

#[tokio::test]
async fn handshake_payload_limit_flow_control_and_refusal() {
    let dev = SimDevice::start(DeviceConfig::modern("raw").model("RawModel"))
        .await
        .unwrap();
    let mut sock = TcpStream::connect(dev.addr()).await.unwrap();
    sock.write_all(&msg(b"CNXN", 0x0100_0001, 4096, HOST_BANNER))
        .await
        .unwrap();
    let (cmd, version, max, banner) = read_msg(&mut sock).await;
    assert_eq!(&cmd, b"CNXN");
    assert_eq!((version, max), (0x0100_0001, 1024 * 1024));
    let banner = String::from_utf8(banner).unwrap();
    assert!(banner.starts_with("device::ro.product.name=sim_phone;ro.product.model=RawModel;ro.product.device=simdev;features=shell_v2,"), "{banner}");

    // 10 000 bytes of output must come in WRTEs of at most the host's 4096, one at a time.
    sock.write_all(&msg(
        b"OPEN",
        77,
        0,
        b"shell,v2,raw:head -c 10000 /dev/zero\0",
    ))
    .await
    .unwrap();
    let (cmd, local, remote, _) = read_msg(&mut sock).await;
    assert_eq!((&cmd, remote), (b"OKAY", 77));
    sock.write_all(&msg(b"WRTE", 77, local, &[4, 0, 0, 0, 0]))
        .await
        .unwrap(); // close stdin
    let mut stream = Vec::new();
    let mut acked_our_write = false;
    loop {
        let (cmd, a0, a1, payload) = read_msg(&mut sock).await;
        assert_eq!((a0, a1), (local, 77));
        match &cmd {
            b"OKAY" => acked_our_write = true,
            b"WRTE" => {
                assert!(payload.len() <= 4096, "WRTE of {} bytes", payload.len());
                if stream.is_empty() {
                    // Before our OKAY, no second WRTE may come (our stdin WRTE's OKAY may).
                    let quiet = tokio::time::Duration::from_millis(300);
                    while let Ok((cmd, ..)) = tokio::time::timeout(quiet, read_msg(&mut sock)).await
                    {
                        assert_eq!(&cmd, b"OKAY", "a second WRTE came before the host's OKAY");
                        acked_our_write = true;
                    }
                }
                stream.extend_from_slice(&payload);
                sock.write_all(&msg(b"OKAY", 77, local, b"")).await.unwrap();
            }
            b"CLSE" => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        acked_our_write,
        "the device never acknowledged the host's WRTE"
    );
    // Reassemble the shell-v2 packets.
    let (mut stdout, mut exit) = (0usize, None);
    let mut rest = &stream[..];
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest[1..5].try_into().unwrap()) as usize;
        match rest[0] {
            1 => stdout += len,
            3 => exit = Some(rest[5]),
            id => panic!("packet id {id}"),
        }
        rest = &rest[5 + len..];
    }
    assert_eq!((stdout, exit), (10_000, Some(0)));

    // An unknown service is refused with CLSE(0, host id).
    sock.write_all(&msg(b"OPEN", 78, 0, b"jdwp:1\0"))
        .await
        .unwrap();
    let (cmd, a0, a1, _) = read_msg(&mut sock).await;
    assert_eq!((&cmd, a0, a1), (b"CLSE", 0, 78));
}

#[tokio::test]
async fn unauthorized_devices_answer_with_auth_tokens_only() {
    let dev = SimDevice::start(DeviceConfig::legacy("locked").fault(Fault::Unauthorized))
        .await
        .unwrap();
    let mut sock = TcpStream::connect(dev.addr()).await.unwrap();
    sock.write_all(&msg(b"CNXN", 0x0100_0000, 4096, HOST_BANNER))
        .await
        .unwrap();
    let (cmd, kind, _, token) = read_msg(&mut sock).await;
    assert_eq!((&cmd, kind, token.len()), (b"AUTH", 1, 20));
    // A signature is never good enough: another token comes back.
    sock.write_all(&msg(b"AUTH", 2, 0, &[0u8; 256]))
        .await
        .unwrap();
    let (cmd, kind, _, _) = read_msg(&mut sock).await;
    assert_eq!((&cmd, kind), (b"AUTH", 1));
    // The public key leaves the "prompt" pending: silence.
    sock.write_all(&msg(b"AUTH", 3, 0, b"QAAAAfake user@host\0"))
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let silent =
        tokio::time::timeout(std::time::Duration::from_millis(500), sock.read(&mut byte)).await;
    assert!(silent.is_err(), "the device answered: {silent:?}");
}

#[tokio::test]
async fn a_bad_magic_drops_the_link() {
    let dev = SimDevice::start(DeviceConfig::modern("strict"))
        .await
        .unwrap();
    let mut sock = TcpStream::connect(dev.addr()).await.unwrap();
    let mut bad = msg(b"CNXN", 0x0100_0001, 4096, HOST_BANNER);
    bad[20] ^= 0xFF;
    sock.write_all(&bad).await.unwrap();
    let mut buf = [0u8; 24];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), sock.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "expected the link to close");
}

#[tokio::test]
async fn sandboxes_of_dead_simulators_are_swept_and_live_ones_kept() {
    let dead = tempfile::Builder::new()
        .prefix("adbd-sim-")
        .tempdir()
        .unwrap()
        .keep();
    std::fs::write(dead.join("owner.pid"), "4194305").unwrap(); // above the kernel's pid limit: never alive
    let live = tempfile::Builder::new()
        .prefix("adbd-sim-")
        .tempdir()
        .unwrap();
    std::fs::write(
        live.path().join("owner.pid"),
        std::process::id().to_string(),
    )
    .unwrap();
    let _dev = SimDevice::start(DeviceConfig::modern("sweeper"))
        .await
        .unwrap();
    assert!(!dead.exists(), "{} was not swept", dead.display());
    assert!(live.path().exists());
}
