//! DMG (Apple's UDIF disk images): a "koly" trailer at the end of the file points to an XML
//! property list whose "blkx" entries are chunk tables ("mish"); each chunk holds a run of
//! sectors as zeros, as is (raw: served as extents of the file), or compressed (ADC, zlib,
//! bzip2, LZFSE: decompressed whole, through the shared cache). The tables are held in memory,
//! taken from the chain's budget. A DMG names no other file.

mod adc;
mod decompress;
pub mod koly;
mod mish;
mod resources;

use super::layer::{Decompress, Layer, LayerImage, Source};
use super::{Chain, DiskImage, ImageInfo, OpenOptions, PartCrc32, StoredDigests};
use crate::cache::{Cache, Key, Kind as CacheKind};
use crate::error::{Error, Result};
use crate::formats::cached::whole_cluster;
use crate::limits::{self, MAX_VIRTUAL_SIZE};
use crate::source::file::ImageFile;
use koly::{read_koly, Koly};
use mish::{Chunk, Kind, TableSum, SECTOR};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

pub struct DmgImage {
    file: ImageFile,
    koly: Koly,
    /// Sorted by sector, not overlapping; sectors between them read as zeros.
    chunks: Vec<Chunk>,
    /// The blkx entries' names (partitions), for `info`, and their checksums, for `verify`.
    names: Vec<String>,
    sums: Vec<TableSum>,
    kinds: BTreeSet<Kind>,
    cache: Arc<Cache>,
}

impl DmgImage {
    pub fn open(file: ImageFile, _chain: &Chain, opts: &OpenOptions) -> Result<DmgImage> {
        let path = &file.path;
        let koly = read_koly(&file)?;
        let size = koly.sector_count.saturating_mul(SECTOR);
        limits::check(path, "virtual size", size, MAX_VIRTUAL_SIZE)?;
        let tables = resources::read_blkx(&file, &koly)?;
        let mut chunks = Vec::new();
        let mut names = Vec::with_capacity(tables.len());
        let mut sums = Vec::with_capacity(tables.len());
        for (i, t) in tables.iter().enumerate() {
            sums.push(mish::parse_table(path, &koly, i, &t.name, &t.table, &mut chunks)?);
            names.push(t.name.clone());
        }
        let ranges: usize = sums.iter().map(|s| s.covered.len()).sum();
        let bytes = chunks.len() * std::mem::size_of::<Chunk>() + ranges * std::mem::size_of::<std::ops::Range<u64>>();
        opts.budget.take(path, "the DMG chunk tables", bytes as u64)?;
        let kinds = chunks.iter().map(|c| c.kind).collect();
        let chunks = mish::finish(path, chunks)?;
        Ok(DmgImage { file, koly, chunks, names, sums, kinds, cache: opts.cache.clone() })
    }

    /// Decompresses chunk `index` into `out` (its size plus one byte); returns its size.
    fn decompress_into(&self, index: usize, input: &mut Vec<u8>, out: &mut [u8]) -> Result<usize> {
        let c = &self.chunks[index];
        let bad = |why: String| {
            Error::corrupt(
                &self.file.path,
                format!(
                    "{} chunk at offset {} ({} bytes, sectors {}..{}) {why}; the image is corrupt",
                    c.kind.name(),
                    c.offset,
                    c.length,
                    c.start,
                    c.end()
                ),
            )
        };
        input.resize(c.length as usize, 0);
        self.file.read_exact_at(input, c.offset, "a compressed chunk")?;
        let n = decompress::decompress(c.kind, input, out).map_err(|e| bad(format!("does not decompress: {e}")))?;
        if n as u64 != c.bytes() {
            let what = if n as u64 > c.bytes() { "more" } else { "less" };
            return Err(bad(format!("decompresses to {what} than its {} bytes", c.bytes())));
        }
        Ok(n)
    }
}

impl Decompress for DmgImage {
    /// `at` is the chunk's index (unique, unlike offsets a hostile file may repeat).
    fn read_compressed(&self, at: u64, _len: u64, skip: u64, out: &mut [u8]) -> Result<()> {
        let index = at as usize;
        let bytes = self.chunks[index].bytes() as usize;
        let key = Key { file: self.file.id, kind: CacheKind::Cluster, offset: at };
        if skip == 0
            && out.len() == bytes
            && whole_cluster(&self.cache, key, out, |i, o| self.decompress_into(index, i, o))?
        {
            return Ok(());
        }
        let data = self.cache.get_or_load(key, || {
            let mut out = limits::alloc(&self.file.path, "a decompressed chunk", bytes as u64 + 1)?;
            let n = self.decompress_into(index, &mut Vec::new(), &mut out)?;
            out.truncate(n);
            Ok(out)
        })?;
        let from = skip as usize;
        match data.get(from..from + out.len()) {
            Some(src) => {
                out.copy_from_slice(src);
                Ok(())
            }
            None => Err(Error::corrupt(&self.file.path, format!("internal error: chunk {index} is short"))),
        }
    }
}

impl Layer for DmgImage {
    fn path(&self) -> &Path {
        &self.file.path
    }
    fn size(&self) -> u64 {
        self.koly.sector_count * SECTOR
    }
    fn lookup(&self, pos: u64, max: u64) -> Result<(Source<'_>, u64)> {
        let sector = pos / SECTOR;
        let index = self.chunks.partition_point(|c| c.end() <= sector);
        let Some(c) = self.chunks.get(index).filter(|c| c.start <= sector) else {
            // Between chunks (or past the last): zeros up to the next chunk.
            let next = self.chunks.get(index).map_or(self.size(), |c| c.start * SECTOR);
            return Ok((Source::Zero, max.min(next - pos)));
        };
        let within = pos - c.start * SECTOR;
        let len = max.min(c.bytes() - within);
        let source = match c.kind {
            Kind::Zero | Kind::Ignore => Source::Zero,
            Kind::Raw => Source::Data { file: &self.file, offset: c.offset + within },
            _ => Source::Compressed { from: self, at: index as u64, len: c.length, skip: within },
        };
        Ok((source, len))
    }
    fn below(&self) -> Option<&Arc<dyn DiskImage>> {
        None
    }
}

/// The CRC-32 checksum type, as UDIF records it, with its size in bits.
const CRC32: (u32, u32) = (2, 32);

impl LayerImage for DmgImage {
    /// Each table's CRC-32 over its sectors, and whether the trailer's master checksum (a CRC-32
    /// of the tables' CRC-32s, in order) agrees with them.
    fn stored_digests(&self) -> StoredDigests {
        let crc32 = self.names.iter().zip(&self.sums).filter(|(_, s)| (s.checksum.0, s.checksum.1) == CRC32).map(
            |(name, s)| PartCrc32 { what: format!("blkx \"{name}\""), ranges: s.covered.clone(), crc: s.checksum.2 },
        );
        let crc32: Vec<PartCrc32> = crc32.collect();
        let mut inconsistencies = Vec::new();
        let (t, bits, master) = self.koly.master_checksum;
        if (t, bits) == CRC32 && crc32.len() == self.sums.len() {
            let mut h = crc32fast::Hasher::new();
            self.sums.iter().for_each(|s| h.update(&s.checksum.2.to_be_bytes()));
            let got = h.finalize();
            if got != master {
                inconsistencies.push(format!(
                    "the trailer's master checksum {master:08x} is not the CRC-32 of the tables' checksums ({got:08x}): the chunk tables were changed"
                ));
            }
        }
        StoredDigests { crc32, inconsistencies, ..Default::default() }
    }

    fn describe(&self) -> ImageInfo {
        let k = &self.koly;
        let names: Vec<String> = self.names.iter().map(|n| format!("\"{n}\"")).collect();
        let kinds: Vec<&str> = self.kinds.iter().map(|k| k.name()).collect();
        let (sum_type, sum_bits) = k.data_checksum;
        let checksum = match sum_type {
            0 => "none".to_string(),
            t => format!("{} ({sum_bits} bits)", koly::checksum_name(t)),
        };
        let master = match k.master_checksum {
            (0, _, _) => "none".to_string(),
            (t, bits, v) => format!("{} ({bits} bits) {v:08x}", koly::checksum_name(t)),
        };
        ImageInfo {
            path: self.file.path.clone(),
            format: "dmg".into(),
            virtual_size: self.size(),
            logical_sector_size: 512,
            features: kinds.iter().map(|k| format!("chunks={k}")).collect(),
            details: vec![
                ("partitions (blkx)".into(), names.join(", ")),
                ("chunk kinds".into(), kinds.join(", ")),
                ("chunks".into(), format!("{} (neighbours of one kind joined)", self.chunks.len())),
                ("data fork".into(), format!("at offset {} ({} bytes)", k.data_fork_offset, k.data_fork_length)),
                ("data checksum".into(), checksum),
                ("master checksum".into(), master),
            ],
            ..Default::default()
        }
    }
}
