//! A minimal PNG encoder (8-bit RGB, zlib stored blocks) for `screencap -p`.

use crate::apk::{crc32_update};

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= 65_521;
        b %= 65_521;
    }
    (b << 16) | a
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32_update(crc32_update(0xFFFF_FFFF, kind), data) ^ 0xFFFF_FFFF;
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Encodes `width` x `height` RGB pixels (`rgb.len() == width * height * 3`).
pub(crate) fn encode_rgb(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
    let row = width as usize * 3;
    let mut raw = Vec::with_capacity((row + 1) * height as usize);
    for line in rgb.chunks(row) {
        raw.push(0); // filter: none
        raw.extend_from_slice(line);
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    zlib.extend_from_slice(&adler32(&raw).to_be_bytes());

    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit, RGB, deflate, adaptive filter, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &zlib);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A screen for one device: a colour band from the device's identity, a pattern from the shot number.
pub(crate) fn screen(seed: u32, shot: u32, width: u32, height: u32) -> Vec<u8> {
    let mut rgb = Vec::with_capacity((width * height * 3) as usize);
    let base = [(seed >> 16) as u8, (seed >> 8) as u8, seed as u8];
    for y in 0..height {
        for x in 0..width {
            let status_bar = y < height / 20;
            let tile = ((x / 8) + (y / 8) + shot) % 4 == 0;
            let px = if status_bar {
                [20, 20, 20]
            } else if tile {
                [base[0] ^ 0x80, base[1] ^ 0x80, base[2] ^ 0x80]
            } else {
                [base[0].wrapping_add((y * 255 / height) as u8 / 4), base[1], base[2].wrapping_add((x * 255 / width) as u8 / 4)]
            };
            rgb.extend_from_slice(&px);
        }
    }
    encode_rgb(width, height, &rgb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_has_a_valid_structure() {
        let png = screen(0x123456, 0, 30, 20);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 30);
        assert!(png.ends_with(&[0xAE, 0x42, 0x60, 0x82]), "IEND crc");
        assert_ne!(png, screen(0x654321, 0, 30, 20));
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }
}
