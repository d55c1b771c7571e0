//! The header of a Parallels expanding image (qemu's docs/interop/parallels.rst; little-endian):
//! 64 bytes, then the BAT. "WithoutFreeSpace" (v1) BAT entries count sectors, "WithouFreSpacExt"
//! (v2) entries count clusters.

use crate::error::{Error, Result};
use crate::formats::bytes::{le32, le64};
use crate::formats::SECTOR;
use crate::limits::{self, MAX_CLUSTER_BYTES, MAX_TABLE_BYTES, MAX_VIRTUAL_SIZE};
use crate::source::file::ImageFile;

pub const MAGIC_V1: &[u8; 16] = b"WithoutFreeSpace";
pub const MAGIC_V2: &[u8; 16] = b"WithouFreSpacExt";
pub const HEADER_LEN: u64 = 64;
/// `in_use` while a writer has the image open (or it was not closed cleanly).
const IN_USE_OPEN: u32 = 0x746F_6E59;

pub struct Header {
    /// "WithouFreSpacExt": BAT entries in clusters, 64-bit disk size, the ext_off field.
    pub v2: bool,
    pub heads: u32,
    pub cylinders: u32,
    /// Cluster size in sectors.
    pub tracks: u32,
    pub bat_entries: u32,
    /// Disk size in sectors (v1: the low 32 bits only, as qemu reads it).
    pub sectors: u64,
    pub in_use: u32,
    pub data_off: u32,
    pub flags: u32,
    pub ext_off: u64,
    /// Where the data area starts, in bytes (data_off, or after the BAT where data_off is zero or
    /// points into the BAT, as qemu takes it).
    pub data_start: u64,
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        u64::from(self.tracks) * SECTOR
    }
    pub fn virtual_size(&self) -> u64 {
        self.sectors * SECTOR
    }
    /// Bytes one BAT unit stands for (at most 2^28: an entry's offset fits in 60 bits).
    pub fn bat_unit(&self) -> u64 {
        if self.v2 {
            self.cluster_size()
        } else {
            SECTOR
        }
    }
    pub fn bat_end(&self) -> u64 {
        HEADER_LEN + u64::from(self.bat_entries) * 4
    }
    pub fn dirty(&self) -> bool {
        self.in_use == IN_USE_OPEN
    }

    /// What the in_use field says, for `info`.
    pub fn in_use_text(&self) -> String {
        const IN_USE_CLOSED: u32 = 0x312e_3276;
        match self.in_use {
            IN_USE_OPEN => {
                "set: the image was not closed cleanly (or is open); read as it is, as qemu reads it read-only"
                    .to_string()
            }
            IN_USE_CLOSED => "closed cleanly".to_string(),
            0 => "0 (written by software without format extensions)".to_string(),
            v => format!("{v:#010x}, an unknown value; read as it is"),
        }
    }
}

/// Reads and checks the header of the Parallels image `file`.
pub fn read_header(file: &ImageFile) -> Result<Header> {
    let path = &file.path;
    let bad = |msg: String| Error::corrupt(path, format!("Parallels header: {msg}; the image is corrupt"));
    let mut b = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut b, 0, "the Parallels header")?;
    let v2 = match &b[0..16] {
        m if m == MAGIC_V1 => false,
        m if m == MAGIC_V2 => true,
        _ => {
            return Err(Error::corrupt(
                path,
                "does not start with a Parallels signature (\"WithoutFreeSpace\" or \"WithouFreSpacExt\"); it is not a Parallels expanding image",
            ))
        }
    };
    let version = le32(&b, 16);
    if version != 2 {
        return Err(Error::unsupported(path, format!("Parallels header version {version}; only version 2 is known")));
    }
    let tracks = le32(&b, 28);
    if tracks == 0 {
        return Err(bad("cluster size is 0 sectors".into()));
    }
    limits::check(path, "Parallels cluster size", u64::from(tracks) * SECTOR, MAX_CLUSTER_BYTES)?;
    let bat_entries = le32(&b, 32);
    let raw_sectors = le64(&b, 36);
    let sectors = if v2 { raw_sectors } else { raw_sectors & 0xffff_ffff };
    let size = sectors.saturating_mul(SECTOR);
    limits::check(path, "Parallels disk size", size, MAX_VIRTUAL_SIZE)?;
    let mut h = Header {
        v2,
        heads: le32(&b, 20),
        cylinders: le32(&b, 24),
        tracks,
        bat_entries,
        sectors,
        in_use: le32(&b, 44),
        data_off: le32(&b, 48),
        flags: le32(&b, 52),
        ext_off: le64(&b, 56),
        data_start: 0,
    };
    limits::check(path, "size of the Parallels BAT", h.bat_end() - HEADER_LEN, MAX_TABLE_BYTES)?;
    if h.bat_end() > file.size {
        return Err(bad(format!(
            "its BAT of {bat_entries} entries ends at offset {}, past the end of the file ({} bytes)",
            h.bat_end(),
            file.size
        )));
    }
    let after_bat = h.bat_end().next_multiple_of(SECTOR);
    h.data_start = (u64::from(h.data_off) * SECTOR).max(after_bat);
    Ok(h)
}

/// Where the format extension cluster is and what is there, for `info` (its dirty bitmaps are
/// not read: they say what changed, not what the disk holds).
pub fn describe_extension(file: &ImageFile, h: &Header) -> Option<String> {
    /// The first 8 bytes of the format extension cluster.
    const EXT_MAGIC: u64 = 0xAB23_4CEF_23DC_EA87;
    if h.ext_off == 0 {
        return None;
    }
    let at = h.ext_off.checked_mul(SECTOR);
    let mut magic = [0u8; 8];
    let read = at.map(|at| file.read_exact_at(&mut magic, at, "the format extension"));
    Some(match (at, read) {
        (Some(at), Some(Ok(()))) if u64::from_le_bytes(magic) == EXT_MAGIC => {
            format!("at offset {at} (dirty bitmaps there are not read)")
        }
        _ => format!("ext_off {} sectors holds no format extension; ignored", h.ext_off),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::bytes::put_le32;
    use crate::source::file::{assert_refused, parse_edited};

    /// A valid v2 image: 4 KiB clusters, 4 BAT entries, 16 KiB disk, data from 4096.
    fn image() -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[0..16].copy_from_slice(MAGIC_V2);
        b[16..20].copy_from_slice(&2u32.to_le_bytes());
        b[28..32].copy_from_slice(&8u32.to_le_bytes());
        b[32..36].copy_from_slice(&4u32.to_le_bytes());
        b[36..44].copy_from_slice(&32u64.to_le_bytes());
        b[48..52].copy_from_slice(&8u32.to_le_bytes());
        b
    }

    fn open(edit: impl Fn(&mut Vec<u8>)) -> std::result::Result<Header, String> {
        parse_edited(image(), edit, read_header)
    }

    #[test]
    fn valid_header() {
        let h = open(|_| {}).unwrap();
        assert_eq!((h.cluster_size(), h.bat_unit(), h.virtual_size(), h.data_start), (4096, 4096, 16384, 4096));
        // v1: units of sectors, and only the low 32 bits of the size.
        let h = open(|b| {
            b[0..16].copy_from_slice(MAGIC_V1);
            b[40] = 1;
        })
        .unwrap();
        assert_eq!((h.bat_unit(), h.virtual_size()), (512, 16384));
        // A zero data_off, or one inside the BAT: data starts after the BAT.
        assert_eq!(open(|b| put_le32(b, 48, 0)).unwrap().data_start, 512);
    }

    #[test]
    fn header_fields_are_checked() {
        assert_refused(open(|b| b[3] = b'x'), "Parallels signature");
        assert_refused(open(|b| b.truncate(40)), "past the end of the file");
        assert_refused(open(|b| put_le32(b, 16, 1)), "version 1");
        assert_refused(open(|b| put_le32(b, 28, 0)), "cluster size is 0");
        assert_refused(open(|b| put_le32(b, 28, u32::MAX)), "cluster size");
        assert_refused(open(|b| b[36..44].copy_from_slice(&u64::MAX.to_le_bytes())), "disk size");
        assert_refused(open(|b| put_le32(b, 32, 2000)), "past the end of the file");
        assert_refused(open(|b| put_le32(b, 32, u32::MAX)), "size of the Parallels BAT");
    }
}
