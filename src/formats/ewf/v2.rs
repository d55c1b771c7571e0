//! EWF2 (EnCase 7 and later, .Ex01): a set of segment files (.Ex01, .Ex02, ...) sharing a set
//! identifier, each a file header and sections read from the end (v2_sections.rs). The device
//! information and case data sections give the media's size and chunk size (v2_meta.rs); sector
//! tables say where each chunk lies (v2_table.rs): stored as it is (then served to the kernel as
//! an extent), deflate- or bzip2-compressed (the method the file header names), or a repeated
//! 8-byte pattern. The last segment may hold the media's MD5 and SHA1, which `vdmount verify`
//! recomputes. Encrypted images and logical evidence (.Lx01) are refused.

use super::chunk::{self, Method};
use super::meta::{hex, Hashes};
use super::segment::{ewf2_segment_name, next_name, of_set, open_segment};
use super::v2_meta::{self, number};
use super::v2_sections::{self as sections, read_file_header, Section};
use super::v2_table::{Chunk, Table};
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::formats::layer::{Decompress, Layer, LayerImage, Source};
use crate::formats::{Chain, DiskImage, ImageInfo, OpenOptions, StoredDigests};
use crate::limits::{self, MAX_EWF2_SEGMENTS, MAX_EWF_CHUNK_BYTES, MAX_VIRTUAL_SIZE};
use crate::source::file::ImageFile;
use std::path::Path;
use std::sync::Arc;

pub struct Ewf2Image {
    /// The segment files, .Ex01 first.
    segments: Vec<ImageFile>,
    method: Method,
    media_size: u64,
    chunk_size: u64,
    sectors_per_chunk: u64,
    bytes_per_sector: u64,
    /// The sector tables of all segments, in media order, one after the other.
    tables: Vec<Table>,
    hashes: Hashes,
    /// Device and case metadata, for `info`.
    details: Vec<(String, String)>,
    set_id: [u8; 16],
    cache: Arc<Cache>,
}

/// What the walk over the segments gathers.
#[derive(Default)]
struct Found {
    device: Option<Vec<(String, String)>>,
    case: Option<Vec<(String, String)>>,
    tables: Vec<Table>,
    hashes: Hashes,
}

impl Ewf2Image {
    pub fn open(file: ImageFile, chain: &Chain, opts: &OpenOptions) -> Result<Ewf2Image> {
        let header = read_file_header(&file, 1)?;
        let first = file.path.clone();
        let mut segments = vec![file];
        let mut found = Found::default();
        loop {
            let index = segments.len() - 1;
            let last = walk_segment(&segments[index], index, &mut found, opts).map_err(|e| of_set(e, index, &first))?;
            if last == sections::DONE {
                break;
            }
            let number = segments.len() as u32 + 1;
            let name = next_name(&first, number, MAX_EWF2_SEGMENTS, ewf2_segment_name, ".Ex01")?;
            let next = open_segment(chain, &first, number, &name)?;
            let h = read_file_header(&next, number).map_err(|e| of_set(e, index + 1, &first))?;
            if h.set_id != header.set_id || h.method != header.method {
                return Err(of_set(
                    Error::corrupt(
                        &next.path,
                        "belongs to another EWF2 set (its set identifier or compression method differs from the first segment's)",
                    ),
                    index + 1,
                    &first,
                ));
            }
            segments.push(next);
        }
        Self::assemble(segments, header.method, header.set_id, found, opts)
    }

    /// Checks what the walk found and makes the image of it.
    fn assemble(
        segments: Vec<ImageFile>,
        method: Method,
        set_id: [u8; 16],
        found: Found,
        opts: &OpenOptions,
    ) -> Result<Ewf2Image> {
        let file = &segments[0];
        let path = &file.path;
        let (Some(device), Some(case)) = (found.device, found.case) else {
            return Err(Error::corrupt(
                path,
                "the EWF2 set has no device information or case data section, so its media size is unknown; the image is corrupt",
            ));
        };
        let bytes_per_sector = number(file, &device, "bp", "device information")?.unwrap_or(512);
        let sectors = number(file, &device, "ts", "device information")?;
        let sectors_per_chunk = number(file, &case, "sb", "case data")?.unwrap_or(64);
        let Some(sectors) = sectors else {
            return Err(Error::corrupt(
                path,
                "the EWF2 device information gives no sector count (\"ts\"); the image is corrupt",
            ));
        };
        if bytes_per_sector == 0 || sectors_per_chunk == 0 {
            return Err(Error::corrupt(
                path,
                format!(
                    "the EWF2 set says {bytes_per_sector} bytes per sector and {sectors_per_chunk} sectors per chunk; the image is corrupt"
                ),
            ));
        }
        let chunk_size = sectors_per_chunk.saturating_mul(bytes_per_sector);
        limits::check(path, "EWF2 chunk size", chunk_size, MAX_EWF_CHUNK_BYTES)?;
        let media_size =
            limits::check(path, "EWF2 media size", sectors.saturating_mul(bytes_per_sector), MAX_VIRTUAL_SIZE)?;
        let mut tables = found.tables;
        tables.sort_by_key(|t| t.first_chunk);
        // The tables must list every chunk once, in order, from chunk 0.
        let needed = media_size.div_ceil(chunk_size);
        let (mut next, mut used) = (0, 0);
        for t in &tables {
            if next >= needed {
                break;
            }
            used += 1;
            if t.first_chunk != next {
                let why = if t.first_chunk > next { "no sector table lists it" } else { "two sector tables list it" };
                return Err(Error::corrupt(
                    path,
                    format!(
                        "chunk {} of the EWF2 set cannot be found: {why}; the image is corrupt",
                        next.min(t.first_chunk)
                    ),
                ));
            }
            next += t.count;
        }
        if next < needed {
            return Err(Error::corrupt(
                path,
                format!(
                    "the EWF2 set's sector tables list {next} chunks, but its {media_size} bytes need {needed}; a segment is missing or truncated"
                ),
            ));
        }
        // Tables past the media are not needed, and may overlap the others: dropped, so the
        // lookup's binary search sees tables one after the other.
        tables.truncate(used);
        let details = v2_meta::shown(&device, &case);
        Ok(Ewf2Image {
            segments,
            method,
            media_size,
            chunk_size,
            sectors_per_chunk,
            bytes_per_sector,
            tables,
            hashes: found.hashes,
            details,
            set_id,
            cache: opts.cache.clone(),
        })
    }

    /// The segment file and place of chunk `chunk`.
    fn chunk(&self, chunk: u64) -> Result<(&ImageFile, Chunk)> {
        let i = self.tables.partition_point(|t| t.first_chunk + t.count <= chunk);
        match self.tables.get(i) {
            Some(t) if t.first_chunk <= chunk => {
                let file = &self.segments[t.segment];
                Ok((file, t.chunk(&self.cache, file, chunk - t.first_chunk)?))
            }
            _ => Err(Error::corrupt(&self.segments[0].path, format!("no EWF2 sector table lists chunk {chunk}"))),
        }
    }

    /// Bytes of media in chunk `chunk` (the last one may be short).
    fn chunk_len(&self, chunk: u64) -> u64 {
        (self.media_size - chunk * self.chunk_size).min(self.chunk_size)
    }
}

/// Walks the sections of segment `index`, gathering what they say into `found`; returns the
/// type of the last (NEXT or DONE).
fn walk_segment(file: &ImageFile, index: usize, found: &mut Found, opts: &OpenOptions) -> Result<u32> {
    sections::walk(file, |s: &Section| {
        match s.kind {
            // Every segment repeats them: the first segment's are read (the walk goes backwards,
            // so the last one seen in a segment is its first).
            sections::DEVICE_INFORMATION if index == 0 => found.device = Some(v2_meta::read_object(file, s)?),
            sections::CASE_DATA if index == 0 => found.case = Some(v2_meta::read_object(file, s)?),
            sections::SECTOR_TABLE => {
                let t = Table::read(file, index, s)?;
                // A summary per table, held for the image's life: from the chain's budget.
                opts.budget.take(&file.path, "the EWF2 table list", std::mem::size_of::<Table>() as u64)?;
                found.tables.push(t);
            }
            sections::MD5_HASH | sections::SHA1_HASH => v2_meta::read_hash(file, s, &mut found.hashes)?,
            _ => {}
        }
        Ok(())
    })
}

impl Layer for Ewf2Image {
    fn path(&self) -> &Path {
        &self.segments[0].path
    }
    fn size(&self) -> u64 {
        self.media_size
    }
    fn lookup(&self, pos: u64, max: u64) -> Result<(Source<'_>, u64)> {
        let index = pos / self.chunk_size;
        let within = pos % self.chunk_size;
        let len = self.chunk_len(index);
        let run = max.min(len - within);
        let (file, c) = self.chunk(index)?;
        match c {
            Chunk::Pattern(p) if p == [0; 8] => Ok((Source::Zero, run)),
            Chunk::Pattern(_) | Chunk::Compressed { .. } => {
                Ok((Source::Compressed { from: self, at: index, len: 0, skip: within }, run))
            }
            Chunk::Stored { offset, size } if size < len => Err(Error::corrupt(
                &file.path,
                format!(
                    "chunk {index} at offset {offset} holds {size} bytes, less than its {len} bytes of data; the image is corrupt"
                ),
            )),
            Chunk::Stored { offset, .. } => Ok((Source::Data { file, offset: offset + within }, run)),
        }
    }
    fn below(&self) -> Option<&Arc<dyn DiskImage>> {
        None
    }
}

/// Reads compressed and pattern-filled chunks; `at` is the chunk's number.
impl Decompress for Ewf2Image {
    fn read_compressed(&self, at: u64, _len: u64, skip: u64, out: &mut [u8]) -> Result<()> {
        let (file, c) = self.chunk(at)?;
        let (offset, size) = match c {
            Chunk::Compressed { offset, size } => (offset, size),
            Chunk::Pattern(p) => {
                for (i, b) in out.iter_mut().enumerate() {
                    *b = p[(skip as usize + i) % 8];
                }
                return Ok(());
            }
            // Stored chunks are served as data; never asked for here.
            Chunk::Stored { offset, .. } => {
                return Err(Error::corrupt(&file.path, format!("chunk {at} at offset {offset} is not compressed")))
            }
        };
        let chunk = super::table::Chunk { offset, stored: size, compressed: true };
        let want = self.chunk_len(at);
        let c = chunk::Compressed { file, at, chunk, method: self.method, chunk_size: self.chunk_size, want };
        chunk::read(&self.cache, &c, skip, out)
    }
}

impl LayerImage for Ewf2Image {
    fn stored_digests(&self) -> StoredDigests {
        StoredDigests { md5: self.hashes.md5, sha1: self.hashes.sha1, ..Default::default() }
    }

    fn describe(&self) -> ImageInfo {
        let chunks = self.media_size.div_ceil(self.chunk_size);
        let method = match self.method {
            Method::Zlib => "deflate (zlib)",
            Method::Bzip2 => "bzip2",
        };
        let mut details = vec![
            ("variant".to_string(), "EWF2 (EnCase 7 .Ex01)".to_string()),
            ("segment files".into(), self.segments.len().to_string()),
            (
                "chunks".into(),
                format!("{chunks} of {} sectors of {} bytes", self.sectors_per_chunk, self.bytes_per_sector),
            ),
            ("compression method".into(), method.into()),
        ];
        if self.set_id != [0; 16] {
            details.push(("set identifier".into(), hex(&self.set_id)));
        }
        details.extend(self.details.iter().cloned());
        let stored = |h: Option<&[u8]>| h.map_or("none stored".to_string(), hex);
        details.push(("stored MD5".into(), stored(self.hashes.md5.as_ref().map(|h| &h[..]))));
        details.push(("stored SHA1".into(), stored(self.hashes.sha1.as_ref().map(|h| &h[..]))));
        ImageInfo {
            path: self.segments[0].path.clone(),
            format: "ewf".into(),
            virtual_size: self.media_size,
            cluster_size: Some(self.chunk_size),
            logical_sector_size: 512,
            features: Vec::new(),
            details,
            backing: None,
            error: None,
        }
    }
}
