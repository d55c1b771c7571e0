//! The region tables (at 192 KiB and 256 KiB): where the BAT and the metadata region lie.

use super::guid::Guid;
use super::header::checksum;
use super::overlay::VhdxFile;
use crate::error::{Error, Result};
use crate::formats::bytes::{le32, le64};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::vhdx::overlay::Overlay;
    use crate::source::file::test_file;

    /// A region table (little-endian): the BAT at 1 MiB and the metadata at 1 MiB + 64 KiB,
    /// 64 KiB each, both required; padded to 64 KiB, with its CRC-32C.
    fn table() -> Vec<u8> {
        let mut t = vec![
            b'r', b'e', b'g', b'i', //                            0: signature "regi"
            0x00, 0x00, 0x00, 0x00, //                            4: checksum (set below)
            0x02, 0x00, 0x00, 0x00, //                            8: entry count 2
            0x00, 0x00, 0x00, 0x00, //                           12: reserved
        ];
        t.extend(BAT_GUID.0); //                                 16: entry 0: the BAT's GUID
        t.extend([0, 0, 0x10, 0, 0, 0, 0, 0]); //                32:   file offset 1 MiB
        t.extend([0, 0, 0x01, 0]); //                            40:   length 64 KiB
        t.extend([1, 0, 0, 0]); //                               44:   required
        t.extend(METADATA_GUID.0); //                            48: entry 1: the metadata's GUID
        t.extend([0, 0, 0x11, 0, 0, 0, 0, 0]); //                64:   file offset 1 MiB + 64 KiB
        t.extend([0, 0, 0x01, 0]); //                            72:   length 64 KiB
        t.extend([1, 0, 0, 0]); //                               76:   required
        t.resize(TABLE_BYTES, 0); //                             80: unused entries
        fix_checksum(&mut t);
        t
    }

    fn fix_checksum(t: &mut [u8]) {
        let crc = checksum(t);
        t[4..8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Entry `i`'s field at `at` (0 GUID, 16 offset, 24 length, 28 required), set to `v`.
    fn set(t: &mut [u8], i: usize, at: usize, v: &[u8]) {
        let start = 16 + i * 32 + at;
        t[start..start + v.len()].copy_from_slice(v);
        fix_checksum(t);
    }

    /// A file of 1 MiB + 128 KiB with `t1` at 192 KiB and `t2` at 256 KiB.
    fn file_with(t1: &[u8], t2: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 192 << 10];
        b.extend(t1);
        b.resize(256 << 10, 0);
        b.extend(t2);
        b.resize((1 << 20) + (128 << 10), 0);
        b
    }

    fn read(bytes: &[u8], log: Option<Region>) -> Result<Regions> {
        let (_tmp, file) = test_file(bytes);
        read_regions(&VhdxFile::new(file, Overlay::default(), 0), log)
    }

    fn refusal(t: &[u8]) -> String {
        crate::source::file::refused(read(&file_with(t, t), None))
    }

    #[test]
    fn table_fields() {
        let r = read(&file_with(&table(), &table()), None).unwrap();
        assert_eq!((r.bat.offset, r.bat.length), (1 << 20, 64 << 10));
        assert_eq!((r.metadata.offset, r.metadata.length), ((1 << 20) + (64 << 10), 64 << 10));
        assert!(r.problem.is_none());
    }

    #[test]
    fn table_2_stands_in_for_a_damaged_table_1() {
        let mut t1 = table();
        t1[8] = 1; //                                             8: entry count changed, checksum not
        let r = read(&file_with(&t1, &table()), None).unwrap();
        assert_eq!(r.problem.as_deref(), Some("region table 1 has a bad CRC-32C"));
        let e = crate::source::file::refused(read(&file_with(&t1, &[0; 4]), None));
        assert!(e.contains("no valid VHDX region table: region table 1 has a bad CRC-32C; region table 2 has no \"regi\" signature"), "{e}");
    }

    #[test]
    fn refuses_too_many_entries() {
        let mut t = table();
        t[8..12].copy_from_slice(&2048u32.to_le_bytes()); //      8: entry count 2048
        fix_checksum(&mut t);
        assert!(refusal(&t).contains("region table 1 claims 2048 entries; at most 2047"));
    }

    #[test]
    fn refuses_unknown_required_regions_only() {
        let mut t = table();
        set(&mut t, 1, 0, &[0x42; 16]); //                       48: entry 1: an unknown GUID
        set(&mut t, 1, 28, &[0, 0, 0, 0]); //                    76:   not required
        assert!(refusal(&t).contains("has no metadata region"));
        set(&mut t, 1, 28, &[1, 0, 0, 0]); //                    76:   required
        let e = refusal(&t);
        assert!(
            e.contains("lists a required region {42424242-4242-4242-4242-424242424242} that vdmount does not know"),
            "{e}"
        );
    }

    #[test]
    fn refuses_a_region_twice_or_missing() {
        let mut t = table();
        set(&mut t, 1, 0, &BAT_GUID.0); //                       48: entry 1: the BAT's GUID again
        assert!(refusal(&t).contains("region table 1 lists the BAT region twice"));
        let mut t = table();
        t[8] = 1; //                                              8: entry count 1 (only the BAT)
        fix_checksum(&mut t);
        assert!(refusal(&t).contains("region table 1 has no metadata region"));
    }

    #[test]
    fn refuses_regions_before_1_mib_empty_overlapping_or_past_the_end() {
        let mut t = table();
        set(&mut t, 0, 16, &(64u64 << 10).to_le_bytes()); //     32: BAT offset 64 KiB
        assert!(refusal(&t)
            .contains("the BAT region (offset 65536, length 65536) must be non-empty and start at or after 1 MiB"));
        let mut t = table();
        set(&mut t, 0, 24, &0u32.to_le_bytes()); //              40: BAT length 0
        assert!(refusal(&t).contains("the BAT region (offset 1048576, length 0) must be non-empty"));
        let mut t = table();
        set(&mut t, 1, 16, &((1u64 << 20) + 4096).to_le_bytes()); // 64: metadata offset 1 MiB + 4 KiB
        let e = refusal(&t);
        assert!(
            e.contains("the metadata region (offset 1052672, length 65536) overlaps another region (offset 1048576"),
            "{e}"
        );
        let mut t = table();
        set(&mut t, 1, 16, &(2u64 << 20).to_le_bytes()); //      64: metadata offset 2 MiB
        let e = refusal(&t);
        assert!(e.contains("the metadata region starts at offset 2097152, past the end of the file"), "{e}");
    }

    #[test]
    fn refuses_a_region_overlapping_the_log() {
        let log = Region { offset: (1 << 20) + (32 << 10), length: 64 << 10 };
        let e = crate::source::file::refused(read(&file_with(&table(), &table()), Some(log)));
        assert!(
            e.contains("the BAT region (offset 1048576, length 65536) overlaps another region (offset 1081344"),
            "{e}"
        );
    }
}
