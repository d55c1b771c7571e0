//! EWF2 segment files: the 32-byte file header, and the sections after it. Each section is its
//! data followed by a 64-byte descriptor that points back at the previous descriptor, so a
//! segment is read from its end: the last descriptor ("next" or "done") is the file's last 64
//! bytes. Each step must go strictly backwards, so the walk ends.

use super::adler32;
use super::chunk::Method;
use crate::error::{Error, Result};
use crate::formats::bytes::{le16, le32, le64};
use crate::limits::MAX_EWF_SECTIONS_PER_SEGMENT;
use crate::source::file::ImageFile;
use md5::Digest;

pub const FILE_HEADER_BYTES: u64 = 32;
pub const DESCRIPTOR_BYTES: u64 = 64;

// Section types.
pub const DEVICE_INFORMATION: u32 = 0x01;
pub const CASE_DATA: u32 = 0x02;
pub const SECTOR_TABLE: u32 = 0x04;
pub const MD5_HASH: u32 = 0x08;
pub const SHA1_HASH: u32 = 0x09;
pub const ENCRYPTION_KEYS: u32 = 0x0b;
pub const NEXT: u32 = 0x0d;
pub const DONE: u32 = 0x0f;

// Descriptor data flags.
const HAS_INTEGRITY_HASH: u32 = 0x01;
const ENCRYPTED: u32 = 0x02;

/// What the file header of a segment says.
pub struct FileHeader {
    pub method: Method,
    pub set_id: [u8; 16],
}

/// Reads and checks the file header of `file`, which should be segment `number`.
pub fn read_file_header(file: &ImageFile, number: u32) -> Result<FileHeader> {
    let mut h = [0u8; FILE_HEADER_BYTES as usize];
    file.read_exact_at(&mut h, 0, "the EWF2 file header")?;
    if &h[..8] != super::EWF2_SIGNATURE {
        return Err(Error::corrupt(
            &file.path,
            format!("does not start with the EWF2 signature, yet it should be segment {number} of the set"),
        ));
    }
    if h[8] != 2 {
        return Err(Error::unsupported(&file.path, format!("is EWF2 version {}.{}; only 2.x is read", h[8], h[9])));
    }
    let method = match le16(&h, 10) {
        1 => Method::Zlib,
        2 => Method::Bzip2,
        m => {
            return Err(Error::corrupt(
                &file.path,
                format!(
                "its EWF2 file header names compression method {m}, not 1 (deflate) or 2 (bzip2); the image is corrupt"
            ),
            ))
        }
    };
    let stored = le32(&h, 12);
    if stored != number {
        let hint = if number == 1 { " (open the set's first segment, .Ex01)" } else { "" };
        return Err(Error::corrupt(
            &file.path,
            format!("its file header says it is segment {stored} of its set, but it should be segment {number}{hint}"),
        ));
    }
    Ok(FileHeader { method, set_id: h[16..32].try_into().unwrap_or_default() })
}

/// One section: its descriptor, and where its data lies.
#[derive(Clone, Debug)]
pub struct Section {
    pub kind: u32,
    flags: u32,
    /// Offset of the descriptor (the data lies before it).
    pub at: u64,
    pub data_start: u64,
    /// Bytes of data, padding included.
    pub data_size: u64,
    integrity: [u8; 16],
}

impl Section {
    /// The section's name, for messages.
    pub fn name(&self) -> String {
        let known = match self.kind {
            DEVICE_INFORMATION => "device information",
            CASE_DATA => "case data",
            0x03 => "sector data",
            SECTOR_TABLE => "sector table",
            MD5_HASH => "MD5 hash",
            SHA1_HASH => "SHA1 hash",
            NEXT => "next",
            DONE => "done",
            _ => "",
        };
        if known.is_empty() {
            format!("type {:#x}", self.kind)
        } else {
            known.to_string()
        }
    }

    /// The section's data (at most `limit` bytes of it may be asked for), checked against its
    /// integrity hash (an MD5) when it has one.
    pub fn read_data(&self, file: &ImageFile, limit: u64) -> Result<Vec<u8>> {
        let what = format!("the EWF2 {} section", self.name());
        let data = file.read_vec(self.data_start, self.data_size, limit, &what)?;
        if self.flags & HAS_INTEGRITY_HASH != 0 && md5::Md5::digest(&data)[..] != self.integrity {
            return Err(Error::corrupt(
                &file.path,
                format!("{what} at offset {} does not match its integrity hash (MD5); the image is corrupt", self.at),
            ));
        }
        Ok(data)
    }
}

/// Walks the sections of `file` from its last to its first, handing each to `visit`; returns
/// the type of the last one (NEXT or DONE).
pub fn walk(file: &ImageFile, mut visit: impl FnMut(&Section) -> Result<()>) -> Result<u32> {
    let path = &file.path;
    if file.size < FILE_HEADER_BYTES + DESCRIPTOR_BYTES {
        return Err(Error::corrupt(
            path,
            format!("is {} bytes long, too short for an EWF2 segment; it is truncated", file.size),
        ));
    }
    let mut at = file.size - DESCRIPTOR_BYTES;
    let last = read_descriptor(file, at).map_err(|e| match e {
        Error::Corrupt { .. } => Error::corrupt(
            path,
            "does not end with a valid EWF2 \"next\" or \"done\" section descriptor; the segment is truncated or corrupt",
        ),
        e => e,
    })?;
    if last.kind != NEXT && last.kind != DONE {
        return Err(Error::corrupt(
            path,
            format!(
                "its last section is a {} section, not \"next\" or \"done\"; the segment is truncated or corrupt",
                last.name()
            ),
        ));
    }
    let mut section = last.clone();
    for _ in 0..MAX_EWF_SECTIONS_PER_SEGMENT {
        if section.flags & ENCRYPTED != 0 || section.kind == ENCRYPTION_KEYS {
            return Err(Error::unsupported(path, "is an encrypted EWF2 image; encryption is not supported"));
        }
        visit(&section)?;
        if section.data_start == FILE_HEADER_BYTES {
            return Ok(last.kind);
        }
        at = section.data_start - DESCRIPTOR_BYTES;
        section = read_descriptor(file, at)?;
    }
    Err(Error::corrupt(
        path,
        format!("has more than {MAX_EWF_SECTIONS_PER_SEGMENT} sections; the segment is corrupt or hostile"),
    ))
}

/// Reads the descriptor at `at` and checks its checksum and that its data lies before it.
fn read_descriptor(file: &ImageFile, at: u64) -> Result<Section> {
    let mut d = [0u8; DESCRIPTOR_BYTES as usize];
    file.read_exact_at(&mut d, at, "an EWF2 section descriptor")?;
    let bad = |why: String| {
        Error::corrupt(&file.path, format!("the EWF2 section descriptor at offset {at} {why}; the segment is corrupt"))
    };
    if adler32(&d[..60]) != le32(&d, 60) {
        return Err(bad("has a bad checksum".into()));
    }
    let previous = le64(&d, 8);
    // The data starts after the previous descriptor, or after the file header for the first.
    let data_start = match previous {
        0 => FILE_HEADER_BYTES,
        p if p >= FILE_HEADER_BYTES && p.checked_add(DESCRIPTOR_BYTES).is_some_and(|e| e <= at) => p + DESCRIPTOR_BYTES,
        p => return Err(bad(format!("says the previous one is at offset {p}, which is not before it"))),
    };
    let data_size = le64(&d, 16);
    let padding = u64::from(le32(&d, 28));
    if data_size > at - data_start || padding > data_size {
        return Err(bad(format!(
            "says its data is {data_size} bytes (padding {padding}), more than the {} bytes before it",
            at - data_start
        )));
    }
    Ok(Section {
        kind: le32(&d, 0),
        flags: le32(&d, 4),
        at,
        data_start,
        data_size,
        integrity: d[32..48].try_into().unwrap_or_default(),
    })
}
