//! The UDIF trailer: 512 big-endian bytes at the very end of the file, starting "koly". It says
//! where the data fork (every chunk's bytes) and the XML property list (the chunk tables) are,
//! and how many sectors the disk has.

use crate::error::{Error, Result};
use crate::formats::bytes::{be32, be64};
use crate::source::file::ImageFile;

pub const MAGIC: &[u8; 4] = b"koly";
pub const SIZE: u64 = 512;
const VERSION: u32 = 4;

/// The fields vdmount uses.
#[derive(Debug, Clone)]
pub struct Koly {
    pub data_fork_offset: u64,
    pub data_fork_length: u64,
    pub xml_offset: u64,
    pub xml_length: u64,
    pub sector_count: u64,
    /// Checksum of the data fork: type (0 none, 2 CRC-32) and size in bits.
    pub data_checksum: (u32, u32),
    /// Checksum of the chunk tables' checksums: type (0 none, 2 CRC-32), size in bits, and the
    /// first 32 bits of its value.
    pub master_checksum: (u32, u32, u32),
}

/// Whether `tail`, the last 512 bytes of a file, is a UDIF trailer (magic, version 4, size 512):
/// three fields, so a raw disk whose last sector merely starts "koly" is not taken for one.
pub fn is_trailer(tail: &[u8]) -> bool {
    tail.len() == SIZE as usize && tail.starts_with(MAGIC) && be32(tail, 4) == VERSION && be32(tail, 8) == SIZE as u32
}

/// Whether `file`, whose last 512 bytes are `tail`, is a DMG: a UDIF trailer whose property
/// list (if it names one) starts as XML does. The second test keeps a raw disk whose last sector
/// happens to be a DMG file's trailer (a .dmg stored at the end of a filesystem) raw: that
/// trailer's offsets are relative to the DMG file, not to the disk.
pub fn is_dmg(file: &ImageFile, tail: &[u8]) -> bool {
    if !is_trailer(tail) {
        return false;
    }
    let (offset, length) = (be64(tail, 216), be64(tail, 224));
    if length == 0 {
        return true; // refused by read_koly, with the reason
    }
    let mut head = [0u8; 16];
    let n = length.min(head.len() as u64) as usize;
    if offset.checked_add(n as u64).is_none_or(|end| end > file.size) {
        return false;
    }
    if file.read_exact_at(&mut head[..n], offset, "the XML property list").is_err() {
        return false;
    }
    let text = head[..n].trim_ascii_start();
    text.starts_with(b"<?xml") || text.starts_with(b"<plist") || text.starts_with(b"<!DOCTYPE")
}

/// Reads and checks the trailer of `file`: every region it names must lie before it.
pub fn read_koly(file: &ImageFile) -> Result<Koly> {
    let path = &file.path;
    if file.size < SIZE {
        return Err(Error::corrupt(path, format!("is {} bytes, too short for a DMG (UDIF) trailer", file.size)));
    }
    let at = file.size - SIZE;
    let mut b = [0u8; SIZE as usize];
    file.read_exact_at(&mut b, at, "the UDIF trailer")?;
    if !is_trailer(&b) {
        return Err(Error::corrupt(
            path,
            "has no UDIF trailer (\"koly\", version 4, 512 bytes) in its last 512 bytes; it is not a DMG, or is truncated",
        ));
    }
    let k = Koly {
        data_fork_offset: be64(&b, 24),
        data_fork_length: be64(&b, 32),
        xml_offset: be64(&b, 216),
        xml_length: be64(&b, 224),
        sector_count: be64(&b, 492),
        data_checksum: (be32(&b, 80), be32(&b, 84)),
        master_checksum: (be32(&b, 352), be32(&b, 356), be32(&b, 360)),
    };
    // What the trailer locates must lie before it.
    let before_trailer = |what: &str, off: u64, len: u64| {
        if off.checked_add(len).is_some_and(|end| end <= at) {
            return Ok(());
        }
        Err(Error::corrupt(
            path,
            format!(
                "the UDIF trailer puts the {what} at offset {off} ({len} bytes), past the trailer at {at}; the image is truncated or corrupt"
            ),
        ))
    };
    before_trailer("data fork", k.data_fork_offset, k.data_fork_length)?;
    if k.xml_length == 0 {
        return Err(Error::unsupported(
            path,
            "the UDIF trailer names no XML property list (an old DMG with only a resource fork is not read)",
        ));
    }
    before_trailer("property list", k.xml_offset, k.xml_length)?;
    Ok(k)
}

/// A checksum type's name, as `info` shows it.
pub fn checksum_name(kind: u32) -> String {
    match kind {
        0 => "none".into(),
        2 => "CRC-32".into(),
        k => format!("type {k}"),
    }
}
