//! The wire formats, as pure functions and small decoders with no I/O, so that every framing
//! rule is unit-tested on its own: host requests (`<hex4><payload>`), the `host:devices-l`
//! listing, shell protocol v2 packets, the legacy shell's exit-code marker, and sync frames.

use crate::error::AdbError;

/// The largest request payload hex4 can express.
pub(crate) const MAX_REQUEST: usize = 0xFFFF;

/// The largest DATA chunk a sync message may carry (adbd answers `FAIL oversize data message`
/// past it).
pub(crate) const SYNC_DATA_MAX: usize = 64 * 1024;

/// The longest remote path the sync service accepts.
pub(crate) const SYNC_PATH_MAX: usize = 1024;

/// A request to the adb server: four hex digits giving the payload length, then the payload.
pub(crate) fn encode_request(payload: &str) -> Result<Vec<u8>, AdbError> {
    if payload.len() > MAX_REQUEST {
        return Err(AdbError::InvalidInput(format!(
            "the request is {} bytes long; the adb protocol allows at most {MAX_REQUEST}",
            payload.len()
        )));
    }
    let mut out = format!("{:04x}", payload.len()).into_bytes();
    out.extend_from_slice(payload.as_bytes());
    Ok(out)
}

/// Reads a hex4 length.
pub(crate) fn parse_hex4(raw: &[u8; 4]) -> Result<usize, AdbError> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| usize::from_str_radix(s, 16).ok())
        .ok_or_else(|| {
            AdbError::Protocol(format!(
                "expected a 4-digit hex length, got {:?}",
                String::from_utf8_lossy(raw)
            ))
        })
}

/// One line of `host:devices-l`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedDevice {
    /// The serial exactly as listed (may hold `:`, `-`, spaces and parentheses).
    pub serial: String,
    /// The state: `device`, `offline`, `unauthorized`, `no permissions (...)`, ...
    pub state: String,
    /// The server's transport id, when listed.
    pub transport_id: Option<u64>,
    /// `product:`, `model:`, `device:`, `usb:` and any other `key:value` fields.
    pub fields: Vec<(String, String)>,
}

impl ListedDevice {
    /// A `key:value` field of the listing.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The keys of the `key:value` fields the server appends to a devices-l line.
const LISTING_KEYS: &[&str] = &[
    "usb",
    "product",
    "model",
    "device",
    "transport_id",
    "features",
];

/// Parses the body of `host:devices-l` (or `host:devices`).
///
/// The server pads the serial to 22 columns, but serials may hold spaces and one state (`no
/// permissions (...)`) does too, so the line is read from the right: trailing `key:value`
/// fields first, then the state, and the serial is everything before it.
pub fn parse_devices_l(body: &str) -> Vec<ListedDevice> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(parse_devices_line)
        .collect()
}

fn parse_devices_line(line: &str) -> Option<ListedDevice> {
    // `host:devices` separates serial and state with one tab, and serials may hold spaces.
    if let Some((serial, state)) = line.split_once('\t') {
        return Some(ListedDevice {
            serial: serial.to_string(),
            state: state.trim().to_string(),
            transport_id: None,
            fields: Vec::new(),
        });
    }
    let line = line.trim_end();
    // Token spans, whitespace-separated.
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, line.len()));
    }
    let mut fields = Vec::new();
    while spans.len() > 2 {
        let (s, e) = *spans.last()?;
        let tok = &line[s..e];
        match tok.split_once(':') {
            Some((k, v)) if LISTING_KEYS.contains(&k) => {
                fields.push((k.to_string(), v.to_string()));
                spans.pop();
            }
            _ => break,
        }
    }
    fields.reverse();
    if spans.len() < 2 {
        return None;
    }
    let rest_end = spans.last()?.1;
    let rest = &line[..rest_end];
    // The multi-word state: `no permissions` up to the end of what is left.
    let (serial, state) = match rest.find(" no permissions") {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => {
            let (s, _) = *spans.last()?;
            (&rest[..s], &rest[s..])
        }
    };
    let serial = serial.trim_end();
    if serial.is_empty() {
        return None;
    }
    let transport_id = fields
        .iter()
        .find(|(k, _)| k == "transport_id")
        .and_then(|(_, v)| v.parse().ok());
    Some(ListedDevice {
        serial: serial.to_string(),
        state: state.trim().to_string(),
        transport_id,
        fields,
    })
}

/// What `host:connect` answered (always inside an `OKAY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConnectReply {
    /// `connected to H:P` or `already connected to H:P`.
    Connected,
    /// `failed to authenticate to H:P`: the device waits for the user to accept the key.
    Unauthorized(String),
    /// Anything else: `failed to connect ...`, `unable to connect ...`.
    Failed(String),
}

pub(crate) fn parse_connect_reply(text: &str) -> ConnectReply {
    let text = text.trim();
    if text.starts_with("connected to") || text.starts_with("already connected to") {
        ConnectReply::Connected
    } else if text.starts_with("failed to authenticate") {
        ConnectReply::Unauthorized(text.to_string())
    } else {
        ConnectReply::Failed(text.to_string())
    }
}

/// Shell protocol v2 packet ids.
pub(crate) mod shell_id {
    pub(crate) const STDIN: u8 = 0;
    pub(crate) const STDOUT: u8 = 1;
    pub(crate) const STDERR: u8 = 2;
    pub(crate) const EXIT: u8 = 3;
    pub(crate) const CLOSE_STDIN: u8 = 4;
}

/// One shell protocol v2 packet.
pub(crate) fn encode_shell_packet(id: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + data.len());
    out.push(id);
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// A decoded shell protocol v2 packet from the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ShellPacket {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(u8),
}

/// Packets larger than this are taken as a corrupt stream (adbd sends at most its maxdata).
const SHELL_PACKET_MAX: usize = 16 * 1024 * 1024;

/// Reassembles shell v2 packets from a byte stream whose reads do not line up with packets.
#[derive(Debug, Default)]
pub(crate) struct ShellV2Decoder {
    buf: Vec<u8>,
}

impl ShellV2Decoder {
    pub(crate) fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete packet, if one has arrived. Unknown ids (window size echoes and the
    /// like) are skipped.
    pub(crate) fn next_packet(&mut self) -> Result<Option<ShellPacket>, AdbError> {
        loop {
            if self.buf.len() < 5 {
                return Ok(None);
            }
            let len =
                u32::from_le_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
            if len > SHELL_PACKET_MAX {
                return Err(AdbError::Protocol(format!(
                    "shell protocol packet of {len} bytes (id {})",
                    self.buf[0]
                )));
            }
            if self.buf.len() < 5 + len {
                return Ok(None);
            }
            let id = self.buf[0];
            let payload: Vec<u8> = self.buf[5..5 + len].to_vec();
            self.buf.drain(..5 + len);
            match id {
                shell_id::STDOUT => return Ok(Some(ShellPacket::Stdout(payload))),
                shell_id::STDERR => return Ok(Some(ShellPacket::Stderr(payload))),
                shell_id::EXIT => {
                    let code = *payload.first().ok_or_else(|| {
                        AdbError::Protocol("shell protocol exit packet without a status".into())
                    })?;
                    return Ok(Some(ShellPacket::Exit(code)));
                }
                _ => continue,
            }
        }
    }
}

/// Strips the exit-code marker that the legacy `shell:` service needs (it has no exit status)
/// and undoes the pty's `\r\n`, while output streams through.
///
/// The command is sent as `sh -c 'CMD'; echo "<marker>$?"`, the line quoted whole, so nothing
/// in it (a stray `)`, an open quote, a trailing backslash) can break the wrapper: a syntax
/// error is the inner shell's, with its message and status 2, as with shell protocol v2. The
/// decoder holds back the last few bytes of the stream (enough for the marker, a status and a
/// line end) so the marker never reaches the output, whatever the read boundaries.
#[derive(Debug)]
pub(crate) struct LegacyDecoder {
    marker: Vec<u8>,
    pending: Vec<u8>,
}

impl LegacyDecoder {
    /// A decoder with a fresh random marker.
    pub(crate) fn new() -> Self {
        let marker = format!("__devbatch_rc_{:016x}=", fastrand::u64(..));
        Self::with_marker(marker)
    }

    pub(crate) fn with_marker(marker: String) -> Self {
        LegacyDecoder {
            marker: marker.into_bytes(),
            pending: Vec::new(),
        }
    }

    /// The command line to send: runs `line` in a shell of its own (`sh -c`, as shell
    /// protocol v2 does), then prints the marker and `$?`.
    pub(crate) fn wrap(&self, line: &str) -> String {
        let marker = String::from_utf8_lossy(&self.marker);
        format!("sh -c {}; echo \"{marker}$?\"", devbatch_core::quote(line))
    }

    fn hold_back(&self) -> usize {
        self.marker.len() + "255\r\n".len()
    }

    /// Feeds bytes; returns the output that can no longer be part of the marker, with `\r\n`
    /// turned into `\n`.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(data);
        let mut emit = self.pending.len().saturating_sub(self.hold_back());
        // Keep a trailing `\r` back: its `\n` may come with the next read.
        while emit > 0 && self.pending[emit - 1] == b'\r' {
            emit -= 1;
        }
        let out = crlf_to_lf(&self.pending[..emit]);
        self.pending.drain(..emit);
        out
    }

    /// At the end of the stream: the rest of the output and the exit status, or `None` when
    /// the marker never came (the command did not finish).
    pub(crate) fn finish(self) -> Option<(Vec<u8>, i32)> {
        let pos = find_last(&self.pending, &self.marker)?;
        let tail = &self.pending[pos + self.marker.len()..];
        let digits: Vec<u8> = tail
            .iter()
            .copied()
            .take_while(u8::is_ascii_digit)
            .collect();
        let rest = &tail[digits.len()..];
        if digits.is_empty() || !(rest == b"\n" || rest == b"\r\n") {
            return None;
        }
        let code = std::str::from_utf8(&digits).ok()?.parse().ok()?;
        Some((crlf_to_lf(&self.pending[..pos]), code))
    }
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() > hay.len() {
        return None;
    }
    (0..=hay.len() - needle.len())
        .rev()
        .find(|&i| &hay[i..i + needle.len()] == needle)
}

fn crlf_to_lf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\r' && data.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

/// A sync message header: four-letter id and a little-endian u32.
pub(crate) fn sync_header(id: &[u8; 4], value: u32) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(id);
    out[4..].copy_from_slice(&value.to_le_bytes());
    out
}

/// A sync request carrying a path (or `path,mode` for SEND).
pub(crate) fn sync_path_request(id: &[u8; 4], path: &str) -> Result<Vec<u8>, AdbError> {
    if path.len() > SYNC_PATH_MAX {
        return Err(AdbError::InvalidInput(format!(
            "remote path is {} bytes long; adb allows at most {SYNC_PATH_MAX}: {path}",
            path.len()
        )));
    }
    let mut out = sync_header(id, path.len() as u32).to_vec();
    out.extend_from_slice(path.as_bytes());
    Ok(out)
}

/// What STAT / STA2 / LST2 / DENT / DNT2 say about a remote path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RemoteStat {
    pub(crate) mode: u32,
    pub(crate) size: u64,
    pub(crate) mtime: i64,
}

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

impl RemoteStat {
    pub(crate) fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
    pub(crate) fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }
    pub(crate) fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// The 12 bytes after a `STAT` (or `DENT`) id: mode, size, mtime. All zero means missing.
pub(crate) fn parse_stat_v1(b: &[u8; 12]) -> Option<RemoteStat> {
    let st = RemoteStat {
        mode: u32_at(b, 0),
        size: u64::from(u32_at(b, 4)),
        mtime: i64::from(u32_at(b, 8)),
    };
    (st.mode != 0 || st.size != 0 || st.mtime != 0).then_some(st)
}

/// Size of the stat_v2 body after the id.
pub(crate) const STAT_V2_LEN: usize = 68;

/// The 68 bytes after a `STA2`/`LST2`/`DNT2` id; `Err(errno)` when the device reports one.
pub(crate) fn parse_stat_v2(b: &[u8; STAT_V2_LEN]) -> Result<RemoteStat, u32> {
    // error:u32 dev:u64 ino:u64 mode:u32 nlink:u32 uid:u32 gid:u32 size:u64 atime mtime ctime
    let error = u32_at(b, 0);
    if error != 0 {
        return Err(error);
    }
    Ok(RemoteStat {
        mode: u32_at(b, 20),
        size: u64_at(b, 36),
        mtime: u64_at(b, 52) as i64,
    })
}

/// Text for an errno a device reports in a stat_v2 reply.
pub(crate) fn errno_text(errno: u32) -> String {
    match errno {
        1 => "operation not permitted".into(),
        2 => "no such file or directory".into(),
        13 => "permission denied".into(),
        20 => "not a directory".into(),
        other => format!("errno {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_hex4_framed() {
        assert_eq!(encode_request("host:version").unwrap(), b"000chost:version");
        assert_eq!(parse_hex4(b"0068").unwrap(), 0x68);
        assert_eq!(parse_hex4(b"00FF").unwrap(), 255);
        assert!(parse_hex4(b"zzzz").is_err());
        let long = "x".repeat(MAX_REQUEST + 1);
        let err = encode_request(&long).unwrap_err();
        assert!(err.to_string().contains("at most 65535"), "{err}");
        assert_eq!(
            &encode_request(&"y".repeat(MAX_REQUEST)).unwrap()[..4],
            b"ffff"
        );
    }

    #[test]
    fn devices_l_lines_are_read_from_the_right() {
        let body = "127.0.0.1:6100         device product:sim_phone model:SimPhone_0 device:simdev transport_id:1\n\
                    127.0.0.1:6503         offline transport_id:32\n\
                    emulator-5554          unauthorized transport_id:4\n\
                    my phone (work)        device usb:1-1 product:p model:M_X device:d transport_id:7\n\
                    0123456789ABCDEF       no permissions (user in plugdev group; are your udev rules wrong?); see [http://developer.android.com/tools/device.html] usb:1-2 transport_id:9\n";
        let list = parse_devices_l(body);
        assert_eq!(list.len(), 5);
        assert_eq!(list[0].serial, "127.0.0.1:6100");
        assert_eq!(list[0].state, "device");
        assert_eq!(list[0].transport_id, Some(1));
        assert_eq!(list[0].field("model"), Some("SimPhone_0"));
        assert_eq!(list[0].field("device"), Some("simdev"));
        assert_eq!(list[1].state, "offline");
        assert_eq!(list[1].transport_id, Some(32));
        assert_eq!(list[2].serial, "emulator-5554");
        assert_eq!(list[2].state, "unauthorized");
        assert_eq!(list[3].serial, "my phone (work)");
        assert_eq!(list[3].state, "device");
        assert_eq!(list[3].field("usb"), Some("1-1"));
        assert_eq!(list[4].serial, "0123456789ABCDEF");
        assert!(
            list[4]
                .state
                .starts_with("no permissions (user in plugdev group;"),
            "{}",
            list[4].state
        );
        assert!(list[4].state.ends_with("device.html]"), "{}", list[4].state);
        assert_eq!(list[4].transport_id, Some(9));
    }

    #[test]
    fn devices_l_keeps_duplicates_and_reads_plain_listing() {
        let body = "dup                    device transport_id:3\ndup                    device transport_id:5\n";
        let list = parse_devices_l(body);
        assert_eq!(list.len(), 2);
        assert_eq!(
            (list[0].transport_id, list[1].transport_id),
            (Some(3), Some(5))
        );
        let plain = parse_devices_l("a b\tdevice\n127.0.0.1:5\toffline\n");
        assert_eq!(plain[0].serial, "a b");
        assert_eq!(plain[1].state, "offline");
        assert!(parse_devices_l("").is_empty());
    }

    #[test]
    fn connect_replies_are_classified() {
        assert_eq!(
            parse_connect_reply("connected to 127.0.0.1:6100"),
            ConnectReply::Connected
        );
        assert_eq!(
            parse_connect_reply("already connected to 127.0.0.1:6100"),
            ConnectReply::Connected
        );
        assert!(matches!(
            parse_connect_reply("failed to authenticate to 127.0.0.1:6100"),
            ConnectReply::Unauthorized(_)
        ));
        assert!(matches!(
            parse_connect_reply("failed to connect to '127.0.0.1:1': Connection refused"),
            ConnectReply::Failed(t) if t.contains("Connection refused")
        ));
    }

    #[test]
    fn shell_v2_packets_are_reassembled_across_reads() {
        let mut stream = encode_shell_packet(shell_id::STDOUT, b"hello ");
        stream.extend(encode_shell_packet(shell_id::STDERR, b"oops"));
        stream.extend(encode_shell_packet(5, b"24x80,0x0"));
        stream.extend(encode_shell_packet(shell_id::STDOUT, b"world\n"));
        stream.extend(encode_shell_packet(shell_id::EXIT, &[42]));
        let mut dec = ShellV2Decoder::default();
        let mut got = Vec::new();
        // One byte at a time: the worst split.
        for b in &stream {
            dec.feed(std::slice::from_ref(b));
            while let Some(p) = dec.next_packet().unwrap() {
                got.push(p);
            }
        }
        assert_eq!(
            got,
            vec![
                ShellPacket::Stdout(b"hello ".to_vec()),
                ShellPacket::Stderr(b"oops".to_vec()),
                ShellPacket::Stdout(b"world\n".to_vec()),
                ShellPacket::Exit(42),
            ]
        );
        dec.feed(&[1, 10, 0]);
        assert!(dec.next_packet().unwrap().is_none());
        let mut bad = ShellV2Decoder::default();
        bad.feed(&[1, 0xff, 0xff, 0xff, 0x7f]);
        assert!(bad.next_packet().is_err());
    }

    #[test]
    fn legacy_marker_never_shows_and_crlf_is_undone() {
        let marker = "__devbatch_rc_0123456789abcdef=".to_string();
        let stream = format!("line one\r\nline\rtwo\r\nno newline{marker}42\r\n");
        for split in [1, 2, 3, 7, 1000] {
            let mut dec = LegacyDecoder::with_marker(marker.clone());
            let mut out = Vec::new();
            for chunk in stream.as_bytes().chunks(split) {
                out.extend(dec.feed(chunk));
            }
            let (rest, code) = dec.finish().expect("marker found");
            out.extend(rest);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "line one\nline\rtwo\nno newline",
                "split {split}"
            );
            assert_eq!(code, 42);
        }
        let dec = LegacyDecoder::with_marker(marker.clone());
        assert_eq!(
            dec.wrap("exit 3"),
            format!("sh -c 'exit 3'; echo \"{marker}$?\"")
        );
        // Nothing in the line can close the quoting: quotes are escaped, the rest is literal.
        assert_eq!(
            dec.wrap("echo 'a' )"),
            format!("sh -c 'echo '\\''a'\\'' )'; echo \"{marker}$?\"")
        );
        // The stream ended before the marker: no exit status.
        let mut dec = LegacyDecoder::with_marker(marker.clone());
        let _ = dec.feed(b"partial output that is long enough to be emitted");
        assert!(dec.finish().is_none());
        // A half marker is not an exit status either.
        let mut dec = LegacyDecoder::with_marker(marker.clone());
        let _ = dec.feed(format!("x{}", &marker[..10]).as_bytes());
        assert!(dec.finish().is_none());
    }

    #[test]
    fn fresh_markers_differ() {
        assert_ne!(LegacyDecoder::new().marker, LegacyDecoder::new().marker);
    }

    #[test]
    fn sync_frames() {
        assert_eq!(sync_header(b"DONE", 7), *b"DONE\x07\0\0\0");
        let req = sync_path_request(b"SEND", "/sdcard/a b,33188").unwrap();
        assert_eq!(&req[..8], b"SEND\x11\0\0\0");
        assert_eq!(&req[8..], b"/sdcard/a b,33188");
        // UTF-8 byte length, not chars.
        let req = sync_path_request(b"RECV", "/é").unwrap();
        assert_eq!(&req[4..8], &3u32.to_le_bytes());
        assert!(sync_path_request(b"RECV", &"a".repeat(1025)).is_err());

        let mut st = [0u8; 12];
        assert_eq!(parse_stat_v1(&st), None);
        st[..4].copy_from_slice(&0o100644u32.to_le_bytes());
        st[4..8].copy_from_slice(&5u32.to_le_bytes());
        let s = parse_stat_v1(&st).unwrap();
        assert!(s.is_file() && !s.is_dir());
        assert_eq!(s.size, 5);

        let mut v2 = [0u8; STAT_V2_LEN];
        v2[20..24].copy_from_slice(&0o040755u32.to_le_bytes());
        v2[36..44].copy_from_slice(&(5u64 << 32).to_le_bytes());
        v2[52..60].copy_from_slice(&1234i64.to_le_bytes());
        let s = parse_stat_v2(&v2).unwrap();
        assert!(s.is_dir());
        assert_eq!(s.size, 5u64 << 32);
        assert_eq!(s.mtime, 1234);
        v2[..4].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(parse_stat_v2(&v2), Err(2));
        assert_eq!(errno_text(2), "no such file or directory");
    }
}
