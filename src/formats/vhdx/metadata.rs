//! The metadata region: a table of items, of which vdmount reads the file parameters, the
//! virtual disk size, the sector sizes, the page 83 data (the disk's id) and the parent locator.

use super::guid::Guid;
use super::overlay::VhdxFile;
use super::region::Region;
use crate::error::{Error, Result};
use crate::formats::bytes::{le16, le32, le64};
use crate::limits::{MAX_VHDX_METADATA_ITEM_BYTES, MAX_VIRTUAL_SIZE};

const TABLE_BYTES: usize = 64 << 10;
const MAX_ENTRIES: u16 = 2047;
/// The largest virtual disk the specification allows: 64 TiB.
const SPEC_MAX_VIRTUAL_SIZE: u64 = 64 << 40;

const FILE_PARAMETERS: Guid = Guid::new(0xCAA16737, 0xFA36, 0x4D43, [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B]);
const VIRTUAL_DISK_SIZE: Guid = Guid::new(0x2FA54224, 0xCD1B, 0x4876, [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8]);
const PAGE_83_DATA: Guid = Guid::new(0xBECA12AB, 0xB2E6, 0x4523, [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46]);
const LOGICAL_SECTOR_SIZE: Guid =
    Guid::new(0x8141BF1D, 0xA96F, 0x4709, [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F]);
const PHYSICAL_SECTOR_SIZE: Guid =
    Guid::new(0xCDA348C7, 0x445D, 0x4471, [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56]);
const PARENT_LOCATOR: Guid = Guid::new(0xA8D35F2D, 0xB30B, 0x454D, [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C]);

pub struct Metadata {
    pub block_size: u32,
    pub leave_blocks_allocated: bool,
    pub has_parent: bool,
    pub virtual_size: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: Option<u32>,
    pub page83: Option<Guid>,
    pub parent_locator: Option<ParentLocator>,
}

/// The parent locator: a locator type and UTF-16 key/value pairs.
pub struct ParentLocator {
    pub locator_type: Guid,
    pub entries: Vec<(String, String)>,
}

impl ParentLocator {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

pub fn read_metadata(file: &VhdxFile, region: Region) -> Result<Metadata> {
    let path = &file.file.path;
    let corrupt = |msg: String| Error::corrupt(path, format!("{msg}; the image is corrupt"));
    if region.length < TABLE_BYTES as u64 {
        return Err(corrupt(format!("the metadata region is {} bytes, smaller than its 64 KiB table", region.length)));
    }
    let mut table = vec![0u8; TABLE_BYTES];
    file.read_exact_at(&mut table, region.offset, "the VHDX metadata table")?;
    if &table[..8] != b"metadata" {
        return Err(corrupt(format!("no \"metadata\" signature at the metadata region (offset {})", region.offset)));
    }
    let count = le16(&table, 10);
    if count > MAX_ENTRIES {
        return Err(corrupt(format!("the metadata table claims {count} entries; at most {MAX_ENTRIES} fit")));
    }

    let mut items: Vec<(Guid, Vec<u8>)> = Vec::new();
    for i in 0..count as usize {
        let e = &table[32 + i * 32..][..32];
        let id = Guid::read(e);
        let (offset, length) = (le32(e, 16) as u64, le32(e, 20) as u64);
        let required = le32(e, 24) & 4 != 0;
        let known = [
            FILE_PARAMETERS,
            VIRTUAL_DISK_SIZE,
            PAGE_83_DATA,
            LOGICAL_SECTOR_SIZE,
            PHYSICAL_SECTOR_SIZE,
            PARENT_LOCATOR,
        ];
        if !known.contains(&id) {
            if required {
                return Err(Error::unsupported(
                    path,
                    format!("the metadata table lists a required item {id} that vdmount does not know; per the VHDX specification it must not be read"),
                ));
            }
            continue;
        }
        if items.iter().any(|(g, _)| *g == id) {
            return Err(corrupt(format!("the metadata table lists item {id} twice")));
        }
        if length > 0 && (offset < TABLE_BYTES as u64 || offset + length > region.length) {
            return Err(corrupt(format!(
                "metadata item {id} (offset {offset}, length {length}) lies outside the metadata region ({} bytes after its table)",
                region.length
            )));
        }
        let data =
            file.read_vec(region.offset + offset, length, MAX_VHDX_METADATA_ITEM_BYTES, "a VHDX metadata item")?;
        items.push((id, data));
    }
    let item = |id: Guid, name: &str, min_len: usize| -> Result<Option<&[u8]>> {
        match items.iter().find(|(g, _)| *g == id) {
            None => Ok(None),
            Some((_, d)) if d.len() < min_len => {
                Err(corrupt(format!("the {name} metadata item is {} bytes, less than its {min_len}", d.len())))
            }
            Some((_, d)) => Ok(Some(d)),
        }
    };
    let missing = |name: &str| corrupt(format!("the metadata table has no {name} item, which every VHDX must have"));

    let params = item(FILE_PARAMETERS, "file parameters", 8)?.ok_or_else(|| missing("file parameters"))?;
    let block_size = le32(params, 0);
    let flags = le32(params, 4);
    if !block_size.is_power_of_two() || !((1 << 20)..=(256 << 20)).contains(&block_size) {
        return Err(corrupt(format!("block size {block_size} is not a power of two from 1 MiB to 256 MiB")));
    }

    let logical_sector_size =
        le32(item(LOGICAL_SECTOR_SIZE, "logical sector size", 4)?.ok_or_else(|| missing("logical sector size"))?, 0);
    if logical_sector_size != 512 && logical_sector_size != 4096 {
        return Err(corrupt(format!("logical sector size {logical_sector_size} is neither 512 nor 4096")));
    }
    let physical_sector_size = item(PHYSICAL_SECTOR_SIZE, "physical sector size", 4)?.map(|d| le32(d, 0));

    let virtual_size =
        le64(item(VIRTUAL_DISK_SIZE, "virtual disk size", 8)?.ok_or_else(|| missing("virtual disk size"))?, 0);
    crate::limits::check(path, "virtual disk size", virtual_size, SPEC_MAX_VIRTUAL_SIZE.min(MAX_VIRTUAL_SIZE))?;
    if !virtual_size.is_multiple_of(logical_sector_size as u64) {
        return Err(corrupt(format!(
            "virtual disk size {virtual_size} is not a multiple of the logical sector size {logical_sector_size}"
        )));
    }

    let page83 = item(PAGE_83_DATA, "page 83 data", 16)?.map(Guid::read);
    let parent_locator = match item(PARENT_LOCATOR, "parent locator", 20)? {
        Some(d) => Some(parse_parent_locator(d).map_err(|m| corrupt(format!("the parent locator is invalid: {m}")))?),
        None => None,
    };
    Ok(Metadata {
        block_size,
        leave_blocks_allocated: flags & 1 != 0,
        has_parent: flags & 2 != 0,
        virtual_size,
        logical_sector_size,
        physical_sector_size,
        page83,
        parent_locator,
    })
}

/// Header: locator type GUID, 2 reserved bytes, key/value count. Entries of 12 bytes: key
/// offset, value offset (from the item's start), key length, value length; UTF-16LE text.
fn parse_parent_locator(d: &[u8]) -> std::result::Result<ParentLocator, String> {
    let locator_type = Guid::read(d);
    let count = le16(d, 18) as usize;
    if 20 + count * 12 > d.len() {
        return Err(format!("{count} key/value entries do not fit in its {} bytes", d.len()));
    }
    let text = |offset: u32, len: u16| -> std::result::Result<String, String> {
        let (offset, len) = (offset as usize, len as usize);
        let bytes = d.get(offset..offset + len).ok_or_else(|| format!("a string at {offset}+{len} lies outside it"))?;
        let units: Vec<u16> = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        Ok(String::from_utf16_lossy(&units).trim_end_matches('\0').to_string())
    };
    let mut entries = Vec::with_capacity(count);
    for i in 0..count {
        let e = &d[20 + i * 12..][..12];
        let key = text(le32(e, 0), le16(e, 8))?;
        let value = text(le32(e, 4), le16(e, 10))?;
        entries.push((key, value));
    }
    Ok(ParentLocator { locator_type, entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::vhdx::overlay::Overlay;
    use crate::source::file::test_file;

    /// Where the items start, after the 64 KiB table.
    const ITEMS: usize = TABLE_BYTES;

    /// One table entry (little-endian): item GUID, offset from the region's start, length, flags
    /// (bit 1 virtual disk, bit 2 required).
    fn entry(t: &mut Vec<u8>, id: Guid, offset: usize, length: u32) {
        t.extend(id.0); //                                        0: item id
        t.extend((offset as u32).to_le_bytes()); //              16: offset
        t.extend(length.to_le_bytes()); //                       20: length
        t.extend([0x06, 0, 0, 0]); //                            24: flags: virtual disk, required
        t.extend([0, 0, 0, 0]); //                               28: reserved
    }

    /// A metadata region at offset 0 of the test file: its table of five entries, then the
    /// items (32 MiB blocks, a 1 GiB disk of 512-byte logical and 4 KiB physical sectors).
    fn region() -> Vec<u8> {
        let mut b = vec![
            b'm', b'e', b't', b'a', b'd', b'a', b't', b'a', //    0: signature "metadata"
            0x00, 0x00, //                                        8: reserved
            0x05, 0x00, //                                       10: entry count 5
        ];
        b.resize(32, 0); //                                      12: reserved
        entry(&mut b, FILE_PARAMETERS, ITEMS, 8); //             32: entry 0
        entry(&mut b, VIRTUAL_DISK_SIZE, ITEMS + 8, 8); //       64: entry 1
        entry(&mut b, LOGICAL_SECTOR_SIZE, ITEMS + 16, 4); //    96: entry 2
        entry(&mut b, PHYSICAL_SECTOR_SIZE, ITEMS + 20, 4); //  128: entry 3
        entry(&mut b, PAGE_83_DATA, ITEMS + 24, 16); //         160: entry 4
        b.resize(ITEMS, 0); //                                  192: unused entries
        b.extend([
            0x00, 0x00, 0x00, 0x02, //                          64K: block size 32 MiB
            0x00, 0x00, 0x00, 0x00, //                       64K+4:   flags 0
            0, 0, 0, 0x40, 0, 0, 0, 0, //                    64K+8: virtual disk size 1 GiB
            0x00, 0x02, 0x00, 0x00, //                      64K+16: logical sector size 512
            0x00, 0x10, 0x00, 0x00, //                      64K+20: physical sector size 4096
            0x83, 0x83, 0x83, 0x83, 0x83, 0x83, 0x83, 0x83, // 64K+24: page 83 data (a GUID)
            0x83, 0x83, 0x83, 0x83, 0x83, 0x83, 0x83, 0x83,
        ]);
        b
    }

    /// Sets `v` at `at` (an entry's field is at 32 + 32 * entry + field offset).
    fn set(b: &mut [u8], at: usize, v: &[u8]) {
        b[at..at + v.len()].copy_from_slice(v);
    }

    fn read(bytes: &[u8]) -> Result<Metadata> {
        let (_tmp, file) = test_file(bytes);
        let length = (bytes.len() as u64).max(TABLE_BYTES as u64);
        read_metadata(&VhdxFile::new(file, Overlay::default(), 0), Region { offset: 0, length })
    }

    fn refusal(bytes: &[u8]) -> String {
        crate::source::file::refused(read(bytes))
    }

    #[test]
    fn metadata_fields() {
        let m = read(&region()).unwrap();
        assert_eq!(m.block_size, 32 << 20);
        assert!(!m.leave_blocks_allocated && !m.has_parent);
        assert_eq!(m.virtual_size, 1 << 30);
        assert_eq!(m.logical_sector_size, 512);
        assert_eq!(m.physical_sector_size, Some(4096));
        assert_eq!(m.page83, Some(Guid([0x83; 16])));
        assert!(m.parent_locator.is_none());
    }

    #[test]
    fn parent_locator_and_flags() {
        let mut b = region();
        set(&mut b, 10, &[6, 0]); //                             10: entry count 6
        let at = b.len();
        let mut t = Vec::new();
        entry(&mut t, PARENT_LOCATOR, at, 20 + 12 + 4 + 6); //  192: entry 5
        set(&mut b, 192, &t);
        b[ITEMS + 4] = 3; //                                  64K+4: flags: leave blocks allocated, has parent
        b.extend([0x77; 16]); //                               item+0: locator type GUID
        b.extend([0, 0]); //                                  item+16: reserved
        b.extend([1, 0]); //                                  item+18: key/value count 1
        b.extend([32, 0, 0, 0]); //                           item+20: key offset 32
        b.extend([36, 0, 0, 0]); //                           item+24: value offset 36
        b.extend([4, 0]); //                                  item+28: key length 4
        b.extend([6, 0]); //                                  item+30: value length 6
        b.extend([b'k', 0, b'y', 0]); //                      item+32: key "ky" (UTF-16LE)
        b.extend([b'a', 0, b'b', 0, b'c', 0]); //             item+36: value "abc"
        let m = read(&b).unwrap();
        assert!(m.leave_blocks_allocated && m.has_parent);
        let p = m.parent_locator.unwrap();
        assert_eq!(p.locator_type, Guid([0x77; 16]));
        assert_eq!(p.entries, [("ky".to_string(), "abc".to_string())]);
        assert_eq!(p.get("ky"), Some("abc"));
        b[at + 18] = 2; //                                    item+18: key/value count 2: 44 bytes
        assert!(refusal(&b).contains("the parent locator is invalid: 2 key/value entries do not fit in its 42 bytes"));
        b[at + 18] = 1;
        b[at + 30] = 8; //                                    item+30: value length 8: past the item
        assert!(refusal(&b).contains("the parent locator is invalid: a string at 36+8 lies outside it"));
    }

    #[test]
    fn refuses_a_short_region_wrong_signature_or_too_many_entries() {
        let (_tmp, file) = test_file(&region());
        let short = Region { offset: 0, length: 65535 };
        let Err(e) = read_metadata(&VhdxFile::new(file, Overlay::default(), 0), short) else { panic!() };
        assert!(e.to_string().contains("the metadata region is 65535 bytes, smaller than its 64 KiB table"));
        let mut b = region();
        b[0] = b'M'; //                                           0: signature "Metadata"
        assert!(refusal(&b).contains("no \"metadata\" signature at the metadata region (offset 0)"));
        let mut b = region();
        set(&mut b, 10, &2048u16.to_le_bytes()); //              10: entry count 2048
        assert!(refusal(&b).contains("the metadata table claims 2048 entries; at most 2047"));
    }

    #[test]
    fn refuses_unknown_required_items_duplicates_and_items_outside_the_region() {
        let mut b = region();
        set(&mut b, 160, &[0x55; 16]); //                       160: entry 4: an unknown GUID
        let e = refusal(&b);
        assert!(e.contains("a required item {55555555-5555-5555-5555-555555555555} that vdmount does not know"), "{e}");
        set(&mut b, 184, &[0x02, 0, 0, 0]); //                  184: entry 4's flags: not required
        assert!(read(&b).unwrap().page83.is_none());
        set(&mut b, 160, &FILE_PARAMETERS.0); //                160: entry 4: file parameters again
        assert!(refusal(&b).contains(&format!("the metadata table lists item {FILE_PARAMETERS} twice")));
        let mut b = region();
        set(&mut b, 48, &100u32.to_le_bytes()); //               48: entry 0's offset 100: in the table
        let e = refusal(&b);
        assert!(e.contains(&format!("metadata item {FILE_PARAMETERS} (offset 100, length 8) lies outside")), "{e}");
        let mut b = region();
        set(&mut b, 180, &17u32.to_le_bytes()); //              180: entry 4's length 17: past the end
        assert!(refusal(&b).contains("(offset 65560, length 17) lies outside the metadata region"));
    }

    #[test]
    fn refuses_missing_or_short_items() {
        let mut b = region();
        set(&mut b, 32, &[0x55; 16]); //                         32: entry 0: file parameters gone
        set(&mut b, 56, &[0; 4]); //                             56:   not required
        assert!(refusal(&b).contains("the metadata table has no file parameters item"));
        let mut b = region();
        set(&mut b, 116, &2u32.to_le_bytes()); //               116: entry 2's length 2
        assert!(refusal(&b).contains("the logical sector size metadata item is 2 bytes, less than its 4"));
    }

    #[test]
    fn refuses_absurd_block_sector_and_disk_sizes() {
        for size in [(1u32 << 20) - 1, 512 << 10, 512 << 20] {
            let mut b = region();
            set(&mut b, ITEMS, &size.to_le_bytes()); //         64K: block size
            let e = refusal(&b);
            assert!(e.contains(&format!("block size {size} is not a power of two from 1 MiB to 256 MiB")), "{e}");
        }
        let mut b = region();
        set(&mut b, ITEMS + 16, &1024u32.to_le_bytes()); //  64K+16: logical sector size 1024
        assert!(refusal(&b).contains("logical sector size 1024 is neither 512 nor 4096"));
        let mut b = region();
        set(&mut b, ITEMS + 8, &1000u64.to_le_bytes()); //    64K+8: virtual disk size 1000
        assert!(refusal(&b).contains("virtual disk size 1000 is not a multiple of the logical sector size 512"));
        set(&mut b, ITEMS + 8, &((64u64 << 40) + 512).to_le_bytes()); // 64K+8: 64 TiB + 512
        assert!(refusal(&b).contains("virtual disk size is 70368744178176, more than the limit of 70368744177664"));
    }
}
