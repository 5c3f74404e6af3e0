//! ADB transport messages (the server <-> adbd framing): a 24-byte header and a payload.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// `CNXN`: connect handshake.
pub(crate) const A_CNXN: u32 = u32::from_le_bytes(*b"CNXN");
/// `AUTH`: authentication token/signature/public key.
pub(crate) const A_AUTH: u32 = u32::from_le_bytes(*b"AUTH");
/// `OPEN`: the host opens a stream for a service.
pub(crate) const A_OPEN: u32 = u32::from_le_bytes(*b"OPEN");
/// `OKAY`: stream accepted / ready for the next WRTE.
pub(crate) const A_OKAY: u32 = u32::from_le_bytes(*b"OKAY");
/// `CLSE`: stream closed.
pub(crate) const A_CLSE: u32 = u32::from_le_bytes(*b"CLSE");
/// `WRTE`: stream data.
pub(crate) const A_WRTE: u32 = u32::from_le_bytes(*b"WRTE");

/// Protocol version with checksums (hosts before 2016 and old devices).
pub(crate) const VERSION_CHECKSUM: u32 = 0x0100_0000;
/// Protocol version where checksums may be zero.
pub(crate) const VERSION_SKIP_CHECKSUM: u32 = 0x0100_0001;

/// AUTH arg0: the device sends a token to sign.
pub(crate) const AUTH_TOKEN: u32 = 1;

/// The largest payload the simulator accepts from a host, whatever was negotiated (real adbd: 1 MiB).
const MAX_ACCEPTED_PAYLOAD: u32 = 1024 * 1024;

/// One transport message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) command: u32,
    pub(crate) arg0: u32,
    pub(crate) arg1: u32,
    pub(crate) payload: Vec<u8>,
}

impl Message {
    pub(crate) fn new(command: u32, arg0: u32, arg1: u32, payload: Vec<u8>) -> Message {
        Message { command, arg0, arg1, payload }
    }

    /// The wire bytes: header (with the byte-sum checksum and the magic) and payload.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.payload.len());
        let check: u32 = self.payload.iter().fold(0u32, |acc, b| acc.wrapping_add(u32::from(*b)));
        for word in [
            self.command,
            self.arg0,
            self.arg1,
            self.payload.len() as u32,
            check,
            self.command ^ 0xFFFF_FFFF,
        ] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(&self.payload);
        out
    }

    /// Reads one message. `Ok(None)` on a clean EOF before a header starts.
    pub(crate) async fn read<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Option<Message>> {
        let mut header = [0u8; 24];
        let mut got = 0;
        while got < header.len() {
            let n = reader.read(&mut header[got..]).await?;
            if n == 0 {
                if got == 0 {
                    return Ok(None);
                }
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "link closed inside a message header"));
            }
            got += n;
        }
        let word = |i: usize| u32::from_le_bytes(header[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        let (command, arg0, arg1, len, magic) = (word(0), word(1), word(2), word(3), word(5));
        if magic != command ^ 0xFFFF_FFFF {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad magic {magic:#010x} for command {command:#010x}"),
            ));
        }
        if !matches!(command, A_CNXN | A_AUTH | A_OPEN | A_OKAY | A_CLSE | A_WRTE) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unknown command {command:#010x}")));
        }
        if len > MAX_ACCEPTED_PAYLOAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("oversized payload of {len} bytes")));
        }
        let mut payload = vec![0u8; len as usize];
        reader.read_exact(&mut payload).await?;
        Ok(Some(Message { command, arg0, arg1, payload }))
    }
}

/// A command word as text, for logs.
pub(crate) fn command_name(command: u32) -> String {
    String::from_utf8_lossy(&command.to_le_bytes()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn encode_then_read_round_trips_and_checks_magic() {
        let msg = Message::new(A_WRTE, 7, 9, b"hello".to_vec());
        let bytes = msg.encode();
        assert_eq!(&bytes[0..4], b"WRTE");
        assert_eq!(u32::from_le_bytes(bytes[16..20].try_into().unwrap()), 532); // byte sum of "hello"
        let back = Message::read(&mut &bytes[..]).await.unwrap().unwrap();
        assert_eq!(back, msg);

        let mut bad = bytes.clone();
        bad[20] ^= 1;
        let err = Message::read(&mut &bad[..]).await.unwrap_err();
        assert!(err.to_string().contains("bad magic"), "{err}");
        assert!(Message::read(&mut &[][..]).await.unwrap().is_none());
        assert_eq!(command_name(A_CNXN), "CNXN");
    }
}
