//! seSparse extents (VMFS6 snapshots). Not officially documented; the layout is qemu's
//! (block/vmdk.c): a 512-byte constant header (magic 0xcafebabe), a volatile header (magic
//! 0xcafecafe) whose `replay_journal` says the journal holds unapplied changes, a grain directory
//! of u64 entries (0: no table; 0x1000_0000_xxxx_xxxx: table number xxxx_xxxx), grain tables of
//! u64 entries whose top nibble is the grain's state (0 unallocated, 1 unmapped, 2 zero,
//! 3 allocated with a 60-bit cluster number stored with its top 12 bits at bits 48..59).

use super::sparse::{Directory, SECTOR};
use super::Mapping;
use crate::cache::{Cache, Kind};
use crate::error::{Error, Result};
use crate::formats::image_file::{le64, ImageFile};
use crate::limits::{self, MAX_CLUSTER_BYTES, MAX_TABLE_BYTES, MAX_VIRTUAL_SIZE};
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
            return Err(Error::corrupt(
                &path,
                "is not a seSparse extent: no 0xcafebabe signature",
            ));
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
            return Err(Error::unsupported(
                &path,
                format!("seSparse flags {:#x} are not known", f(field::FLAGS)),
            ));
        }
        let capacity = f(field::CAPACITY).saturating_mul(SECTOR);
        limits::check(
            &path,
            "seSparse capacity (bytes)",
            capacity,
            MAX_VIRTUAL_SIZE,
        )?;
        let grain_bytes = f(field::GRAIN_SIZE)
            .checked_mul(SECTOR)
            .filter(|&g| g > 0)
            .unwrap_or(u64::MAX);
        limits::check(
            &path,
            "seSparse grain size (bytes)",
            grain_bytes,
            MAX_CLUSTER_BYTES,
        )?;
        let gt_bytes = f(field::GRAIN_TABLE_SIZE)
            .checked_mul(SECTOR)
            .filter(|&g| g >= 8)
            .unwrap_or(u64::MAX);
        limits::check(
            &path,
            "seSparse grain table size (bytes)",
            gt_bytes,
            MAX_TABLE_BYTES,
        )?;

        let mut v = [0u8; 512];
        let v_off = f(field::VOLATILE_OFFSET).saturating_mul(SECTOR);
        file.read_exact_at(&mut v, v_off, "the seSparse volatile header")?;
        if le64(&v, 0) != VOLATILE_MAGIC {
            return Err(Error::corrupt(
                &path,
                "the seSparse volatile header has no 0xcafecafe signature",
            ));
        }
        if le64(&v, 24) != 0 {
            // The journal format is not described anywhere public; guessing would risk wrong data.
            return Err(Error::unsupported(
                &path,
                "the seSparse journal holds changes that were never applied (the snapshot was not closed cleanly), and vdmount cannot replay that journal; consolidate the snapshot on ESXi, or read the image knowing the latest writes would be missing",
            ));
        }

        let gd_entries = f(field::GRAIN_DIR_SIZE).saturating_mul(SECTOR / 8);
        let gd = Directory::new(
            &file,
            f(field::GRAIN_DIR_OFFSET),
            gd_entries,
            8,
            "seSparse grain directory",
        )?;
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
        if off >= self.capacity {
            return Ok(Mapping::Unallocated);
        }
        let grain = off / self.grain_bytes;
        let gd_index = grain / self.gtes_per_gt;
        let gt_index = (grain % self.gtes_per_gt) as usize;
        let gde = self.gd.entry(&self.file, &self.cache, gd_index)?;
        if gde == 0 {
            return Ok(Mapping::Unallocated);
        }
        if gde >> 32 != 0x1000_0000 {
            return Err(self.bad(format!(
                "grain directory entry {gd_index} is {gde:#018x}, not a grain table reference"
            )));
        }
        let gt_bytes = self.gtes_per_gt * 8;
        let gt_off = (gde & 0xffff_ffff)
            .checked_mul(gt_bytes)
            .and_then(|o| o.checked_add(self.tables_offset))
            .ok_or_else(|| {
                self.bad(format!(
                    "grain table {gd_index} lies beyond any file offset"
                ))
            })?;
        let gt = self.file.load_cached(&self.cache, Kind::Table,
            gt_off,
            gt_bytes,
            MAX_TABLE_BYTES,
            &format!("seSparse grain table {gd_index}"),
        )?;
        let e = gt
            .get(gt_index * 8..gt_index * 8 + 8)
            .map(|b| le64(b, 0))
            .unwrap_or(0);
        Ok(match e >> 60 {
            0 if e == 0 => Mapping::Unallocated,
            1 | 2 => Mapping::Zero,
            3 => {
                let cluster =
                    ((e & 0x0fff_0000_0000_0000) >> 48) | ((e & 0x0000_ffff_ffff_ffff) << 12);
                let offset = cluster
                    .checked_mul(self.grain_bytes)
                    .and_then(|o| o.checked_add(self.grains_offset))
                    .ok_or_else(|| {
                        self.bad(format!("grain {grain} points beyond any file offset"))
                    })?;
                Mapping::Data { offset }
            }
            _ => {
                return Err(self.bad(format!(
                    "grain table entry {e:#018x} for grain {grain} has an unknown type"
                )))
            }
        })
    }

    fn bad(&self, msg: String) -> Error {
        Error::corrupt(&self.file.path, format!("seSparse: {msg}"))
    }
}
