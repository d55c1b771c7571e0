//! The VDI header (VirtualBox's VDIPREHEADER and VDIHEADER1, little-endian): a text line, the
//! signature and version, then the image type, where the block map and the blocks are, the disk
//! and block sizes and four UUIDs. Every field is checked against the file and `limits.rs`
//! before anything is read or allocated from it.

use crate::error::{Error, Result};
use crate::formats::bytes::{le32, le64};
use crate::formats::SECTOR;
use crate::limits::{self, MAX_CLUSTER_BYTES, MAX_TABLE_BYTES, MAX_VIRTUAL_SIZE};
use crate::source::file::ImageFile;

pub const SIGNATURE: u32 = 0xbeda_107f;
/// Where the signature lies, after the 64-byte text line.
pub const SIGNATURE_AT: usize = 0x40;
/// The pre-header (text, signature, version) is 0x48 bytes; version 1 headers follow it.
const PRE_HEADER: u64 = 0x48;
/// The version 1 header is 0x180 bytes (VirtualBox's 1.1 writes 0x190: LCHS geometry added).
const HEADER_V1: u64 = 0x180;
/// The bytes read: pre-header and the largest header vdmount reads fields of.
const READ_LEN: usize = 0x200;
/// Where the creation and modification UUIDs lie (parent.rs reads them from candidates).
pub const UUID_CREATE_AT: usize = 0x188;
pub const UUID_MODIFY_AT: usize = 0x198;

/// VirtualBox's image types (qemu writes 1 and 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageType {
    Dynamic,
    Fixed,
    Differencing,
}

impl ImageType {
    pub fn name(self) -> &'static str {
        match self {
            ImageType::Dynamic => "dynamic",
            ImageType::Fixed => "static",
            ImageType::Differencing => "differencing",
        }
    }
}

pub struct Header {
    /// The text line before the signature ("<<< Oracle VM VirtualBox Disk Image >>>").
    pub text: String,
    pub version: u32,
    pub header_size: u32,
    pub image_type: ImageType,
    pub flags: u32,
    pub comment: String,
    pub map_offset: u64,
    pub data_offset: u64,
    /// The disk size as recorded; `virtual_size` is it rounded up to whole sectors, as qemu does.
    pub disk_size: u64,
    pub virtual_size: u64,
    pub block_size: u64,
    /// Bytes VirtualBox keeps before each block's data (0 in every image seen).
    pub block_extra: u64,
    /// Entries in the block map (blocks in the disk).
    pub blocks: u64,
    pub blocks_allocated: u64,
    pub uuid_create: [u8; 16],
    pub uuid_modify: [u8; 16],
    /// The parent's creation UUID (differencing images).
    pub uuid_linkage: [u8; 16],
    /// The parent's modification UUID when the child was made.
    pub uuid_parent_modify: [u8; 16],
}

impl Header {
    pub fn read(file: &ImageFile) -> Result<Header> {
        let corrupt = |msg: String| Error::corrupt(&file.path, msg);
        let mut b = [0u8; READ_LEN];
        let n = (file.size.min(READ_LEN as u64)) as usize;
        if (n as u64) < PRE_HEADER + HEADER_V1 {
            return Err(corrupt(format!(
                "the file is {} bytes, too short for a VDI header ({} bytes); the image is truncated",
                file.size,
                PRE_HEADER + HEADER_V1
            )));
        }
        file.read_exact_at(&mut b[..n], 0, "the VDI header")?;
        let signature = le32(&b, SIGNATURE_AT);
        if signature != SIGNATURE {
            return Err(corrupt(format!(
                "no VDI signature (found {signature:#010x}, expected {SIGNATURE:#010x} at offset 64)"
            )));
        }
        let version = le32(&b, 0x44);
        if version >> 16 != 1 {
            return Err(Error::unsupported(
                &file.path,
                format!(
                    "VDI version {}.{} is not supported (only 1.x, which VirtualBox has written since 2008)",
                    version >> 16,
                    version & 0xffff
                ),
            ));
        }
        let header_size = le32(&b, 0x48);
        let image_type = match le32(&b, 0x4c) {
            1 => ImageType::Dynamic,
            2 => ImageType::Fixed,
            4 => ImageType::Differencing,
            3 => return Err(Error::unsupported(&file.path, "VDI \"undo\" images (type 3) are not supported")),
            t => {
                return Err(corrupt(format!(
                    "the VDI image type is {t}; it must be 1 (dynamic), 2 (static) or 4 (differencing)"
                )))
            }
        };
        let map_offset = u64::from(le32(&b, 0x154));
        let data_offset = u64::from(le32(&b, 0x158));
        let disk_size = le64(&b, 0x170);
        let block_size = u64::from(le32(&b, 0x178));
        let block_extra = u64::from(le32(&b, 0x17c));
        let blocks = u64::from(le32(&b, 0x180));
        let blocks_allocated = u64::from(le32(&b, 0x184));
        let uuid = |at: usize| -> [u8; 16] { b[at..at + 16].try_into().unwrap() };

        if u64::from(header_size) < HEADER_V1 || PRE_HEADER + u64::from(header_size) > map_offset {
            return Err(corrupt(format!(
                "the VDI header size is {header_size} bytes with the block map at offset {map_offset}; it must be at least {HEADER_V1} and end before the block map"
            )));
        }
        if block_size < SECTOR || !block_size.is_power_of_two() {
            return Err(corrupt(format!(
                "the VDI block size is {block_size} bytes; it must be a power of two of at least 512"
            )));
        }
        limits::check(&file.path, "the VDI block size", block_size, MAX_CLUSTER_BYTES)?;
        if block_extra != 0 && !block_extra.is_power_of_two() {
            return Err(corrupt(format!(
                "the VDI block extra data size is {block_extra} bytes; it must be 0 or a power of two"
            )));
        }
        limits::check(&file.path, "the VDI block extra data size", block_extra, MAX_CLUSTER_BYTES)?;
        limits::check(&file.path, "the VDI disk size", disk_size, MAX_VIRTUAL_SIZE)?;
        // Blocks and block size are at most 2^32 and 2^28: no overflow.
        if disk_size > blocks * block_size {
            return Err(corrupt(format!(
                "the VDI disk size is {disk_size} bytes, but its block map has {blocks} blocks of {block_size} bytes ({} bytes); the image is corrupt",
                blocks * block_size
            )));
        }
        if blocks_allocated > blocks {
            return Err(corrupt(format!("the VDI header says {blocks_allocated} blocks are allocated, more than the {blocks} the disk has; the image is corrupt")));
        }
        let map_bytes = blocks * 4;
        limits::check(&file.path, "the size of the VDI block map", map_bytes, MAX_TABLE_BYTES)?;
        if map_offset + map_bytes > file.size {
            return Err(corrupt(format!(
                "the VDI block map ({blocks} entries at offset {map_offset}) lies past the end of the file ({} bytes); the image is truncated or corrupt",
                file.size
            )));
        }
        if data_offset < map_offset + map_bytes {
            return Err(corrupt(format!(
                "the VDI data offset {data_offset} lies inside the block map ({blocks} entries at offset {map_offset}); the image is corrupt"
            )));
        }
        Ok(Header {
            text: text(&b[..SIGNATURE_AT]),
            version,
            header_size,
            image_type,
            flags: le32(&b, 0x50),
            comment: text(&b[0x54..0x154]),
            map_offset,
            data_offset,
            disk_size,
            virtual_size: disk_size.next_multiple_of(SECTOR),
            block_size,
            block_extra,
            blocks,
            blocks_allocated,
            uuid_create: uuid(UUID_CREATE_AT),
            uuid_modify: uuid(UUID_MODIFY_AT),
            uuid_linkage: uuid(0x1a8),
            uuid_parent_modify: uuid(0x1b8),
        })
    }

    /// File offset of the data of the block stored at index `stored` (a block map entry, below
    /// `blocks`): VirtualBox keeps `block_extra` bytes before each block's data.
    pub fn block_data_at(&self, stored: u64) -> u64 {
        // stored < 2^32, block_size + block_extra <= 2^29, data_offset < 2^32: no overflow.
        self.data_offset + stored * (self.block_size + self.block_extra) + self.block_extra
    }
}

/// NUL-terminated text, trimmed of its line end.
fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).trim_end().to_string()
}

/// A UUID as VirtualBox prints it: its first three fields are stored little-endian.
pub fn uuid_text(u: &[u8; 16]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{}",
        u32::from_le_bytes(u[0..4].try_into().unwrap()),
        u16::from_le_bytes([u[4], u[5]]),
        u16::from_le_bytes([u[6], u[7]]),
        u[8],
        u[9],
        u[10..].iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::file::test_file;

    /// A valid dynamic header of 4 blocks of 1 MiB (map at 512, data at 1024) in a 1 KiB file.
    fn header() -> Vec<u8> {
        let mut b = vec![0u8; 1024];
        b[..40].copy_from_slice(b"<<< Oracle VM VirtualBox Disk Image >>>\n");
        b[0x40..0x44].copy_from_slice(&SIGNATURE.to_le_bytes());
        b[0x44..0x48].copy_from_slice(&0x0001_0001u32.to_le_bytes());
        b[0x48..0x4c].copy_from_slice(&0x190u32.to_le_bytes()); //   header size
        b[0x4c..0x50].copy_from_slice(&1u32.to_le_bytes()); //       dynamic
        b[0x154..0x158].copy_from_slice(&512u32.to_le_bytes()); //   block map
        b[0x158..0x15c].copy_from_slice(&1024u32.to_le_bytes()); //  data
        b[0x170..0x178].copy_from_slice(&(4u64 << 20).to_le_bytes());
        b[0x178..0x17c].copy_from_slice(&(1u32 << 20).to_le_bytes());
        b[0x180..0x184].copy_from_slice(&4u32.to_le_bytes());
        b[0x188] = 1; // creation UUID
        b[512..528].fill(0xff); // 4 unallocated blocks
        b
    }

    fn refusal(b: &[u8]) -> String {
        let (_tmp, file) = test_file(b);
        Header::read(&file).err().expect("refused").to_string()
    }

    fn with(at: usize, value: &[u8]) -> Vec<u8> {
        let mut b = header();
        b[at..at + value.len()].copy_from_slice(value);
        b
    }

    #[test]
    fn reads_a_valid_header() {
        let (_tmp, file) = test_file(&header());
        let h = Header::read(&file).unwrap();
        assert_eq!((h.image_type, h.block_size, h.blocks, h.virtual_size), (ImageType::Dynamic, 1 << 20, 4, 4 << 20));
        assert_eq!(h.text, "<<< Oracle VM VirtualBox Disk Image >>>");
        assert_eq!(h.block_data_at(2), 1024 + (2 << 20));
        assert_eq!(uuid_text(&h.uuid_create), "00000001-0000-0000-0000-000000000000");
    }

    #[test]
    fn refuses_bad_fields() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (with(0x44, &0x0002_0000u32.to_le_bytes()), "VDI version 2.0 is not supported"),
            (with(0x4c, &9u32.to_le_bytes()), "the VDI image type is 9"),
            (with(0x48, &0x100u32.to_le_bytes()), "the VDI header size is 256 bytes"),
            (with(0x178, &3000u32.to_le_bytes()), "the VDI block size is 3000 bytes"),
            (with(0x178, &(1u32 << 31).to_le_bytes()), "the VDI block size is 2147483648, more than the limit"),
            (with(0x170, &(5u64 << 20).to_le_bytes()), "its block map has 4 blocks"),
            (with(0x180, &0xffff_ffffu32.to_le_bytes()), "the size of the VDI block map is 17179869180"),
            (with(0x180, &1000u32.to_le_bytes()), "the VDI block map (1000 entries at offset 512) lies past the end"),
            (with(0x154, &256u32.to_le_bytes()), "the VDI header size is 400 bytes with the block map at offset 256"),
            (with(0x184, &5u32.to_le_bytes()), "5 blocks are allocated, more than the 4"),
            (header()[..300].to_vec(), "too short for a VDI header"),
        ];
        for (b, want) in cases {
            let e = refusal(&b);
            assert!(e.contains(want), "{want:?} not in {e}");
        }
        let e = refusal(&with(0x158, &520u32.to_le_bytes()));
        assert!(e.contains("the VDI data offset 520 lies inside the block map"), "{e}");
    }
}
