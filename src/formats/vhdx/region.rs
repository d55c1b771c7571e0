//! The region tables (at 192 KiB and 256 KiB): where the BAT and the metadata region lie.

use super::guid::Guid;
use super::header::checksum;
use super::overlay::VhdxFile;
use crate::error::{Error, Result};
use crate::formats::image_file::{le32, le64};

const TABLE_OFFSETS: [u64; 2] = [192 << 10, 256 << 10];
const TABLE_BYTES: usize = 64 << 10;
const MAX_ENTRIES: u32 = 2047;

pub const BAT_GUID: Guid = Guid::new(0x2DC27766, 0xF623, 0x4200, [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08]);
pub const METADATA_GUID: Guid = Guid::new(0x8B7CA206, 0x4790, 0x4B9A, [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E]);

#[derive(Clone, Copy, Debug)]
pub struct Region {
    pub offset: u64,
    pub length: u64,
}

impl Region {
    fn end(&self) -> u64 {
        self.offset + self.length
    }
    fn overlaps(&self, other: &Region) -> bool {
        self.offset < other.end() && other.offset < self.end()
    }
}

pub struct Regions {
    pub bat: Region,
    pub metadata: Region,
    /// Why region table 1 was not used, if it was not.
    pub problem: Option<String>,
}

/// Reads region table 1, or table 2 if table 1 is damaged.
pub fn read_regions(file: &VhdxFile, log: Option<Region>) -> Result<Regions> {
    let mut problems = Vec::new();
    for (i, &offset) in TABLE_OFFSETS.iter().enumerate() {
        let mut buf = vec![0u8; TABLE_BYTES];
        if let Err(e) = file.read_exact_at(&mut buf, offset, "a VHDX region table") {
            problems.push(format!("region table {} cannot be read: {e}", i + 1));
            continue;
        }
        if &buf[..4] != b"regi" {
            problems.push(format!("region table {} has no \"regi\" signature", i + 1));
            continue;
        }
        if le32(&buf, 4) != checksum(&buf) {
            problems.push(format!("region table {} has a bad CRC-32C", i + 1));
            continue;
        }
        let mut regions = parse_table(file, &buf, i + 1, log)?;
        regions.problem = problems.pop();
        return Ok(regions);
    }
    Err(Error::corrupt(
        &file.file.path,
        format!("no valid VHDX region table: {}; the image is corrupt", problems.join("; ")),
    ))
}

fn parse_table(file: &VhdxFile, buf: &[u8], number: usize, log: Option<Region>) -> Result<Regions> {
    let path = &file.file.path;
    let count = le32(buf, 8);
    if count > MAX_ENTRIES {
        return Err(Error::corrupt(
            path,
            format!("region table {number} claims {count} entries; at most {MAX_ENTRIES} fit; the image is corrupt"),
        ));
    }
    let mut bat = None;
    let mut metadata = None;
    let mut seen: Vec<Region> = log.into_iter().collect();
    for i in 0..count as usize {
        let e = &buf[16 + i * 32..][..32];
        let guid = Guid::read(e);
        let region = Region { offset: le64(e, 16), length: le32(e, 24) as u64 };
        let required = le32(e, 28) & 1 != 0;
        let slot = if guid == BAT_GUID {
            &mut bat
        } else if guid == METADATA_GUID {
            &mut metadata
        } else if required {
            return Err(Error::unsupported(
                path,
                format!("region table {number} lists a required region {guid} that vdmount does not know; per the VHDX specification it must not be read"),
            ));
        } else {
            continue;
        };
        let name = if guid == BAT_GUID { "BAT" } else { "metadata" };
        if slot.is_some() {
            return Err(Error::corrupt(path, format!("region table {number} lists the {name} region twice")));
        }
        if region.offset < (1 << 20) || region.length == 0 || region.offset.checked_add(region.length).is_none() {
            return Err(Error::corrupt(
                path,
                format!(
                    "the {name} region (offset {}, length {}) must be non-empty and start at or after 1 MiB; the image is corrupt",
                    region.offset, region.length
                ),
            ));
        }
        if let Some(other) = seen.iter().find(|r| r.overlaps(&region)) {
            return Err(Error::corrupt(
                path,
                format!(
                    "the {name} region (offset {}, length {}) overlaps another region (offset {}, length {}); the image is corrupt",
                    region.offset, region.length, other.offset, other.length
                ),
            ));
        }
        if region.offset >= file.size {
            return Err(Error::corrupt(
                path,
                format!(
                    "the {name} region starts at offset {}, past the end of the file ({} bytes); the image is truncated or corrupt",
                    region.offset, file.size
                ),
            ));
        }
        seen.push(region);
        *slot = Some(region);
    }
    match (bat, metadata) {
        (Some(bat), Some(metadata)) => Ok(Regions { bat, metadata, problem: None }),
        (None, _) => {
            Err(Error::corrupt(path, format!("region table {number} has no BAT region; the image is corrupt")))
        }
        (_, None) => {
            Err(Error::corrupt(path, format!("region table {number} has no metadata region; the image is corrupt")))
        }
    }
}
