//! EWF (Expert Witness Compression Format: EnCase .E01, SMART .s01, EWF-X, FTK and linen),
//! version 1. A set of segment files (segment.rs) each made of sections: the first holds the
//! case metadata and the volume section (media size, chunk size, meta.rs); every segment holds
//! chunks of media data and the tables saying where each chunk lies (table.rs). Chunks are zlib
//! streams (chunk.rs) or stored as they are followed by a 4-byte checksum, so a stored chunk's
//! data can be handed to the kernel as one extent. The last segment may hold the media's MD5 and
//! SHA1, which `vdmount verify` recomputes. EWF2 (.Ex01) is read by v2.rs; logical evidence
//! (.L01, .Lx01) is refused.

mod chunk;
mod meta;
mod segment;
mod table;
mod v2;
mod v2_meta;
mod v2_sections;
mod v2_table;

use super::layer::{Decompress, Layer, LayerImage, Source};
use super::{Chain, DiskImage, ImageInfo, OpenOptions, StoredDigests};
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::limits::MAX_EWF_SEGMENTS;
use crate::source::file::ImageFile;
use meta::{case_metadata, hex, Hashes, Volume};
use segment::{check_file_header, of_set, segment_name, Section};
use std::path::Path;
use std::sync::Arc;
use table::Table;

pub use segment::{EWF2_LOGICAL_SIGNATURE, EWF2_SIGNATURE, LOGICAL_SIGNATURE, SIGNATURE};
pub use v2::Ewf2Image;

/// Opens an EWF1 or EWF2 set by the signature of its first segment.
pub fn open(file: ImageFile, chain: &Chain, opts: &OpenOptions) -> Result<Arc<dyn DiskImage>> {
    let mut head = [0u8; 8];
    file.read_exact_at(&mut head, 0, "the EWF signature")?;
    if &head == EWF2_SIGNATURE {
        return Ok(Arc::new(Ewf2Image::open(file, chain, opts)?));
    }
    Ok(Arc::new(EwfImage::open(file, chain, opts)?))
}

pub struct EwfImage {
    /// The segment files, .E01 first.
    segments: Vec<ImageFile>,
    volume: Volume,
    /// The chunk tables of all segments, in media order.
    tables: Vec<Table>,
    hashes: Hashes,
    /// Case metadata from header2 (or header), for `info`.
    case: Vec<(String, String)>,
    /// Section types seen, for `info` ("header2", "digest", ...).
    flavour: String,
    cache: Arc<Cache>,
}

/// What the walk over the segments gathers.
#[derive(Default)]
struct Found {
    volume: Option<Volume>,
    tables: Vec<Table>,
    chunks: u64,
    hashes: Hashes,
    case: Vec<(String, String)>,
    header2: bool,
    xheader: bool,
}

impl EwfImage {
    pub fn open(file: ImageFile, chain: &Chain, opts: &OpenOptions) -> Result<EwfImage> {
        let mut head = [0u8; 8];
        file.read_exact_at(&mut head, 0, "the EWF signature")?;
        if &head == EWF2_LOGICAL_SIGNATURE {
            return Err(Error::unsupported(
                &file.path,
                "is an EWF2 logical evidence file (.Lx01): it holds files, not a disk image",
            ));
        }
        if &head == LOGICAL_SIGNATURE {
            return Err(Error::unsupported(
                &file.path,
                "is an EWF logical evidence file (.L01): it holds files, not a disk image",
            ));
        }
        let first = file.path.clone();
        check_file_header(&file, 1)?;
        let mut segments = vec![file];
        let mut found = Found::default();
        loop {
            let index = segments.len() - 1;
            let last = walk_segment(&segments[index], index, &mut found, opts).map_err(|e| of_set(e, index, &first))?;
            if last.kind == "done" {
                break;
            }
            let number = segments.len() as u32 + 1;
            let firsts = ".E01, .e01 or .s01";
            let name = segment::next_name(&first, number, MAX_EWF_SEGMENTS, segment_name, firsts)?;
            let next = segment::open_segment(chain, &first, number, &name)?;
            check_file_header(&next, number).map_err(|e| of_set(e, index + 1, &first))?;
            segments.push(next);
        }
        let volume = found.volume.ok_or_else(|| {
            Error::corrupt(
                &first,
                "the EWF set has no volume section, so its media size is unknown; the image is corrupt",
            )
        })?;
        if found.chunks < volume.chunk_count {
            return Err(Error::corrupt(
                &first,
                format!(
                    "the EWF set's tables list {} chunks, but its volume section says {}; a segment is missing or truncated",
                    found.chunks, volume.chunk_count
                ),
            ));
        }
        let mut flavour = if volume.smart { "SMART (EWF-S01)" } else { "EnCase (EWF-E01)" }.to_string();
        if found.xheader {
            flavour = "EWF-X".into();
        } else if found.header2 {
            flavour.push_str(", header2 (EnCase 4 or later)");
        }
        Ok(EwfImage {
            segments,
            volume,
            tables: found.tables,
            hashes: found.hashes,
            case: found.case,
            flavour,
            cache: opts.cache.clone(),
        })
    }

    fn chunk_size(&self) -> u64 {
        self.volume.chunk_size()
    }

    /// The table that lists chunk `chunk` and the chunk's place in it.
    fn table_of(&self, chunk: u64) -> Result<(&Table, u64)> {
        let i = self.tables.partition_point(|t| t.first_chunk + t.count <= chunk);
        match self.tables.get(i) {
            Some(t) if t.first_chunk <= chunk => Ok((t, chunk - t.first_chunk)),
            _ => Err(Error::corrupt(&self.segments[0].path, format!("no EWF table lists chunk {chunk}"))),
        }
    }

    /// The segment file and place of chunk `chunk`.
    fn chunk(&self, chunk: u64) -> Result<(&ImageFile, table::Chunk)> {
        let (t, i) = self.table_of(chunk)?;
        let file = &self.segments[t.segment];
        Ok((file, t.chunk(&self.cache, file, i)?))
    }

    /// Bytes of media in chunk `chunk` (the last one may be short).
    fn chunk_len(&self, chunk: u64) -> u64 {
        (self.volume.media_size() - chunk * self.chunk_size()).min(self.chunk_size())
    }
}

/// Walks the sections of segment `index`, gathering what they say into `found`; returns the
/// last ("next" or "done").
fn walk_segment(file: &ImageFile, index: usize, found: &mut Found, opts: &OpenOptions) -> Result<Section> {
    let mut sectors_end = None;
    segment::walk(file, |s| {
        match s.kind.as_str() {
            "volume" | "disk" if found.volume.is_none() => found.volume = Some(Volume::read(file, s)?),
            "sectors" => sectors_end = Some(s.end()),
            "table" => {
                let t = Table::read(file, index, s, found.chunks, sectors_end)?;
                // A summary per table, held for the image's life: from the chain's budget.
                opts.budget.take(&file.path, "the EWF table list", std::mem::size_of::<Table>() as u64)?;
                found.chunks += t.count;
                found.tables.push(t);
            }
            "hash" | "digest" => found.hashes.read_section(file, s)?,
            "xhash" => found.hashes.read_xhash(file, s)?,
            "xheader" => found.xheader = true,
            // header2 (UTF-16) says more than header (ASCII): it wins when both are there.
            "header2" | "header" if found.case.is_empty() || s.kind == "header2" && !found.header2 => {
                found.header2 |= s.kind == "header2";
                // Metadata only: a damaged header must not stop the media being read.
                if let Ok(text) = meta::inflate_section(file, s) {
                    found.case = case_metadata(&text);
                }
            }
            _ => {}
        }
        Ok(())
    })
}

impl Layer for EwfImage {
    fn path(&self) -> &Path {
        &self.segments[0].path
    }
    fn size(&self) -> u64 {
        self.volume.media_size()
    }
    fn lookup(&self, pos: u64, max: u64) -> Result<(Source<'_>, u64)> {
        let index = pos / self.chunk_size();
        let within = pos % self.chunk_size();
        let len = self.chunk_len(index);
        let run = max.min(len - within);
        let (file, c) = self.chunk(index)?;
        if c.compressed {
            return Ok((Source::Compressed { from: self, at: index, len: 0, skip: within }, run));
        }
        // Stored as is: the data, then its checksum.
        if c.stored < len {
            return Err(Error::corrupt(
                &file.path,
                format!(
                    "chunk {index} at offset {} holds {} bytes, less than its {len} bytes of data; the image is corrupt",
                    c.offset, c.stored
                ),
            ));
        }
        Ok((Source::Data { file, offset: c.offset + within }, run))
    }
    fn below(&self) -> Option<&Arc<dyn DiskImage>> {
        None
    }
}

/// Reads compressed chunks; `at` is the chunk's number.
impl Decompress for EwfImage {
    fn read_compressed(&self, at: u64, _len: u64, skip: u64, out: &mut [u8]) -> Result<()> {
        let (file, c) = self.chunk(at)?;
        let want = self.chunk_len(at);
        let c =
            chunk::Compressed { file, at, chunk: c, method: chunk::Method::Zlib, chunk_size: self.chunk_size(), want };
        chunk::read(&self.cache, &c, skip, out)
    }
}

impl LayerImage for EwfImage {
    fn stored_digests(&self) -> StoredDigests {
        StoredDigests { md5: self.hashes.md5, sha1: self.hashes.sha1, ..Default::default() }
    }

    fn describe(&self) -> ImageInfo {
        let v = &self.volume;
        let mut details = vec![
            ("variant".to_string(), self.flavour.clone()),
            ("segment files".into(), self.segments.len().to_string()),
            (
                "chunks".into(),
                format!("{} of {} sectors of {} bytes", v.chunk_count, v.sectors_per_chunk, v.bytes_per_sector),
            ),
        ];
        if !v.smart {
            let media = match v.media_type {
                0x00 => "removable",
                0x01 => "fixed",
                0x03 => "optical",
                0x0e => "logical",
                0x10 => "memory",
                _ => "unknown",
            };
            details.push(("media type".into(), format!("{media} ({:#04x})", v.media_type)));
            let physical = if v.media_flags & 0x02 != 0 { "physical" } else { "logical" };
            details.push(("media flags".into(), format!("{physical} ({:#04x})", v.media_flags)));
            let level = match v.compression_level {
                0 => "none",
                1 => "good (fast)",
                2 => "best",
                _ => "unknown",
            };
            details.push(("compression level".into(), level.into()));
            if v.set_id != [0; 16] {
                details.push(("set identifier".into(), hex(&v.set_id)));
            }
        }
        details.extend(self.case.iter().cloned());
        let stored = |h: Option<&[u8]>| h.map_or("none stored".to_string(), hex);
        details.push(("stored MD5".into(), stored(self.hashes.md5.as_ref().map(|h| &h[..]))));
        details.push(("stored SHA1".into(), stored(self.hashes.sha1.as_ref().map(|h| &h[..]))));
        ImageInfo {
            path: self.segments[0].path.clone(),
            format: "ewf".into(),
            virtual_size: v.media_size(),
            cluster_size: Some(v.chunk_size()),
            logical_sector_size: 512,
            features: Vec::new(),
            details,
            backing: None,
            error: None,
        }
    }
}

/// Adler-32, the checksum of EWF section descriptors, tables and stored chunks.
fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (1u32, 0u32);
    // 5552 bytes is the most that can be summed before b overflows u32.
    for block in data.chunks(5552) {
        for &x in block {
            a += u32::from(x);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    #[test]
    fn adler32() {
        assert_eq!(super::adler32(b""), 1);
        assert_eq!(super::adler32(b"Wikipedia"), 0x11E6_0398);
        assert_eq!(super::adler32(&[0xff; 100_000]), 0x149a_302c);
    }
}
