//! The block allocation table: one 64-bit entry per payload block, with a sector bitmap entry
//! after every `chunk_ratio` payload entries. Read in 64 KiB pieces through the shared cache.

use super::metadata::Metadata;
use super::overlay::VhdxFile;
use super::region::Region;
use crate::cache::{Cache, Key, Kind};
use crate::error::{Error, Result};
use crate::formats::bytes::le64;
use std::sync::Arc;

const PIECE_BYTES: u64 = 64 << 10;
const OFFSET_MASK: u64 = !0xF_FFFF;
/// Sectors one sector bitmap block (1 MiB) describes.
const SECTORS_PER_BITMAP_BLOCK: u64 = 1 << 23;

/// Where the bytes of one payload block come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Not in this file: the parent's data, or zeros without a parent.
    NotPresent,
    /// Reads as zeros (undefined, zero, unmapped).
    Zeros,
    /// All in this file at this offset.
    Present(u64),
    /// Per sector from this file (at this offset) or the parent, as the sector bitmap says.
    Partial(u64),
}

pub struct Bat {
    region: Region,
    /// Bytes of the BAT region that lie inside the file.
    readable: u64,
    pub block_size: u64,
    pub chunk_ratio: u64,
    pub sectors_per_block: u64,
    has_parent: bool,
}

impl Bat {
    pub fn new(file: &VhdxFile, region: Region, meta: &Metadata) -> Result<Bat> {
        let path = &file.file.path;
        let block_size = meta.block_size as u64;
        let chunk_ratio = SECTORS_PER_BITMAP_BLOCK * meta.logical_sector_size as u64 / block_size;
        let blocks = meta.virtual_size.div_ceil(block_size);
        let needed = if blocks == 0 { 0 } else { blocks + (blocks - 1) / chunk_ratio };
        let needed_bytes = needed * 8;
        if needed_bytes > region.length {
            return Err(Error::corrupt(
                path,
                format!(
                    "the BAT region holds {} entries, but a {}-byte disk of {}-byte blocks needs {needed}; the image is corrupt",
                    region.length / 8,
                    meta.virtual_size,
                    block_size
                ),
            ));
        }
        let readable = file.size.saturating_sub(region.offset).min(region.length);
        if needed_bytes > readable {
            return Err(Error::corrupt(
                path,
                format!(
                    "the BAT (offset {}, {needed_bytes} bytes needed) lies past the end of the file ({} bytes); the image is truncated or corrupt",
                    region.offset, file.size
                ),
            ));
        }
        Ok(Bat {
            region,
            readable,
            block_size,
            chunk_ratio,
            sectors_per_block: block_size / meta.logical_sector_size as u64,
            has_parent: meta.has_parent,
        })
    }

    /// Entry `index` of the table.
    fn entry(&self, file: &VhdxFile, cache: &Cache, index: u64) -> Result<u64> {
        let byte = index * 8;
        if byte + 8 > self.readable {
            return Err(Error::corrupt(
                &file.file.path,
                format!(
                    "BAT entry {index} lies outside the BAT region (offset {}, {} bytes in the file); the image is corrupt",
                    self.region.offset, self.readable
                ),
            ));
        }
        let piece_start = byte / PIECE_BYTES * PIECE_BYTES;
        let piece_len = (self.readable - piece_start).min(PIECE_BYTES) / 8 * 8;
        let offset = self.region.offset + piece_start;
        // Read through the replayed log (VhdxFile), not the bare file.
        let piece = cache.get_or_load(Key { file: file.file.id, kind: Kind::Table, offset }, || {
            file.read_vec(offset, piece_len, PIECE_BYTES, "a piece of the VHDX BAT")
        })?;
        Ok(le64(&piece, (byte - piece_start) as usize))
    }

    /// Where payload block `block` lives.
    pub fn payload(&self, file: &VhdxFile, cache: &Cache, block: u64) -> Result<Payload> {
        let index = block + block / self.chunk_ratio;
        let entry = self.entry(file, cache, index)?;
        let offset = entry & OFFSET_MASK;
        Ok(match entry & 7 {
            0 => Payload::NotPresent,
            // 5 is "unmapped" in draft 0.95 of the specification; qemu reads it as zeros too.
            1..=3 | 5 => Payload::Zeros,
            6 => Payload::Present(offset),
            7 if self.has_parent => Payload::Partial(offset),
            state => {
                return Err(Error::corrupt(
                    &file.file.path,
                    format!(
                        "BAT entry {index} (block {block}) has state {state}, which {}; the image is corrupt",
                        if state == 7 { "only a differencing image may use" } else { "is reserved" }
                    ),
                ))
            }
        })
    }

    /// The sector bitmap bits (bit n of byte n/8 = sector n, set = in this file) of payload
    /// block `block`.
    pub fn sector_bitmap(&self, file: &VhdxFile, cache: &Cache, block: u64) -> Result<Arc<[u8]>> {
        let chunk = block / self.chunk_ratio;
        let index = chunk * (self.chunk_ratio + 1) + self.chunk_ratio;
        let entry = self.entry(file, cache, index)?;
        if entry & 7 != 6 {
            return Err(Error::corrupt(
                &file.file.path,
                format!(
                    "block {block} is partially present, but its sector bitmap (BAT entry {index}) has state {} instead of present; the image is corrupt",
                    entry & 7
                ),
            ));
        }
        let bytes = self.sectors_per_block / 8;
        let offset = (entry & OFFSET_MASK) + (block % self.chunk_ratio) * bytes;
        cache.get_or_load(Key { file: file.file.id, kind: Kind::Bitmap, offset }, || {
            file.read_vec(offset, bytes, 1 << 20, "a VHDX sector bitmap")
        })
    }
}
