//! EWF2 sector tables. A table section lists where its chunks lie: a 32-byte header (first
//! chunk, entry count, Adler-32 of the two), 16-byte entries (a 64-bit file offset, a 32-bit
//! size and 32-bit flags), then the Adler-32 of the entries. A chunk is stored as it is and
//! followed by its Adler-32, or compressed, or a "pattern fill": no data, the 8 bytes of the
//! offset field repeated over the chunk. Only summaries are held; entries are read through the
//! shared cache in pieces, after one pass over the whole table checks its checksum.

use super::adler32;
use super::v2_sections::{Section, FILE_HEADER_BYTES};
use crate::cache::{Cache, Kind};
use crate::error::{Error, Result};
use crate::formats::bytes::{le32, le64};
use crate::formats::cached::load_table;
use crate::limits::{self, MAX_EWF2_TABLE_ENTRIES};
use crate::source::file::ImageFile;
use std::sync::OnceLock;

const HEADER_BYTES: u64 = 32;
const ENTRY_BYTES: u64 = 16;
/// Entries read (and cached) together: 256 KiB of a table.
const PIECE_ENTRIES: u64 = 16384;

// Chunk flags.
const COMPRESSED: u32 = 0x1;
const PATTERN_FILL: u32 = 0x4;

/// One sector table section, as held in memory.
#[derive(Debug)]
pub struct Table {
    /// Index of its segment in the set (0 for the .Ex01).
    pub segment: usize,
    pub first_chunk: u64,
    pub count: u64,
    /// Offset of its first entry, and its section's descriptor (for messages).
    entries_at: u64,
    at: u64,
    /// Whether the entries match their checksum: found on first use.
    entries_ok: OnceLock<bool>,
}

/// Where one chunk's data is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Stored as it is at `offset`, `size` bytes (its checksum included when it has one).
    Stored {
        offset: u64,
        size: u64,
    },
    Compressed {
        offset: u64,
        size: u64,
    },
    /// Eight bytes repeated over the chunk.
    Pattern([u8; 8]),
}

impl Table {
    /// Reads the header of the sector table section `s` of segment `segment`.
    pub fn read(file: &ImageFile, segment: usize, s: &Section) -> Result<Table> {
        let bad = |why: String| {
            Error::corrupt(
                &file.path,
                format!("the EWF2 sector table at offset {} {why}; the segment is corrupt", s.at),
            )
        };
        if s.data_size < HEADER_BYTES {
            return Err(bad(format!("has {} bytes, too few for its header", s.data_size)));
        }
        let mut h = [0u8; HEADER_BYTES as usize];
        file.read_exact_at(&mut h, s.data_start, "an EWF2 sector table header")?;
        if adler32(&h[..16]) != le32(&h, 16) {
            return Err(bad("has a header with a bad checksum".into()));
        }
        let count = u64::from(le32(&h, 8));
        limits::check(&file.path, "number of entries in an EWF2 sector table", count, MAX_EWF2_TABLE_ENTRIES)?;
        // The entries and the 4-byte checksum after them.
        if count == 0 || HEADER_BYTES + count * ENTRY_BYTES + 4 > s.data_size {
            return Err(bad(format!("lists {count} chunks, which do not fit in its {} bytes", s.data_size)));
        }
        let first_chunk = le64(&h, 0);
        if first_chunk.checked_add(count).is_none() {
            return Err(bad(format!("starts at chunk {first_chunk}, past any media")));
        }
        Ok(Table {
            segment,
            first_chunk,
            count,
            entries_at: s.data_start + HEADER_BYTES,
            at: s.at,
            entries_ok: OnceLock::new(),
        })
    }

    /// The piece of entries holding entry `index`, and where that entry is in it.
    fn piece(&self, cache: &Cache, file: &ImageFile, index: u64) -> Result<(std::sync::Arc<[u8]>, usize)> {
        let start = index / PIECE_ENTRIES * PIECE_ENTRIES;
        let entries = (self.count - start).min(PIECE_ENTRIES);
        let bytes = load_table(
            cache,
            file,
            Kind::Table,
            self.entries_at + start * ENTRY_BYTES,
            entries * ENTRY_BYTES,
            PIECE_ENTRIES * ENTRY_BYTES,
            "an EWF2 sector table",
        )?;
        Ok((bytes, ((index - start) * ENTRY_BYTES) as usize))
    }

    /// Checks the entries against the checksum after them, once.
    fn check_entries(&self, cache: &Cache, file: &ImageFile) -> Result<()> {
        let mut failed = None;
        let ok = *self.entries_ok.get_or_init(|| {
            let mut sum = Adler32::default();
            let mut index = 0;
            while index < self.count {
                match self.piece(cache, file, index) {
                    Ok((bytes, _)) => sum.update(&bytes),
                    Err(e) => {
                        failed = Some(e);
                        return false;
                    }
                }
                index += PIECE_ENTRIES;
            }
            let mut stored = [0u8; 4];
            match file.read_exact_at(&mut stored, self.entries_at + self.count * ENTRY_BYTES, "an EWF2 table checksum")
            {
                Ok(()) => u32::from_le_bytes(stored) == sum.value(),
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        if !ok {
            return Err(Error::corrupt(
                &file.path,
                format!(
                    "the entries of the EWF2 sector table at offset {} do not match their checksum; the image is corrupt",
                    self.at
                ),
            ));
        }
        Ok(())
    }

    /// Where chunk `index` (of this table, below `count`) is stored.
    pub fn chunk(&self, cache: &Cache, file: &ImageFile, index: u64) -> Result<Chunk> {
        self.check_entries(cache, file)?;
        let (bytes, i) = self.piece(cache, file, index)?;
        let e = bytes.get(i..i + ENTRY_BYTES as usize).unwrap_or(&[0; ENTRY_BYTES as usize]);
        let (offset, size, flags) = (le64(e, 0), u64::from(le32(e, 8)), le32(e, 12));
        // Pattern fill is a kind of compression: without the compressed flag it is ignored.
        if flags & COMPRESSED != 0 && flags & PATTERN_FILL != 0 {
            return Ok(Chunk::Pattern(e[..8].try_into().unwrap_or_default()));
        }
        let end = offset.checked_add(size).filter(|&end| size > 0 && offset >= FILE_HEADER_BYTES && end <= file.size);
        if end.is_none() {
            return Err(Error::corrupt(
                &file.path,
                format!(
                    "chunk {} is said to be {size} bytes at offset {offset}, which is not inside the file ({} bytes); the image is corrupt",
                    self.first_chunk + index,
                    file.size
                ),
            ));
        }
        Ok(if flags & COMPRESSED != 0 { Chunk::Compressed { offset, size } } else { Chunk::Stored { offset, size } })
    }
}

/// Adler-32 over data given in pieces (as `adler32`, which takes it whole).
struct Adler32 {
    a: u32,
    b: u32,
}

impl Default for Adler32 {
    fn default() -> Adler32 {
        Adler32 { a: 1, b: 0 }
    }
}

impl Adler32 {
    fn update(&mut self, data: &[u8]) {
        // 5552 bytes is the most that can be summed before b overflows u32.
        for block in data.chunks(5552) {
            for &x in block {
                self.a += u32::from(x);
                self.b += self.a;
            }
            self.a %= 65521;
            self.b %= 65521;
        }
    }

    fn value(&self) -> u32 {
        (self.b << 16) | self.a
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn adler32_in_pieces() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 300) as u8).collect();
        let mut sum = super::Adler32::default();
        for piece in data.chunks(4099) {
            sum.update(piece);
        }
        assert_eq!(sum.value(), super::adler32(&data));
    }
}
