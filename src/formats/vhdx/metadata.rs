//! The metadata region: a table of items, of which vdmount reads the file parameters, the
//! virtual disk size, the sector sizes, the page 83 data (the disk's id) and the parent locator.

use super::guid::Guid;
use super::overlay::VhdxFile;
use super::region::Region;
use crate::error::{Error, Result};
use crate::formats::image_file::{le16, le32, le64};
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
