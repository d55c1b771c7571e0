//! seSparse extents (VMFS6 snapshots). Not officially documented; the layout is qemu's
//! (block/vmdk.c): a 512-byte constant header (magic 0xcafebabe), a volatile header (magic
//! 0xcafecafe) whose `replay_journal` says the journal holds unapplied changes, a grain directory
//! of u64 entries (0: no table; 0x1000_0000_xxxx_xxxx: table number xxxx_xxxx), grain tables of
//! u64 entries whose top nibble is the grain's state (0 unallocated, 1 unmapped, 2 zero,
//! 3 allocated with a 60-bit cluster number stored with its top 12 bits at bits 48..59).

use super::sparse::{grain_indexes, grain_table_entry, Directory, SECTOR};
use super::Mapping;
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::formats::bytes::le64;
use crate::limits::{self, MAX_CLUSTER_BYTES, MAX_TABLE_BYTES, MAX_VIRTUAL_SIZE};
use crate::source::file::ImageFile;
use std::sync::Arc;

pub const CONST_MAGIC: u64 = 0xcafe_babe;
const VOLATILE_MAGIC: u64 = 0xcafe_cafe;
const VERSION: u64 = 0x0000_0002_0000_0001;

pub struct SeSparseExtent {
    pub file: ImageFile,
    pub capacity: u64,
    pub grain_bytes: u64,
    gtes_per_gt: u64,
    gd: Directory,
    tables_offset: u64,
    grains_offset: u64,
    cache: Arc<Cache>,
}

/// Header fields, by index of their u64 in the constant header.
mod field {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 1;
    pub const CAPACITY: usize = 2;
    pub const GRAIN_SIZE: usize = 3;
    pub const GRAIN_TABLE_SIZE: usize = 4;
    pub const FLAGS: usize = 5;
    pub const VOLATILE_OFFSET: usize = 10;
    pub const GRAIN_DIR_OFFSET: usize = 16;
    pub const GRAIN_DIR_SIZE: usize = 17;
    pub const GRAIN_TABLES_OFFSET: usize = 18;
    pub const GRAINS_OFFSET: usize = 24;
}

impl SeSparseExtent {
    pub fn open(file: ImageFile, cache: Arc<Cache>) -> Result<SeSparseExtent> {
        let path = file.path.clone();
        let mut h = [0u8; 512];
        file.read_exact_at(&mut h, 0, "the seSparse header")?;
        let f = |i: usize| le64(&h, i * 8);
        if f(field::MAGIC) != CONST_MAGIC {
            return Err(Error::corrupt(&path, "is not a seSparse extent: no 0xcafebabe signature"));
        }
        if f(field::VERSION) != VERSION {
            return Err(Error::unsupported(
                &path,
                format!(
                    "seSparse version {:#018x} is not the one vdmount knows (0x0000000200000001)",
                    f(field::VERSION)
                ),
            ));
        }
        if f(field::FLAGS) != 0 {
            return Err(Error::unsupported(&path, format!("seSparse flags {:#x} are not known", f(field::FLAGS))));
        }
        let capacity = f(field::CAPACITY).saturating_mul(SECTOR);
        limits::check(&path, "seSparse capacity (bytes)", capacity, MAX_VIRTUAL_SIZE)?;
        // Zero or overflowing sizes are named with the value the file holds.
        let sectors = |at: usize, what: &str, min: u64| {
            let n = f(at);
            n.checked_mul(SECTOR).filter(|&b| b >= min).ok_or_else(|| {
                Error::corrupt(&path, format!("seSparse {what} of {n} sectors is invalid; the image is corrupt"))
            })
        };
        let grain_bytes = sectors(field::GRAIN_SIZE, "grain size", 1)?;
        limits::check(&path, "seSparse grain size (bytes)", grain_bytes, MAX_CLUSTER_BYTES)?;
        let gt_bytes = sectors(field::GRAIN_TABLE_SIZE, "grain table size", 8)?;
        limits::check(&path, "seSparse grain table size (bytes)", gt_bytes, MAX_TABLE_BYTES)?;

        let mut v = [0u8; 512];
        let v_off = f(field::VOLATILE_OFFSET).saturating_mul(SECTOR);
        file.read_exact_at(&mut v, v_off, "the seSparse volatile header")?;
        if le64(&v, 0) != VOLATILE_MAGIC {
            return Err(Error::corrupt(&path, "the seSparse volatile header has no 0xcafecafe signature"));
        }
        if le64(&v, 24) != 0 {
            // The journal format is not described anywhere public; guessing would risk wrong data.
            return Err(Error::unsupported(
                &path,
                "the seSparse journal holds changes that were never applied (the snapshot was not closed cleanly), and vdmount cannot replay that journal; consolidate the snapshot on ESXi, or read the image knowing the latest writes would be missing",
            ));
        }

        let gd_entries = f(field::GRAIN_DIR_SIZE).saturating_mul(SECTOR / 8);
        let gd = Directory::new(&file, f(field::GRAIN_DIR_OFFSET), gd_entries, 8, "seSparse grain directory")?;
        let tables_offset = f(field::GRAIN_TABLES_OFFSET).saturating_mul(SECTOR);
        let grains_offset = f(field::GRAINS_OFFSET).saturating_mul(SECTOR);
        Ok(SeSparseExtent {
            file,
            capacity,
            grain_bytes,
            gtes_per_gt: gt_bytes / 8,
            gd,
            tables_offset,
            grains_offset,
            cache,
        })
    }

    pub fn lookup(&self, off: u64) -> Result<Mapping> {
        let Some((gd_index, gt_index)) = grain_indexes(off, self.capacity, self.grain_bytes, self.gtes_per_gt) else {
            return Ok(Mapping::Unallocated);
        };
        let gde = self.gd.entry(&self.file, &self.cache, gd_index)?;
        if gde == 0 {
            return Ok(Mapping::Unallocated);
        }
        if gde >> 32 != 0x1000_0000 {
            return Err(
                self.bad(format!("grain directory entry {gd_index} is {gde:#018x}, not a grain table reference"))
            );
        }
        let gt_bytes = self.gtes_per_gt * 8;
        let gt_off = (gde & 0xffff_ffff)
            .checked_mul(gt_bytes)
            .and_then(|o| o.checked_add(self.tables_offset))
            .ok_or_else(|| self.bad(format!("grain table {gd_index} lies beyond any file offset")))?;
        let what = format!("seSparse grain table {gd_index}");
        let e = grain_table_entry(&self.file, &self.cache, (gt_off, gt_bytes), gt_index, 8, &what)?;
        Ok(match e >> 60 {
            0 if e == 0 => Mapping::Unallocated,
            1 | 2 => Mapping::Zero,
            3 => {
                let cluster = ((e & 0x0fff_0000_0000_0000) >> 48) | ((e & 0x0000_ffff_ffff_ffff) << 12);
                let offset =
                    cluster.checked_mul(self.grain_bytes).and_then(|o| o.checked_add(self.grains_offset)).ok_or_else(
                        || self.bad(format!("grain {} points beyond any file offset", off / self.grain_bytes)),
                    )?;
                Mapping::Data { offset }
            }
            _ => {
                return Err(self.bad(format!(
                    "grain table entry {e:#018x} for grain {} has an unknown type",
                    off / self.grain_bytes
                )))
            }
        })
    }

    fn bad(&self, msg: String) -> Error {
        Error::corrupt(&self.file.path, format!("seSparse: {msg}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::bytes::put_le64;
    use crate::formats::vmdk::test_extent::{extent_refusal, open_extent};

    fn push(b: &mut Vec<u8>, v: u64) {
        b.extend(v.to_le_bytes());
    }

    /// A seSparse extent (little-endian u64 fields, sizes and offsets in sectors): the constant
    /// header in sector 0, the volatile header in sector 1, a one-sector grain directory in
    /// sector 2.
    fn extent() -> Vec<u8> {
        let mut b = Vec::new();
        push(&mut b, 0xcafe_babe); //                             0: magic
        push(&mut b, 0x0000_0002_0000_0001); //                   8: version 2.1
        push(&mut b, 2048); //                                   16: capacity 2048 sectors (1 MiB)
        push(&mut b, 8); //                                      24: grain size 8 sectors (4 KiB)
        push(&mut b, 64); //                                     32: grain table size 64 sectors
        push(&mut b, 0); //                                      40: flags 0
        b.resize(80, 0); //                                      48: reserved
        push(&mut b, 1); //                                      80: volatile header offset 1
        push(&mut b, 1); //                                      88: volatile header size 1
        b.resize(128, 0); //                                     96: journal header and journal
        push(&mut b, 2); //                                     128: grain directory offset 2
        push(&mut b, 1); //                                     136: grain directory size 1
        push(&mut b, 3); //                                     144: grain tables offset 3
        push(&mut b, 0); //                                     152: grain tables size 0
        b.resize(192, 0); //                                    160: free bitmap and back map
        push(&mut b, 4); //                                     192: grains offset 4
        b.resize(512, 0); //                                    200: grains size, padding
        push(&mut b, 0xcafe_cafe); //                           512: volatile magic
        push(&mut b, 0); //                                     520: free gt number
        push(&mut b, 0); //                                     528: next txn seq number
        push(&mut b, 0); //                                     536: replay journal 0
        b.resize(1536, 0); //                                   544: padding; 1024: the directory
        b
    }

    fn refusal(bytes: &[u8]) -> String {
        extent_refusal(bytes, SeSparseExtent::open)
    }

    #[test]
    fn header_fields() {
        let e = open_extent(&extent(), SeSparseExtent::open).unwrap();
        assert_eq!((e.capacity, e.grain_bytes, e.gtes_per_gt), (1 << 20, 4096, 4096));
        assert_eq!((e.tables_offset, e.grains_offset), (1536, 2048));
        assert!(matches!(e.lookup(0).unwrap(), Mapping::Unallocated));
    }

    #[test]
    fn refuses_wrong_magic_version_and_flags() {
        let mut b = extent();
        put_le64(&mut b, 0, 0xcafe_babf); //                           0: magic
        assert!(refusal(&b).contains("no 0xcafebabe signature"));
        let mut b = extent();
        put_le64(&mut b, 8, 0x0000_0003_0000_0001); //                 8: version 3.1
        assert!(refusal(&b).contains("seSparse version 0x0000000300000001 is not the one"));
        let mut b = extent();
        put_le64(&mut b, 40, 4); //                                   40: flags 4
        assert!(refusal(&b).contains("seSparse flags 0x4 are not known"));
    }

    #[test]
    fn refuses_absurd_sizes() {
        let mut b = extent();
        put_le64(&mut b, 16, u64::MAX); //                            16: capacity 2^64 - 1 sectors
        assert!(refusal(&b).contains("seSparse capacity (bytes) is"));
        for v in [0, u64::MAX] {
            let mut b = extent();
            put_le64(&mut b, 24, v); //                               24: grain size
            assert!(refusal(&b).contains(&format!("seSparse grain size of {v} sectors is invalid")));
            let mut b = extent();
            put_le64(&mut b, 32, v); //                               32: grain table size
            assert!(refusal(&b).contains(&format!("seSparse grain table size of {v} sectors is invalid")));
        }
        let mut b = extent();
        put_le64(&mut b, 24, 1 << 20); //                             24: grain size 512 MiB
        assert!(refusal(&b).contains("seSparse grain size (bytes) is 536870912, more than the limit"));
        let mut b = extent();
        put_le64(&mut b, 32, 1 << 20); //                             32: grain table size 512 MiB
        assert!(refusal(&b).contains("seSparse grain table size (bytes) is 536870912, more than the limit"));
        let mut b = extent();
        put_le64(&mut b, 136, 2); //                                 136: grain directory size 2: past the end
        assert!(refusal(&b).contains("the seSparse grain directory (128 entries at sector 2) lies outside the file"));
    }

    #[test]
    fn refuses_a_bad_volatile_header_or_an_unreplayed_journal() {
        let mut b = extent();
        put_le64(&mut b, 80, 3); //                                   80: volatile header offset 3: past the end
        assert!(refusal(&b).contains("the seSparse volatile header at offset 1536 (512 bytes) lies past the end"));
        let mut b = extent();
        put_le64(&mut b, 512, 0); //                                 512: volatile magic 0
        assert!(refusal(&b).contains("the seSparse volatile header has no 0xcafecafe signature"));
        let mut b = extent();
        put_le64(&mut b, 536, 1); //                                 536: replay journal 1
        assert!(refusal(&b).contains("the seSparse journal holds changes that were never applied"));
    }
}
