//! "mish" chunk tables: each blkx entry's table maps a run of the disk's sectors to chunks of
//! the data fork, each stored one way (zeros, as is, or compressed). All tables together become
//! one sorted, non-overlapping list of chunks, checked against the disk size and the data fork.

use super::koly::Koly;
use crate::error::{Error, Result};
use crate::formats::bytes::{be32, be64};
pub use crate::formats::SECTOR;
use crate::limits::{self, MAX_DMG_CHUNKS, MAX_DMG_CHUNK_BYTES};
use std::ops::Range;
use std::path::Path;

const HEADER: usize = 204;
const ENTRY: usize = 40;

/// How a chunk is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Zero,
    Raw,
    /// "Ignore": free space the writer left out; reads as zeros.
    Ignore,
    Adc,
    Zlib,
    Bzip2,
    Lzfse,
}

impl Kind {
    /// The kind a chunk type number stands for; None for comments and the terminator, which
    /// hold no sectors.
    fn from_type(t: u32) -> std::result::Result<Option<Kind>, String> {
        Ok(Some(match t {
            0x0000_0000 => Kind::Zero,
            0x0000_0001 => Kind::Raw,
            0x0000_0002 => Kind::Ignore,
            0x8000_0004 => Kind::Adc,
            0x8000_0005 => Kind::Zlib,
            0x8000_0006 => Kind::Bzip2,
            0x8000_0007 => Kind::Lzfse,
            0x7fff_fffe | 0xffff_ffff => return Ok(None),
            t => return Err(format!("has a chunk of unknown type 0x{t:08x}")),
        }))
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Zero => "zero",
            Kind::Raw => "raw",
            Kind::Ignore => "ignore",
            Kind::Adc => "adc",
            Kind::Zlib => "zlib",
            Kind::Bzip2 => "bzip2",
            Kind::Lzfse => "lzfse",
        }
    }

    pub fn is_compressed(self) -> bool {
        matches!(self, Kind::Adc | Kind::Zlib | Kind::Bzip2 | Kind::Lzfse)
    }
}

/// One chunk: `sectors` sectors of the disk from sector `start`, stored as `kind` in the
/// `length` bytes at `offset` of the file (for raw chunks, `sectors * 512` bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub start: u64,
    pub sectors: u64,
    pub kind: Kind,
    pub offset: u64,
    pub length: u64,
}

impl Chunk {
    pub fn end(&self) -> u64 {
        self.start + self.sectors
    }
    pub fn bytes(&self) -> u64 {
        self.sectors * SECTOR
    }
}

/// What a table stores about its own sectors, for `vdmount verify`.
pub struct TableSum {
    /// Type (0 none, 2 CRC-32), size in bits, and the first 32 bits of the value.
    pub checksum: (u32, u32, u32),
    /// The bytes of the disk the checksum covers, in order, neighbours joined: the table's
    /// chunks but its "ignore" ones, which hdiutil leaves out of the sum (its zero chunks are
    /// in it; seen on dfVFS's hfsplus_zlib.dmg).
    pub covered: Vec<Range<u64>>,
}

/// Appends the chunks of table `index` (named `name`) to `out`, checking each against the disk
/// and the data fork, and the total count against the limit; returns the table's checksum.
pub fn parse_table(
    path: &Path,
    koly: &Koly,
    index: usize,
    name: &str,
    t: &[u8],
    out: &mut Vec<Chunk>,
) -> Result<TableSum> {
    let bad =
        |why: String| Error::corrupt(path, format!("blkx table {index} (\"{name}\") {why}; the image is corrupt"));
    if t.len() < HEADER || &t[..4] != b"mish" {
        return Err(bad("is not a \"mish\" chunk table".into()));
    }
    let first_sector = be64(t, 8);
    let base = koly.data_fork_offset.checked_add(be64(t, 24)).ok_or_else(|| bad("has an absurd data offset".into()))?;
    let count = be32(t, 200) as usize;
    if HEADER + count * ENTRY > t.len() {
        return Err(bad(format!("claims {count} chunks but holds only {}", (t.len() - HEADER) / ENTRY)));
    }
    limits::check(path, "number of DMG chunks", (out.len() + count) as u64, MAX_DMG_CHUNKS)?;
    let fork_end = koly.data_fork_offset + koly.data_fork_length;
    let first_new = out.len();
    for i in 0..count {
        let e = &t[HEADER + i * ENTRY..HEADER + (i + 1) * ENTRY];
        let kind = match Kind::from_type(be32(e, 0)) {
            Ok(Some(k)) => k,
            Ok(None) => continue,
            Err(why) => {
                return Err(Error::unsupported(path, format!("blkx table {index} (\"{name}\") {why} (chunk {i})")))
            }
        };
        let (rel, sectors, comp_off, length) = (be64(e, 8), be64(e, 16), be64(e, 24), be64(e, 32));
        if sectors == 0 {
            continue;
        }
        if kind.is_compressed() {
            // Decompressed whole, into memory: bounded before anything else is looked at.
            limits::check(
                path,
                "decompressed size of a DMG chunk",
                sectors.saturating_mul(SECTOR),
                MAX_DMG_CHUNK_BYTES,
            )?;
            limits::check(path, "compressed size of a DMG chunk", length, MAX_DMG_CHUNK_BYTES)?;
        }
        let start = first_sector.checked_add(rel);
        let end = start.and_then(|s| s.checked_add(sectors));
        if end.is_none_or(|end| end > koly.sector_count) {
            return Err(bad(format!(
                "has chunk {i} at sectors {first_sector}+{rel} ({sectors} sectors), past the disk's {} sectors",
                koly.sector_count
            )));
        }
        let start = start.unwrap_or(0);
        let mut chunk = Chunk { start, sectors, kind, offset: 0, length: 0 };
        if kind == Kind::Raw || kind.is_compressed() {
            // A raw chunk is read as its sectors, whatever length it records.
            let stored = if kind == Kind::Raw { sectors * SECTOR } else { length };
            let offset = base.checked_add(comp_off);
            if offset.and_then(|o| o.checked_add(stored)).is_none_or(|end| end > fork_end) {
                return Err(bad(format!(
                    "has chunk {i} ({}) stored at data offset {comp_off} ({stored} bytes), past the data fork's end at file offset {fork_end}",
                    kind.name()
                )));
            }
            chunk.offset = offset.unwrap_or(0);
            chunk.length = stored;
        }
        out.push(chunk);
    }
    let mut covered: Vec<Range<u64>> = out[first_new..]
        .iter()
        .filter(|c| c.kind != Kind::Ignore)
        .map(|c| c.start * SECTOR..c.end() * SECTOR)
        .collect();
    covered.sort_by_key(|r| r.start);
    covered.dedup_by(|next, prev| {
        let joins = next.start == prev.end;
        if joins {
            prev.end = next.end;
        }
        joins
    });
    Ok(TableSum { checksum: (be32(t, 64), be32(t, 68), be32(t, 72)), covered })
}

/// Sorts the chunks of all tables by sector, refuses overlaps, and joins neighbours one lookup
/// can serve (zeros with zeros, raw chunks stored back to back).
pub fn finish(path: &Path, mut chunks: Vec<Chunk>) -> Result<Vec<Chunk>> {
    chunks.sort_by_key(|c| c.start);
    let mut out: Vec<Chunk> = Vec::with_capacity(chunks.len());
    for c in chunks {
        let Some(last) = out.last_mut() else {
            out.push(c);
            continue;
        };
        if c.start < last.end() {
            return Err(Error::corrupt(
                path,
                format!(
                    "two DMG chunks overlap: sectors {}..{} ({}) and {}..{} ({}); the image is corrupt",
                    last.start,
                    last.end(),
                    last.kind.name(),
                    c.start,
                    c.end(),
                    c.kind.name()
                ),
            ));
        }
        let zeros = |k: Kind| matches!(k, Kind::Zero | Kind::Ignore);
        let joins = c.start == last.end()
            && ((zeros(c.kind) && zeros(last.kind))
                || (c.kind == Kind::Raw && last.kind == Kind::Raw && last.offset + last.length == c.offset));
        if joins {
            last.sectors += c.sectors;
            last.length += c.length;
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn koly() -> Koly {
        Koly {
            data_fork_offset: 0,
            data_fork_length: 10 * SECTOR,
            xml_offset: 10 * SECTOR,
            xml_length: 100,
            sector_count: 100,
            data_checksum: (0, 0),
            master_checksum: (0, 0, 0),
        }
    }

    fn table(first: u64, entries: &[(u32, u64, u64, u64, u64)]) -> Vec<u8> {
        let mut t = vec![0u8; HEADER];
        t[..4].copy_from_slice(b"mish");
        t[8..16].copy_from_slice(&first.to_be_bytes());
        t[200..204].copy_from_slice(&(entries.len() as u32).to_be_bytes());
        for (kind, sector, count, offset, length) in entries {
            t.extend_from_slice(&kind.to_be_bytes());
            t.extend_from_slice(&[0; 4]);
            for v in [sector, count, offset, length] {
                t.extend_from_slice(&v.to_be_bytes());
            }
        }
        t
    }

    fn parse(first: u64, entries: &[(u32, u64, u64, u64, u64)]) -> Result<Vec<Chunk>> {
        let mut out = Vec::new();
        parse_table(Path::new("t.dmg"), &koly(), 0, "p", &table(first, entries), &mut out)?;
        finish(Path::new("t.dmg"), out)
    }

    #[test]
    fn neighbours_join_and_comments_are_skipped() {
        let c = parse(
            10,
            &[
                (0x7fff_fffe, 0, 0, 0, 0),
                (1, 0, 2, 0, 1024),
                (1, 2, 3, 1024, 1536),
                (0, 5, 1, 0, 0),
                (2, 6, 4, 0, 0),
                (0x8000_0005, 10, 2, 2560, 100),
                (0xffff_ffff, 12, 0, 0, 0),
            ],
        )
        .unwrap();
        let got: Vec<(Kind, u64, u64)> = c.iter().map(|c| (c.kind, c.start, c.sectors)).collect();
        assert_eq!(got, [(Kind::Raw, 10, 5), (Kind::Zero, 15, 5), (Kind::Zlib, 20, 2)]);
    }

    #[test]
    fn refusals() {
        // Overlap, past the disk, past the data fork, unknown type, too many chunks claimed.
        assert!(parse(0, &[(1, 0, 2, 0, 1024), (0, 1, 2, 0, 0)]).is_err());
        assert!(parse(99, &[(0, 0, 2, 0, 0)]).is_err());
        assert!(parse(u64::MAX, &[(0, 1, 2, 0, 0)]).is_err());
        assert!(parse(0, &[(1, 0, 11, 0, 0)]).is_err());
        assert!(parse(0, &[(0x8000_0005, 0, 1, 5000, 200)]).is_err());
        assert!(parse(0, &[(0x8000_0009, 0, 1, 0, 1)]).is_err());
        let mut t = table(0, &[]);
        t[200..204].copy_from_slice(&1u32.to_be_bytes());
        assert!(parse_table(Path::new("t.dmg"), &koly(), 0, "p", &t, &mut Vec::new()).is_err());
    }
}
