//! EWF chunk tables. Each "table" section lists where its chunks lie in its segment file: a
//! 24-byte header (entry count, base offset, checksum), then one 32-bit entry per chunk whose top
//! bit says "zlib-compressed" and whose other 31 bits are the offset from the base. A chunk ends
//! where the next one starts; the table's last chunk ends with the data it lies in (the
//! "sectors" section before the table, or the table section itself in SMART and EnCase 1).
//! Only summaries are held; entries are read through the shared cache in pieces.
//! ("table2" sections mirror "table" ones and are not read.)

use super::adler32;
use super::segment::Section;
use crate::cache::{Cache, Kind};
use crate::error::{Error, Result};
use crate::formats::bytes::{le32, le64};
use crate::formats::cached::load_table;
use crate::limits::{self, MAX_EWF_TABLE_ENTRIES};
use crate::source::file::ImageFile;

/// Entries read (and cached) together: 64 KiB of a table, plus the entry after them.
const PIECE_ENTRIES: u64 = 16384;
const HEADER_BYTES: u64 = 24;
const COMPRESSED: u32 = 1 << 31;

/// One table section, as held in memory.
#[derive(Clone, Debug)]
pub struct Table {
    /// Index of its segment in the set (0 for the .E01).
    pub segment: usize,
    /// The first chunk of the media it lists.
    pub first_chunk: u64,
    pub count: u64,
    /// Offset of its first entry in the segment file.
    entries_at: u64,
    /// What the entries' offsets are relative to (0: the file's start).
    base: u64,
    /// Where the data of its last chunk ends.
    data_end: u64,
}

/// Where one chunk is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub offset: u64,
    /// Bytes stored: the zlib stream, or the data and its 4-byte checksum.
    pub stored: u64,
    pub compressed: bool,
}

impl Table {
    /// Reads the header of the table section `s` of segment `segment`; `sectors_end` is where the
    /// last "sectors" section before it ends (its chunks' data, unless they lie in the table).
    pub fn read(
        file: &ImageFile,
        segment: usize,
        s: &Section,
        first_chunk: u64,
        sectors_end: Option<u64>,
    ) -> Result<Table> {
        let mut h = [0u8; HEADER_BYTES as usize];
        file.read_exact_at(&mut h, s.data_start(), "an EWF table header")?;
        if adler32(&h[..20]) != le32(&h, 20) {
            return Err(Error::corrupt(
                &file.path,
                format!("the EWF table header at offset {} has a bad checksum; the segment is corrupt", s.start),
            ));
        }
        let count = u64::from(le32(&h, 0));
        limits::check(&file.path, "number of entries in an EWF table", count, MAX_EWF_TABLE_ENTRIES)?;
        let entries_at = s.data_start() + HEADER_BYTES;
        if count == 0 || entries_at + count * 4 > s.end() {
            return Err(Error::corrupt(
                &file.path,
                format!(
                    "the EWF table at offset {} lists {count} chunks, which do not fit in its {} bytes; the segment is corrupt",
                    s.start,
                    s.data_len()
                ),
            ));
        }
        let base = le64(&h, 8);
        let mut first = [0u8; 4];
        file.read_exact_at(&mut first, entries_at, "an EWF table entry")?;
        let first_offset = base.saturating_add(u64::from(le32(&first, 0) & !COMPRESSED));
        // Chunks after the entries, in the table section itself (SMART, EnCase 1); else in the
        // sectors section before it.
        let data_end = if first_offset >= entries_at { s.end() } else { sectors_end.unwrap_or(s.start) };
        Ok(Table { segment, first_chunk, count, entries_at, base, data_end: data_end.min(file.size) })
    }

    /// Where chunk `index` (of this table, below `count`) is stored.
    pub fn chunk(&self, cache: &Cache, file: &ImageFile, index: u64) -> Result<Chunk> {
        let piece = index / PIECE_ENTRIES;
        let start = piece * PIECE_ENTRIES;
        let entries = (self.count - start).min(PIECE_ENTRIES + 1);
        let bytes = load_table(
            cache,
            file,
            Kind::Table,
            self.entries_at + start * 4,
            entries * 4,
            (PIECE_ENTRIES + 1) * 4,
            "an EWF table",
        )?;
        let i = ((index - start) * 4) as usize;
        let raw = bytes.get(i..i + 4).map_or(0, |e| le32(e, 0));
        let offset = self.base.saturating_add(u64::from(raw & !COMPRESSED));
        let end = match bytes.get(i + 4..i + 8) {
            Some(e) => self.base.saturating_add(u64::from(le32(e, 0) & !COMPRESSED)),
            None => self.data_end,
        };
        if end <= offset || end > file.size {
            return Err(Error::corrupt(
                &file.path,
                format!(
                    "chunk {} is at offset {offset} and ends at {end}, {}; the image is corrupt",
                    self.first_chunk + index,
                    if end > file.size {
                        format!("past the end of the file ({} bytes)", file.size)
                    } else {
                        "before it starts".to_string()
                    }
                ),
            ));
        }
        Ok(Chunk { offset, stored: end - offset, compressed: raw & COMPRESSED != 0 })
    }
}
