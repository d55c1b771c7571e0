//! The dynamic disk header ("cxsparse") of dynamic and differencing VHDs, and the block
//! allocation table (BAT) and per-block sector bitmaps it leads to.

use super::footer::checksum;
use crate::cache::{Cache, Kind};
use crate::error::{Error, Result};
use crate::formats::bytes::{be32, be64};
use crate::formats::cached::load_table;
pub use crate::formats::SECTOR;
use crate::limits::{self, MAX_CLUSTER_BYTES, MAX_TABLE_BYTES};
use crate::source::file::ImageFile;

pub const HEADER_SIZE: usize = 1024;
const COOKIE: &[u8; 8] = b"cxsparse";
const CHECKSUM_AT: usize = 36;
const UNALLOCATED: u32 = 0xFFFF_FFFF;
/// BAT entries loaded (and cached) together: 64 KiB of the table.
const BAT_PAGE_ENTRIES: u64 = 16384;

pub struct DynamicHeader {
    /// The raw 1024 bytes, for the parent locators (parent.rs).
    pub bytes: Box<[u8; HEADER_SIZE]>,
    pub table_offset: u64,
    pub max_table_entries: u64,
    pub block_size: u64,
    pub parent_unique_id: [u8; 16],
    pub parent_timestamp: u32,
    /// "good", or what is wrong with the header checksum (for `info`).
    pub checksum_state: String,
}

impl DynamicHeader {
    /// Reads and checks the header at `offset` (the footer's data offset).
    pub fn read(file: &ImageFile, offset: u64) -> Result<DynamicHeader> {
        let mut b = Box::new([0u8; HEADER_SIZE]);
        file.read_exact_at(&mut b[..], offset, "the VHD dynamic disk header")?;
        if &b[..8] != COOKIE {
            return Err(Error::corrupt(
                &file.path,
                format!("no dynamic disk header (\"cxsparse\") at offset {offset}, where the VHD footer's data offset points; the image is corrupt"),
            ));
        }
        let block_size = u64::from(be32(&b[..], 32));
        if block_size < SECTOR || !block_size.is_power_of_two() {
            return Err(Error::corrupt(
                &file.path,
                format!("the VHD block size is {block_size} bytes; it must be a power of two of at least 512"),
            ));
        }
        limits::check(&file.path, "the VHD block size", block_size, MAX_CLUSTER_BYTES)?;

        let table_offset = be64(&b[..], 16);
        let max_table_entries = u64::from(be32(&b[..], 28));
        let table_bytes = max_table_entries * 4;
        limits::check(&file.path, "the size of the VHD block allocation table", table_bytes, MAX_TABLE_BYTES)?;
        if table_offset.checked_add(table_bytes).is_none_or(|end| end > file.size) {
            return Err(Error::corrupt(
                &file.path,
                format!(
                    "the VHD block allocation table ({max_table_entries} entries at offset {table_offset}) lies past the end of the file ({} bytes); the image is truncated or corrupt",
                    file.size
                ),
            ));
        }

        // qemu does not check this checksum; a bad one is reported, not refused, since the
        // fields that matter were checked above against the file itself.
        let expected = checksum(&b[..], CHECKSUM_AT);
        let found = be32(&b[..], CHECKSUM_AT);
        let checksum_state = if expected == found {
            "good".to_string()
        } else {
            format!("BAD (expected {expected:#010x} from its bytes, found {found:#010x}); read anyway, as qemu does")
        };

        let mut parent_unique_id = [0u8; 16];
        parent_unique_id.copy_from_slice(&b[40..56]);
        Ok(DynamicHeader {
            table_offset,
            max_table_entries,
            block_size,
            parent_unique_id,
            parent_timestamp: be32(&b[..], 56),
            checksum_state,
            bytes: b,
        })
    }

    /// Bytes of the sector bitmap before each block's data: one bit per sector, rounded up to
    /// whole sectors.
    pub fn bitmap_size(&self) -> u64 {
        (self.block_size / SECTOR).div_ceil(8).next_multiple_of(SECTOR)
    }

    /// The bytes the BAT can address.
    pub fn table_coverage(&self) -> u64 {
        self.max_table_entries * self.block_size
    }
}

/// Lookups in the BAT and bitmaps of one image, through the shared cache.
pub struct BlockMap<'a> {
    pub file: &'a ImageFile,
    pub header: &'a DynamicHeader,
    pub cache: &'a Cache,
}

impl BlockMap<'_> {
    /// File offset of block `block`'s sector bitmap, or None if the block is not allocated.
    pub fn bitmap_offset(&self, block: u64) -> Result<Option<u64>> {
        if block >= self.header.max_table_entries {
            return Ok(None);
        }
        let page = block / BAT_PAGE_ENTRIES;
        let page_offset = self.header.table_offset + page * BAT_PAGE_ENTRIES * 4;
        let page_entries = (self.header.max_table_entries - page * BAT_PAGE_ENTRIES).min(BAT_PAGE_ENTRIES);
        let table = load_table(
            self.cache,
            self.file,
            Kind::Table,
            page_offset,
            page_entries * 4,
            MAX_TABLE_BYTES,
            "the VHD block allocation table",
        )?;
        let at = ((block % BAT_PAGE_ENTRIES) * 4) as usize;
        let entry = table.get(at..at + 4).map(|e| be32(e, 0)).unwrap_or(UNALLOCATED);
        Ok((entry != UNALLOCATED).then(|| u64::from(entry) * SECTOR))
    }

    /// The sector bitmap at `offset` (from `bitmap_offset`).
    pub fn bitmap(&self, offset: u64) -> Result<std::sync::Arc<[u8]>> {
        let len = self.header.bitmap_size();
        load_table(self.cache, self.file, Kind::Bitmap, offset, len, MAX_CLUSTER_BYTES, "a VHD block's sector bitmap")
    }
}

/// Whether sector `sector` of a block is marked present in `bitmap` (most significant bit of
/// each byte first). Bits the bitmap does not hold read as clear.
pub fn sector_is_set(bitmap: &[u8], sector: u64) -> bool {
    let byte = usize::try_from(sector / 8).ok().and_then(|i| bitmap.get(i)).copied().unwrap_or(0);
    byte & (0x80 >> (sector % 8)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::file::test_file;

    /// A dynamic disk header (big-endian) at offset 0 of the test file: 2 MiB blocks, a BAT of
    /// 4 entries right after the header (offset 1024), with its checksum.
    fn header() -> Vec<u8> {
        let mut h = vec![
            b'c', b'x', b's', b'p', b'a', b'r', b's', b'e', //    0: cookie "cxsparse"
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, //   8: data offset: none
            0, 0, 0, 0, 0, 0, 0x04, 0x00, //                     16: table offset 1024
            0x00, 0x01, 0x00, 0x00, //                           24: header version 1.0
            0x00, 0x00, 0x00, 0x04, //                           28: max table entries 4
            0x00, 0x20, 0x00, 0x00, //                           32: block size 2 MiB
            0x00, 0x00, 0x00, 0x00, //                           36: checksum (set below)
            0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, //   40: parent unique id
            0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf, 0x00, 0x00, 0x01,
            0x00, //                           56: parent timestamp 256
        ];
        h.resize(HEADER_SIZE, 0); // 60: reserved, parent name, parent locators, reserved
        fix_checksum(&mut h);
        h
    }

    fn fix_checksum(h: &mut [u8]) {
        let sum = checksum(h, CHECKSUM_AT);
        h[CHECKSUM_AT..CHECKSUM_AT + 4].copy_from_slice(&sum.to_be_bytes());
    }

    /// The header, then its BAT: 4 entries, all unallocated.
    fn with_bat(h: &[u8]) -> Vec<u8> {
        let mut b = h.to_vec();
        b.extend([0xff; 16]);
        b
    }

    fn read(bytes: &[u8]) -> Result<DynamicHeader> {
        let (_tmp, file) = test_file(bytes);
        DynamicHeader::read(&file, 0)
    }

    fn refusal(bytes: &[u8]) -> String {
        crate::source::file::refused(read(bytes))
    }

    #[test]
    fn header_fields() {
        let h = read(&with_bat(&header())).unwrap();
        assert_eq!(h.table_offset, 1024);
        assert_eq!(h.max_table_entries, 4);
        assert_eq!(h.block_size, 2 << 20);
        assert_eq!(
            h.parent_unique_id,
            [0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf]
        );
        assert_eq!(h.parent_timestamp, 256);
        assert_eq!(h.checksum_state, "good");
        assert_eq!(h.bitmap_size(), 512);
        assert_eq!(h.table_coverage(), 8 << 20);
    }

    #[test]
    fn a_bad_checksum_is_reported_not_refused() {
        let mut h = header();
        h[36] ^= 1; //                                           36: checksum off by one bit
        let h = read(&with_bat(&h)).unwrap();
        assert!(h.checksum_state.starts_with("BAD (expected"), "{}", h.checksum_state);
    }

    #[test]
    fn refuses_wrong_cookie() {
        let mut h = header();
        h[..8].copy_from_slice(b"conectix"); //                   0: cookie "conectix"
        assert!(refusal(&with_bat(&h)).contains("no dynamic disk header (\"cxsparse\") at offset 0"));
    }

    #[test]
    fn refuses_absurd_block_sizes() {
        for size in [0, 256, 3 << 20] {
            let mut h = header();
            h[32..36].copy_from_slice(&u32::to_be_bytes(size)); // 32: block size
            let e = refusal(&with_bat(&h));
            assert!(e.contains(&format!("the VHD block size is {size} bytes")), "{e}");
        }
        let mut h = header();
        h[32..36].copy_from_slice(&u32::to_be_bytes(1 << 31)); // 32: block size 2 GiB
        let e = refusal(&with_bat(&h));
        assert!(e.contains("the VHD block size is 2147483648, more than the limit"), "{e}");
    }

    #[test]
    fn refuses_a_table_past_the_end_or_too_big() {
        let mut h = header();
        h[28..32].copy_from_slice(&u32::to_be_bytes(5)); //      28: max table entries 5: 20 bytes
        let e = refusal(&with_bat(&h));
        assert!(e.contains("the VHD block allocation table (5 entries at offset 1024) lies past the end"), "{e}");
        h[28..32].copy_from_slice(&u32::to_be_bytes(u32::MAX)); // 28: max table entries 2^32 - 1
        let e = refusal(&with_bat(&h));
        assert!(e.contains("the size of the VHD block allocation table is 17179869180, more than the limit"), "{e}");
    }
}
