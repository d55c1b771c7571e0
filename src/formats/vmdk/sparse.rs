//! Hosted sparse extents (magic "KDMV", versions 1 to 3), streamOptimized included: a grain
//! directory of 32-bit sector numbers of grain tables, whose 32-bit entries give each grain's
//! sector (0: not in this file, 1: zeros). COWD extents (cowd.rs) share the same two-level map.

use super::Mapping;
use crate::cache::{Cache, Key, Kind};
use crate::error::{Error, Result};
use crate::formats::bytes::{le16, le32, le64};
use crate::formats::cached::{load_table, whole_cluster};
pub use crate::formats::SECTOR;
use crate::limits::{
    self, MAX_CLUSTER_BYTES, MAX_COMPRESSED_GRAIN_BYTES, MAX_DESCRIPTOR_BYTES, MAX_TABLE_BYTES, MAX_VIRTUAL_SIZE,
};
use crate::source::file::ImageFile;
use std::sync::Arc;

const FLAG_RGD: u32 = 1 << 1;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
const COMPRESSION_DEFLATE: u16 = 1;
/// gdOffset of a streamOptimized header whose grain directory comes at the end (see footer).
const GD_AT_END: u64 = u64::MAX;
const MARKER_FOOTER: u32 = 3;
/// How far back from the end of the file to look for a footer not where it is expected.
const FOOTER_SEARCH_BYTES: u64 = 1 << 20;

/// The fields of a KDMV header that matter for reading.
#[derive(Debug, Clone)]
pub struct KdmvHeader {
    pub version: u32,
    pub flags: u32,
    /// Sectors.
    pub capacity: u64,
    pub grain_sectors: u64,
    pub descriptor_offset: u64,
    pub descriptor_sectors: u64,
    pub gtes_per_gt: u32,
    pub rgd_offset: u64,
    pub gd_offset: u64,
    pub compress_algorithm: u16,
}

impl KdmvHeader {
    pub fn parse(b: &[u8; 512]) -> KdmvHeader {
        KdmvHeader {
            version: le32(b, 4),
            flags: le32(b, 8),
            capacity: le64(b, 12),
            grain_sectors: le64(b, 20),
            descriptor_offset: le64(b, 28),
            descriptor_sectors: le64(b, 36),
            gtes_per_gt: le32(b, 44),
            rgd_offset: le64(b, 48),
            gd_offset: le64(b, 56),
            compress_algorithm: le16(b, 77),
        }
    }

    pub fn read(file: &ImageFile) -> Result<KdmvHeader> {
        let mut b = [0u8; 512];
        file.read_exact_at(&mut b, 0, "the sparse extent header")?;
        Ok(KdmvHeader::parse(&b))
    }
}

/// The text of the descriptor embedded in a KDMV file, if it has one.
pub fn embedded_descriptor(file: &ImageFile, h: &KdmvHeader) -> Result<Option<String>> {
    if h.descriptor_offset == 0 || h.descriptor_sectors == 0 {
        return Ok(None);
    }
    let what = "the embedded descriptor";
    let off = h.descriptor_offset.checked_mul(SECTOR).filter(|&o| o < file.size).ok_or_else(|| {
        Error::corrupt(
            &file.path,
            format!("{what} at sector {} lies past the end of the file ({} bytes)", h.descriptor_offset, file.size),
        )
    })?;
    // Real descriptors are a few KiB; writers reserve up to 20 sectors or more. Read what fits.
    let len = h.descriptor_sectors.saturating_mul(SECTOR).min(file.size - off).min(MAX_DESCRIPTOR_BYTES);
    let bytes = file.read_vec(off, len, MAX_DESCRIPTOR_BYTES, what)?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// A two-level grain map over one file (KDMV or COWD).
pub struct SparseExtent {
    pub file: ImageFile,
    /// Bytes the map covers.
    pub capacity: u64,
    pub grain_bytes: u64,
    pub(super) gtes_per_gt: u64,
    /// Grain directory: sector numbers of grain tables.
    pub(super) gd: Directory,
    /// The redundant grain directory, used where the primary's grain table is out of range.
    pub(super) rgd: Option<Directory>,
    pub(super) compressed: bool,
    pub(super) markers: bool,
    pub(super) cache: Arc<Cache>,
    /// What `info` says about this extent ("KDMV v1", "COWD"...).
    pub description: String,
}

impl SparseExtent {
    /// Opens a KDMV file as a sparse extent.
    pub fn open_kdmv(file: ImageFile, cache: Arc<Cache>) -> Result<SparseExtent> {
        let mut h = KdmvHeader::read(&file)?;
        if h.gd_offset == GD_AT_END {
            h = find_footer(&file)?;
        }
        if h.version == 0 || h.version > 3 {
            return Err(Error::unsupported(
                &file.path,
                format!("sparse extent version {} is not one vdmount reads (1 to 3)", h.version),
            ));
        }
        let compressed = h.flags & FLAG_COMPRESSED != 0 || h.compress_algorithm != 0;
        if compressed && h.compress_algorithm != COMPRESSION_DEFLATE {
            return Err(Error::unsupported(
                &file.path,
                format!("grain compression algorithm {} is unknown (only 1, deflate, exists)", h.compress_algorithm),
            ));
        }
        // qemu refuses more than 512 entries per grain table; VMware always writes 512.
        if h.gtes_per_gt == 0 || h.gtes_per_gt > 512 {
            return Err(Error::corrupt(
                &file.path,
                format!(
                    "numGTEsPerGT is {} in the sparse header; it must be 1 to 512 (VMware writes 512)",
                    h.gtes_per_gt
                ),
            ));
        }
        let grain_bytes = grain_bytes(&file, h.grain_sectors)?;
        if compressed && grain_bytes > MAX_COMPRESSED_GRAIN_BYTES {
            return Err(Error::unsupported(
                &file.path,
                format!(
                    "its compressed grains are {grain_bytes} bytes; vdmount reads compressed grains of up to {MAX_COMPRESSED_GRAIN_BYTES} bytes (VMware and qemu write 64 KiB): each read would inflate a whole grain. Convert it with qemu-img convert -O raw to read it"
                ),
            ));
        }
        let capacity = capacity_bytes(&file, h.capacity)?;
        let gt_coverage = grain_bytes * h.gtes_per_gt as u64;
        let gd_entries = capacity.div_ceil(gt_coverage);
        let primary = Directory::new(&file, h.gd_offset, gd_entries, 4, "grain directory");
        let redundant = if h.flags & FLAG_RGD != 0 && h.rgd_offset != 0 {
            Directory::new(&file, h.rgd_offset, gd_entries, 4, "redundant grain directory").ok()
        } else {
            None
        };
        // The primary directory is the truth; the redundant copy stands in when it is unusable.
        let (gd, rgd) = match (primary, redundant) {
            (Ok(gd), rgd) => (gd, rgd),
            (Err(_), Some(rgd)) => (rgd, None),
            (Err(e), None) => return Err(e),
        };
        let kind = if compressed { "streamOptimized (deflate grains)" } else { "hosted sparse" };
        Ok(SparseExtent {
            description: format!("KDMV version {}, {kind}", h.version),
            file,
            capacity,
            grain_bytes,
            gtes_per_gt: h.gtes_per_gt as u64,
            gd,
            rgd,
            compressed,
            markers: h.flags & FLAG_MARKERS != 0,
            cache,
        })
    }

    /// Where the grain holding byte `off` of this extent is.
    pub fn lookup(&self, off: u64) -> Result<Mapping> {
        let Some((gd_index, gt_index)) = grain_indexes(off, self.capacity, self.grain_bytes, self.gtes_per_gt) else {
            return Ok(Mapping::Unallocated);
        };
        let gt_bytes = self.gtes_per_gt * 4;
        let in_file = |sector: u64| sector * SECTOR + gt_bytes <= self.file.size;
        let mut sector = self.gd.entry(&self.file, &self.cache, gd_index)?;
        if sector != 0 && !in_file(sector) {
            if let Some(rgd) = &self.rgd {
                let backup = rgd.entry(&self.file, &self.cache, gd_index)?;
                if backup != 0 && in_file(backup) {
                    sector = backup;
                }
            }
        }
        if sector == 0 {
            return Ok(Mapping::Unallocated);
        }
        let what = format!("grain table {gd_index}");
        let entry = grain_table_entry(&self.file, &self.cache, (sector * SECTOR, gt_bytes), gt_index, 4, &what)?;
        Ok(match entry {
            0 => Mapping::Unallocated,
            1 => Mapping::Zero,
            s if self.compressed => Mapping::Compressed { offset: s * SECTOR },
            s => Mapping::Data { offset: s * SECTOR },
        })
    }

    /// The decompressed grain whose marker (or compressed stream) starts at `offset`, or at
    /// least its first `need` bytes (see `Cache::get_prefix_or_load`).
    pub fn compressed_grain(&self, offset: u64, need: usize) -> Result<Arc<[u8]>> {
        let key = Key { file: self.file.id, kind: Kind::Cluster, offset };
        let grain = self.grain_bytes as usize;
        self.cache.get_prefix_or_load(key, need, grain, |want| self.inflate(offset, want))
    }

    /// Decompresses the grain at `offset` straight into `out` if `out` is exactly one grain,
    /// without filling the cache with grains a sequential reader will not read again; false if
    /// `out` is not one grain.
    pub fn whole_compressed_grain(&self, offset: u64, out: &mut [u8]) -> Result<bool> {
        if out.len() as u64 != self.grain_bytes {
            return Ok(false);
        }
        let key = Key { file: self.file.id, kind: Kind::Cluster, offset };
        whole_cluster(&self.cache, key, out, |input, grain| self.inflate_into(offset, input, grain))
    }

    /// The first `want` bytes of the grain at `offset` (all of it when `want` is the grain
    /// size: only then is the stream read to its end, checksum included).
    fn inflate(&self, offset: u64, want: usize) -> Result<Vec<u8>> {
        let grain = self.grain_bytes as usize;
        let mut input = Vec::new();
        // For a whole grain, one byte of room past it tells over-long output from exact output.
        let mut out = vec![0u8; if want < grain { want } else { grain + 1 }];
        let n = self.inflate_into(offset, &mut input, &mut out)?;
        // A short last grain reads as zeros after its end.
        out[n..].fill(0);
        out.truncate(want.min(grain));
        Ok(out)
    }

    /// Inflates the grain at `offset` into `out` (one grain plus one byte, to tell over-long
    /// output from exact output), reading the compressed bytes into `input`; returns the bytes
    /// produced, at most one grain.
    fn inflate_into(&self, offset: u64, input: &mut Vec<u8>, out: &mut [u8]) -> Result<usize> {
        let path = &self.file.path;
        let (data_off, len) = if self.markers {
            let mut marker = [0u8; 12];
            self.file.read_exact_at(&mut marker, offset, "a compressed grain marker")?;
            let size = le32(&marker, 8) as u64;
            // qemu reads at most two grains of compressed data; deflate never needs more.
            let max = (self.grain_bytes * 2).min(MAX_CLUSTER_BYTES);
            if size == 0 || size > max {
                return Err(Error::corrupt(
                    path,
                    format!("compressed grain at offset {offset} claims {size} bytes of data (expected 1 to {max})"),
                ));
            }
            (offset + 12, size)
        } else {
            (offset, (self.grain_bytes * 2).min(self.file.size.saturating_sub(offset)))
        };
        input.resize(len as usize, 0);
        self.file.read_exact_at(input, data_off, "a compressed grain")?;
        let n = inflate_zlib(input, out)
            .map_err(|e| Error::corrupt(path, format!("compressed grain at offset {offset} does not inflate: {e}")))?;
        if n as u64 > self.grain_bytes {
            return Err(Error::corrupt(
                path,
                format!(
                    "compressed grain at offset {offset} inflates to more than the grain size ({} bytes)",
                    self.grain_bytes
                ),
            ));
        }
        Ok(n)
    }
}

/// Inflates one zlib stream from `input` into `out`; returns the bytes produced. A stream that
/// stops early (truncated input) gives what it produced, as a reader of the stream would; the
/// caller zero-fills the rest of the grain. Each thread reuses one decompressor: its state is
/// tens of KiB to set up.
fn inflate_zlib(input: &[u8], out: &mut [u8]) -> std::result::Result<usize, flate2::DecompressError> {
    use flate2::{Decompress, FlushDecompress, Status};
    thread_local! {
        static INFLATER: std::cell::RefCell<Decompress> = std::cell::RefCell::new(Decompress::new(true));
    }
    INFLATER.with(|cell| {
        let d = &mut *cell.borrow_mut();
        d.reset(true);
        loop {
            let (in_before, out_before) = (d.total_in() as usize, d.total_out() as usize);
            let (Some(src), Some(dst)) = (input.get(in_before..), out.get_mut(out_before..)) else {
                return Ok(out_before);
            };
            let status = d.decompress(src, dst, FlushDecompress::Finish)?;
            let (in_after, out_after) = (d.total_in() as usize, d.total_out() as usize);
            if status == Status::StreamEnd
                || out_after >= out.len()
                || (in_after == in_before && out_after == out_before)
            {
                return Ok(out_after);
            }
        }
    })
}

/// The real header of a streamOptimized file whose first header says "grain directory at end":
/// the copy in the footer, normally 1024 bytes before the end (footer marker, footer, end-of-stream
/// marker, one sector each). Writers that pad the end are handled by searching back for a footer
/// marker followed by a KDMV header.
fn find_footer(file: &ImageFile) -> Result<KdmvHeader> {
    let mut sector = [0u8; 512];
    let usable = |b: &[u8; 512]| &b[..4] == b"KDMV" && KdmvHeader::parse(b).gd_offset != GD_AT_END;
    if file.size >= 1536 {
        file.read_exact_at(&mut sector, file.size - 1024, "the streamOptimized footer")?;
        if usable(&sector) {
            return Ok(KdmvHeader::parse(&sector));
        }
    }
    let lowest = file.size.saturating_sub(FOOTER_SEARCH_BYTES).max(1024);
    let mut at = (file.size / SECTOR) * SECTOR;
    let mut marker = [0u8; 512];
    while at >= lowest + SECTOR {
        at -= SECTOR;
        file.read_exact_at(&mut sector, at, "the streamOptimized footer")?;
        if !usable(&sector) {
            continue;
        }
        file.read_exact_at(&mut marker, at - SECTOR, "the streamOptimized footer marker")?;
        if le32(&marker, 12) == MARKER_FOOTER {
            return Ok(KdmvHeader::parse(&sector));
        }
    }
    Err(Error::corrupt(
        &file.path,
        "the header says the grain directory is at the end of the file (streamOptimized), but no footer with the real header was found; the file is probably truncated (an incomplete download or copy)",
    ))
}

/// Grain size in bytes from a count of sectors, checked.
pub(super) fn grain_bytes(file: &ImageFile, sectors: u64) -> Result<u64> {
    let bytes = sectors.checked_mul(SECTOR).filter(|&b| b > 0).ok_or_else(|| {
        Error::corrupt(&file.path, format!("grain size of {sectors} sectors in the sparse header is invalid"))
    })?;
    limits::check(&file.path, "grain size (bytes)", bytes, MAX_CLUSTER_BYTES)
}

/// Capacity in bytes from a count of sectors, checked.
pub(super) fn capacity_bytes(file: &ImageFile, sectors: u64) -> Result<u64> {
    let bytes = sectors.saturating_mul(SECTOR);
    limits::check(&file.path, "capacity in the sparse header (bytes)", bytes, MAX_VIRTUAL_SIZE)
}

/// A grain directory: `entries` little-endian sector numbers (u32, or u64 for seSparse) at a
/// byte offset, read on demand in pieces through the shared cache, so that neither a huge
/// directory nor many extents hold memory beyond the cache's bound.
pub(super) struct Directory {
    offset: u64,
    entries: u64,
    entry_size: u64,
    what: &'static str,
}

/// Bytes of a directory read at once.
const DIRECTORY_PIECE: u64 = 4096;

impl Directory {
    /// A directory at `sector`, checked to lie inside the file.
    pub(super) fn new(
        file: &ImageFile,
        sector: u64,
        entries: u64,
        entry_size: u64,
        what: &'static str,
    ) -> Result<Directory> {
        let bytes = entries.saturating_mul(entry_size);
        limits::check(&file.path, &format!("size of the {what}"), bytes, MAX_TABLE_BYTES)?;
        let offset = sector.saturating_mul(SECTOR);
        if offset == 0 || offset.checked_add(bytes).is_none_or(|end| end > file.size) {
            return Err(Error::corrupt(
                &file.path,
                format!(
                    "the {what} ({entries} entries at sector {sector}) lies outside the file ({} bytes); the file is truncated or corrupt",
                    file.size
                ),
            ));
        }
        Ok(Directory { offset, entries, entry_size, what })
    }

    /// Entry `index`, or 0 (nothing allocated) past the end of the directory.
    pub(super) fn entry(&self, file: &ImageFile, cache: &Cache, index: u64) -> Result<u64> {
        if index >= self.entries {
            return Ok(0);
        }
        let at = index * self.entry_size;
        let piece = at / DIRECTORY_PIECE * DIRECTORY_PIECE;
        let len = (self.entries * self.entry_size - piece).min(DIRECTORY_PIECE);
        let off = self.offset + piece;
        let bytes = cache.get_or_load(Key { file: file.id, kind: Kind::Directory, offset: off }, || {
            file.read_vec(off, len, MAX_TABLE_BYTES, self.what)
        })?;
        let i = (at - piece) as usize;
        Ok(match (self.entry_size, bytes.get(i..i + self.entry_size as usize)) {
            (4, Some(b)) => le32(b, 0) as u64,
            (8, Some(b)) => le64(b, 0),
            _ => 0,
        })
    }
}

/// Entry `index` (little-endian, `entry_size` 4 or 8 bytes) of the grain table at `table` (offset,
/// length) of `file`, loaded through the cache; 0 (unallocated) past the table's end.
pub fn grain_table_entry(
    file: &ImageFile,
    cache: &Cache,
    table: (u64, u64),
    index: usize,
    entry_size: usize,
    what: &str,
) -> Result<u64> {
    let gt = load_table(cache, file, Kind::Table, table.0, table.1, MAX_TABLE_BYTES, what)?;
    Ok(match gt.get(index * entry_size..(index + 1) * entry_size) {
        Some(b) if entry_size == 4 => u64::from(le32(b, 0)),
        Some(b) => le64(b, 0),
        None => 0,
    })
}

/// The grain directory and grain table indexes of the grain holding byte `off` of an extent
/// (KDMV or seSparse), or None past its capacity.
pub fn grain_indexes(off: u64, capacity: u64, grain_bytes: u64, gtes_per_gt: u64) -> Option<(u64, usize)> {
    if off >= capacity {
        return None;
    }
    let grain = off / grain_bytes;
    Some((grain / gtes_per_gt, (grain % gtes_per_gt) as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::bytes::{put_le32, put_le64};
    use crate::formats::vmdk::test_extent::{extent_refusal, open_extent};

    /// A KDMV header (little-endian): version 1, a 1 MiB extent of 64 KiB grains, 512 entries
    /// per grain table, the grain directory (one entry) at sector 1, no redundant directory;
    /// padded to its 512 bytes.
    fn header() -> Vec<u8> {
        let mut h = vec![
            b'K', b'D', b'M', b'V', //                            0: magic "KDMV"
            0x01, 0x00, 0x00, 0x00, //                            4: version 1
            0x01, 0x00, 0x00, 0x00, //                            8: flags: valid newline test
            0x00, 0x08, 0, 0, 0, 0, 0, 0, //                     12: capacity 2048 sectors (1 MiB)
            0x80, 0x00, 0, 0, 0, 0, 0, 0, //                     20: grainSize 128 sectors (64 KiB)
            0x00, 0x00, 0, 0, 0, 0, 0, 0, //                     28: descriptorOffset 0 (none)
            0x00, 0x00, 0, 0, 0, 0, 0, 0, //                     36: descriptorSize 0
            0x00, 0x02, 0x00, 0x00, //                           44: numGTEsPerGT 512
            0x00, 0x00, 0, 0, 0, 0, 0, 0, //                     48: rgdOffset 0 (none)
            0x01, 0x00, 0, 0, 0, 0, 0, 0, //                     56: gdOffset sector 1
            0x02, 0x00, 0, 0, 0, 0, 0, 0,    //                     64: overHead 2 sectors
            0x00, //                                             72: uncleanShutdown 0
            b'\n', b' ', b'\r', b'\n', //                        73: newline detection characters
            0x00, 0x00, //                                       77: compressAlgorithm 0 (none)
        ];
        h.resize(512, 0); //                                     79: padding
        h
    }

    /// The header, then sector 1: a grain directory of one empty entry.
    fn extent(h: &[u8]) -> Vec<u8> {
        let mut b = h.to_vec();
        b.resize(1024, 0);
        b
    }

    fn refusal(bytes: &[u8]) -> String {
        extent_refusal(bytes, SparseExtent::open_kdmv)
    }

    #[test]
    fn header_fields() {
        let h = KdmvHeader::parse(header()[..].try_into().unwrap());
        assert_eq!(h.version, 1);
        assert_eq!(h.flags, 1);
        assert_eq!(h.capacity, 2048);
        assert_eq!(h.grain_sectors, 128);
        assert_eq!((h.descriptor_offset, h.descriptor_sectors), (0, 0));
        assert_eq!(h.gtes_per_gt, 512);
        assert_eq!(h.rgd_offset, 0);
        assert_eq!(h.gd_offset, 1);
        assert_eq!(h.compress_algorithm, 0);
        let e = open_extent(&extent(&header()), SparseExtent::open_kdmv).unwrap();
        assert_eq!((e.capacity, e.grain_bytes, e.gtes_per_gt), (1 << 20, 64 << 10, 512));
        assert!(!e.compressed && !e.markers && e.rgd.is_none());
        assert_eq!(e.description, "KDMV version 1, hosted sparse");
    }

    #[test]
    fn stream_optimized_header_from_the_footer() {
        let mut h = header();
        put_le32(&mut h, 4, 3); //                                4: version 3
        put_le32(&mut h, 8, FLAG_COMPRESSED | FLAG_MARKERS); //   8: flags: compressed grains, markers
        h[77] = 1; //                                            77: compressAlgorithm 1 (deflate)
        let mut footer = h.clone();
        put_le64(&mut h, 56, GD_AT_END); //                      56: gdOffset: at the end
        let mut b = extent(&h); //                         sectors 0-1: header, grain directory
        let mut marker = vec![0u8; 512]; //                   sector 2: footer marker
        put_le32(&mut marker, 12, MARKER_FOOTER); //                    12: type 3 (footer)
        b.extend(marker);
        put_le64(&mut footer, 56, 1); //                      sector 3: footer, gdOffset sector 1
        b.extend(footer);
        b.extend([0; 512]); //                                sector 4: end-of-stream marker
        let e = open_extent(&b, SparseExtent::open_kdmv).unwrap();
        assert!(e.compressed && e.markers);
        assert_eq!(e.description, "KDMV version 3, streamOptimized (deflate grains)");
        b.truncate(1024); // no footer
        assert!(refusal(&b).contains("no footer with the real header was found"));
    }

    #[test]
    fn refuses_unknown_versions() {
        for v in [0, 4] {
            let mut h = header();
            put_le32(&mut h, 4, v); //                            4: version
            let e = refusal(&extent(&h));
            assert!(e.contains(&format!("sparse extent version {v} is not one vdmount reads")), "{e}");
        }
    }

    #[test]
    fn refuses_unknown_compression() {
        let mut h = header();
        h[77] = 2; //                                            77: compressAlgorithm 2
        assert!(refusal(&extent(&h)).contains("grain compression algorithm 2 is unknown"));
    }

    #[test]
    fn refuses_grain_tables_of_0_or_more_than_512_entries() {
        for n in [0, 513] {
            let mut h = header();
            put_le32(&mut h, 44, n); //                          44: numGTEsPerGT
            let e = refusal(&extent(&h));
            assert!(e.contains(&format!("numGTEsPerGT is {n}")), "{e}");
        }
    }

    #[test]
    fn refuses_absurd_grain_sizes_and_capacity() {
        let mut h = header();
        put_le64(&mut h, 20, 0); //                              20: grainSize 0
        assert!(refusal(&extent(&h)).contains("grain size of 0 sectors in the sparse header is invalid"));
        put_le64(&mut h, 20, u64::MAX); //                       20: grainSize: bytes overflow
        assert!(refusal(&extent(&h)).contains("grain size of 18446744073709551615 sectors"));
        put_le64(&mut h, 20, 1 << 20); //                        20: grainSize 512 MiB
        assert!(refusal(&extent(&h)).contains("grain size (bytes) is 536870912, more than the limit"));
        put_le64(&mut h, 20, 16384); //                          20: grainSize 8 MiB, compressed
        h[77] = 1; //                                            77: compressAlgorithm 1 (deflate)
        assert!(refusal(&extent(&h)).contains("its compressed grains are 8388608 bytes"));
        let mut h = header();
        put_le64(&mut h, 12, u64::MAX); //                       12: capacity 2^64 - 1 sectors
        assert!(refusal(&extent(&h)).contains("capacity in the sparse header (bytes) is"));
    }

    #[test]
    fn refuses_a_grain_directory_outside_the_file() {
        let mut h = header();
        put_le64(&mut h, 56, 2); //                              56: gdOffset sector 2: past the end
        let e = refusal(&extent(&h));
        assert!(e.contains("the grain directory (1 entries at sector 2) lies outside the file"), "{e}");
        put_le64(&mut h, 56, 0); //                              56: gdOffset 0
        assert!(refusal(&extent(&h)).contains("the grain directory (1 entries at sector 0)"));
    }
}
