//! The file type identifier (signature and creator) and the two headers, of which the valid one
//! with the higher sequence number is current.

use super::guid::Guid;
use crate::error::{Error, Result};
use crate::formats::image_file::{le16, le32, le64, ImageFile};

pub const HEADER_OFFSETS: [u64; 2] = [64 << 10, 128 << 10];
const HEADER_BYTES: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub sequence: u64,
    pub file_write_guid: Guid,
    pub data_write_guid: Guid,
    pub log_guid: Guid,
    pub log_version: u16,
    pub log_length: u32,
    pub log_offset: u64,
}

/// The current header and what `info` should say about the other one.
pub struct Headers {
    pub current: Header,
    /// 1 or 2.
    pub current_number: usize,
    /// Why the other header was not used, if it was invalid.
    pub other_problem: Option<String>,
}

/// The creator string of the file type identifier (UTF-16LE, up to 256 units, NUL-terminated).
pub fn read_creator(file: &ImageFile) -> Result<String> {
    let mut id = [0u8; 520];
    file.read_exact_at(&mut id, 0, "the VHDX file type identifier")?;
    if &id[..8] != b"vhdxfile" {
        return Err(Error::corrupt(&file.path, "no \"vhdxfile\" signature at offset 0: not a VHDX image"));
    }
    let units: Vec<u16> =
        id[8..].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
    Ok(String::from_utf16_lossy(&units))
}

/// CRC-32C of `buf` with its checksum field (bytes 4..8) taken as zero, as every VHDX
/// structure with a checksum computes it.
pub fn checksum(buf: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&buf[..4]);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc32c::crc32c_append(crc, &buf[8..])
}

fn parse_header(buf: &[u8]) -> std::result::Result<Header, String> {
    if &buf[..4] != b"head" {
        return Err("no \"head\" signature".into());
    }
    let stored = le32(buf, 4);
    let computed = checksum(buf);
    if stored != computed {
        return Err(format!("bad CRC-32C (stored {stored:#010x}, computed {computed:#010x})"));
    }
    let version = le16(buf, 66);
    if version != 1 {
        return Err(format!("version {version}, only 1 exists"));
    }
    Ok(Header {
        sequence: le64(buf, 8),
        file_write_guid: Guid::read(&buf[16..]),
        data_write_guid: Guid::read(&buf[32..]),
        log_guid: Guid::read(&buf[48..]),
        log_version: le16(buf, 64),
        log_length: le32(buf, 68),
        log_offset: le64(buf, 72),
    })
}

fn read_one(file: &ImageFile, offset: u64) -> std::result::Result<Header, String> {
    if file.size < offset + HEADER_BYTES as u64 {
        return Err(format!("the file ends at {} bytes, before it", file.size));
    }
    let mut buf = vec![0u8; HEADER_BYTES];
    file.read_exact_at(&mut buf, offset, "a VHDX header").map_err(|e| e.to_string())?;
    parse_header(&buf)
}

/// Reads both headers and picks the current one.
pub fn read_headers(file: &ImageFile) -> Result<Headers> {
    let h1 = read_one(file, HEADER_OFFSETS[0]);
    let h2 = read_one(file, HEADER_OFFSETS[1]);
    let (current, current_number, other_problem) = match (h1, h2) {
        (Ok(a), Ok(b)) => {
            if a.sequence > b.sequence {
                (a, 1, None)
            } else if b.sequence > a.sequence {
                (b, 2, None)
            } else if a == b {
                // Disk2VHD writes two identical headers with the same sequence number.
                (a, 1, None)
            } else {
                return Err(Error::corrupt(
                    &file.path,
                    format!(
                        "both VHDX headers have sequence number {} but differ, so neither is known to be current; the image is corrupt",
                        a.sequence
                    ),
                ));
            }
        }
        (Ok(a), Err(e)) => (a, 1, Some(format!("header 2 (at 128 KiB) is invalid: {e}"))),
        (Err(e), Ok(b)) => (b, 2, Some(format!("header 1 (at 64 KiB) is invalid: {e}"))),
        (Err(e1), Err(e2)) => {
            return Err(Error::corrupt(
                &file.path,
                format!(
                    "neither VHDX header is valid (header 1 at 64 KiB: {e1}; header 2 at 128 KiB: {e2}); the image is corrupt or truncated"
                ),
            ))
        }
    };
    Ok(Headers { current, current_number, other_problem })
}
