//! VMDK: a text descriptor (separate, or embedded in a sparse file) listing extents, each a flat
//! file, a hosted sparse file (KDMV, streamOptimized included), a VMFS sparse file (COWD), a
//! seSparse file or zeros; a snapshot names its parent in `parentFileNameHint`.
//!
//! - descriptor.rs: the descriptor text parser;
//! - sparse.rs: KDMV grain directory and tables, compressed grains, the streamOptimized footer;
//! - cowd.rs: the COWD header (its grain map is sparse.rs's);
//! - sesparse.rs: seSparse headers and tables.

mod cowd;
pub mod descriptor;
mod sesparse;
mod sparse;
#[cfg(test)]
mod test_extent;

use self::descriptor::{parse_descriptor, Access, Descriptor, ExtentLine, ExtentType, NO_PARENT_CID};
use self::sesparse::SeSparseExtent;
use self::sparse::{embedded_descriptor, KdmvHeader, SparseExtent, SECTOR};
use super::chain::{first_present, open_backing_with};
use super::open_backing;
use crate::source::confine::resolve_beside;
use crate::source::file::ImageFile;
// Renamed: `Extent` here is a descriptor extent; `map` pushes the disk-level zero extent.
use super::layer::{Decompress, Layer, LayerImage, Source};
use super::{Chain, DiskImage, Format, ImageInfo, LayerId, OpenOptions};
use crate::error::{Error, Result};
use crate::limits::{self, MAX_DESCRIPTOR_BYTES, MAX_VIRTUAL_SIZE};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a grain of a sparse extent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Not in this extent: the parent's data, or zeros.
    Unallocated,
    /// Zeros, whatever the parent holds.
    Zero,
    /// Stored as is at this byte offset of the extent file.
    Data { offset: u64 },
    /// A deflate-compressed grain (with its marker) at this byte offset.
    Compressed { offset: u64 },
}

enum ExtentData {
    Zero,
    Flat { file: ImageFile, base: u64 },
    Sparse(SparseExtent),
    SeSparse(SeSparseExtent),
}

struct Extent {
    /// Byte offset of the extent in the virtual disk.
    start: u64,
    len: u64,
    data: ExtentData,
    /// The extent as `info` shows it.
    label: String,
}

pub struct VmdkImage {
    path: PathBuf,
    size: u64,
    extents: Vec<Extent>,
    descriptor: Option<Descriptor>,
    parent: Option<Arc<dyn DiskImage>>,
}

/// createTypes whose data is on a physical device or LUN, not in files vdmount can read.
const DEVICE_CREATE_TYPES: [&str; 7] = [
    "vmfsRaw",
    "vmfsRDM",
    "vmfsRawDeviceMap",
    "vmfsRDMP",
    "vmfsPassthroughRawDeviceMap",
    "fullDevice",
    "partitionedDevice",
];

impl VmdkImage {
    pub fn open(file: ImageFile, chain: &Chain, opts: &OpenOptions) -> Result<VmdkImage> {
        let path = file.path.clone();
        let mut magic = [0u8; 4];
        file.read_exact_at(&mut magic, 0, "the VMDK signature")?;
        let (extents, descriptor) = match &magic {
            b"KDMV" => {
                let header = KdmvHeader::read(&file)?;
                let descriptor = match embedded_descriptor(&file, &header)? {
                    Some(text) => Some(parse(&path, &text, "embedded descriptor")?),
                    None => None,
                };
                match descriptor {
                    // qemu's rule: a KDMV file of capacity 0 with a descriptor is only a descriptor.
                    Some(d) if header.capacity == 0 && header.gd_offset != u64::MAX && !d.extents.is_empty() => {
                        let extents = open_extents(&path, &d, chain, opts)?;
                        (extents, Some(d))
                    }
                    // A monolithic sparse file is its own only extent, whatever file name its
                    // embedded descriptor records (renamed images, open-vmdk's "disk").
                    d => {
                        let sparse = SparseExtent::open_kdmv(file, opts.cache.clone())?;
                        let named = match d.as_ref().and_then(|d| d.extents.first()) {
                            Some(l) => format!(
                                "{} {} {} \"{}\", read from",
                                l.access.name(),
                                l.sectors,
                                l.kind.name(),
                                l.file.as_deref().unwrap_or("")
                            ),
                            None => "SPARSE:".to_string(),
                        };
                        let label = format!("{named} this file ({})", sparse.description);
                        let len = sparse.capacity;
                        (vec![Extent { start: 0, len, data: ExtentData::Sparse(sparse), label }], d)
                    }
                }
            }
            b"COWD" => {
                let sparse = cowd::open_cowd(file, opts.cache.clone())?;
                let label = format!("VMFSSPARSE (this file, {})", sparse.description);
                let len = sparse.capacity;
                (vec![Extent { start: 0, len, data: ExtentData::Sparse(sparse), label }], None)
            }
            _ => {
                let text = read_text_descriptor(&file)?;
                let d = parse(&path, &text, "descriptor")?;
                let extents = open_extents(&path, &d, chain, opts)?;
                (extents, Some(d))
            }
        };
        let size = extents.last().map(|e| e.start + e.len).unwrap_or(0);
        let parent = match descriptor.as_ref().and_then(|d| d.parent_hint().map(|h| (d, h))) {
            Some((d, hint)) => Some(open_parent(&path, d, hint, chain, opts)?),
            None => None,
        };
        Ok(VmdkImage { path, size, extents, descriptor, parent })
    }
}

impl Layer for VmdkImage {
    fn path(&self) -> &Path {
        &self.path
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn below(&self) -> Option<&Arc<dyn DiskImage>> {
        self.parent.as_ref()
    }

    /// Where the bytes at virtual offset `pos` (below `size`) come from, and how many of them
    /// (1 to `max`) come from there alike. `read_at` and `map` both walk the disk with this, so
    /// what `map` describes is exactly what `read_at` reads.
    fn lookup(&self, pos: u64, max: u64) -> Result<(Source<'_>, u64)> {
        let idx = self.extents.partition_point(|e| e.start + e.len <= pos);
        let Some(e) = self.extents.get(idx) else {
            return Ok((Source::Zero, max));
        };
        let within = pos - e.start;
        let max = max.min(e.len - within);
        match &e.data {
            ExtentData::Zero => Ok((Source::Zero, max)),
            ExtentData::Flat { file, base } => Ok((Source::Data { file, offset: base.saturating_add(within) }, max)),
            ExtentData::Sparse(s) => grain_run(within, max, s.grain_bytes, &s.file, |o| s.lookup(o), Some(s)),
            ExtentData::SeSparse(s) => grain_run(within, max, s.grain_bytes, &s.file, |o| s.lookup(o), None),
        }
    }
}

/// The run at byte `within` of a grain-mapped extent, at most `max` bytes: grains that map alike
/// (unallocated, zero, contiguous data) make one run, so each is one read. A compressed grain is
/// a run of its own.
fn grain_run<'a>(
    within: u64,
    max: u64,
    grain: u64,
    file: &'a ImageFile,
    lookup: impl Fn(u64) -> Result<Mapping>,
    sparse: Option<&'a SparseExtent>,
) -> Result<(Source<'a>, u64)> {
    let in_grain = within % grain;
    let first = lookup(within)?;
    let mut take = max.min(grain - in_grain);
    while take < max && !matches!(first, Mapping::Compressed { .. }) {
        let next = lookup(within + take)?;
        let continues = match (first, next) {
            (Mapping::Unallocated, Mapping::Unallocated) | (Mapping::Zero, Mapping::Zero) => true,
            (Mapping::Data { offset: a }, Mapping::Data { offset: b }) => a.checked_add(in_grain + take) == Some(b),
            _ => false,
        };
        if !continues {
            break;
        }
        take += (max - take).min(grain);
    }
    let run = match first {
        Mapping::Unallocated => Source::Below,
        Mapping::Zero => Source::Zero,
        // Saturating: an offset beyond any file reads as zeros, like any past the file's end.
        Mapping::Data { offset } => Source::Data { file, offset: offset.saturating_add(in_grain) },
        Mapping::Compressed { offset } => match sparse {
            Some(sparse) => Source::Compressed { from: sparse, at: offset, len: 0, skip: in_grain },
            None => return Err(Error::corrupt(&file.path, "compressed grain in an extent that has none")),
        },
    };
    Ok((run, take))
}

/// Reads `out` from byte `skip` of the compressed grain at `offset`.
impl Decompress for SparseExtent {
    /// `len` is unused: a grain's marker records its compressed size.
    fn read_compressed(&self, offset: u64, _len: u64, skip: u64, out: &mut [u8]) -> Result<()> {
        if skip == 0 && self.whole_compressed_grain(offset, out)? {
            return Ok(());
        }
        let data = self.compressed_grain(offset, skip as usize + out.len())?;
        let from = skip as usize;
        match data.get(from..from + out.len()) {
            Some(src) => {
                out.copy_from_slice(src);
                Ok(())
            }
            None => Err(Error::corrupt(&self.file.path, format!("compressed grain at offset {offset} is short"))),
        }
    }
}
impl LayerImage for VmdkImage {
    fn describe(&self) -> ImageInfo {
        let mut details = Vec::new();
        let mut features = Vec::new();
        let mut cluster_size = None;
        let d = self.descriptor.as_ref();
        let get = |k: &str| d.and_then(|d| d.get(k)).map(String::from);
        let create_type = get("createType").unwrap_or_else(|| match self.extents.first().map(|e| &e.data) {
            Some(ExtentData::Sparse(s)) if s.compressed => "streamOptimized (no descriptor)".into(),
            Some(ExtentData::Sparse(s)) if s.description.starts_with("COWD") => "vmfsSparse (no descriptor)".into(),
            _ => "monolithicSparse (no descriptor)".into(),
        });
        details.push(("create type".into(), create_type));
        if let Some(cid) = get("CID") {
            details.push(("CID".into(), cid));
        }
        if let Some(pcid) = get("parentCID") {
            details.push(("parent CID".into(), pcid));
        }
        if let Some(hint) = get("parentFileNameHint") {
            details.push(("parent file name hint".into(), hint));
        }
        if let Some(hw) = get("ddb.virtualHWVersion") {
            details.push(("hardware version".into(), hw));
        }
        if let Some(a) = get("ddb.adapterType") {
            details.push(("adapter type".into(), a));
        }
        for (i, e) in self.extents.iter().enumerate() {
            details.push((format!("extent {}", i + 1), e.label.clone()));
            match &e.data {
                ExtentData::Sparse(s) => {
                    cluster_size.get_or_insert(s.grain_bytes);
                    if s.compressed && !features.iter().any(|f| f == "compressed grains (deflate)") {
                        features.push("compressed grains (deflate)".to_string());
                    }
                }
                ExtentData::SeSparse(s) => {
                    cluster_size.get_or_insert(s.grain_bytes);
                }
                _ => {}
            }
        }
        ImageInfo {
            path: self.path.clone(),
            format: "vmdk".into(),
            virtual_size: self.size,
            cluster_size,
            logical_sector_size: 512,
            features,
            details,
            backing: self.parent.as_ref().map(|p| Box::new(p.info())),
            error: None,
        }
    }

    fn layer_id(&self) -> LayerId {
        match self.descriptor.as_ref().and_then(|d| d.cid()) {
            Some(cid) => LayerId::VmdkCid(cid),
            None => LayerId::None,
        }
    }
}

fn parse(path: &Path, text: &str, what: &str) -> Result<Descriptor> {
    parse_descriptor(text).map_err(|e| Error::corrupt(path, format!("{what}: {e}")))
}

fn read_text_descriptor(file: &ImageFile) -> Result<String> {
    let bytes = file.read_vec(0, file.size, MAX_DESCRIPTOR_BYTES, "the descriptor")?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Opens every extent a descriptor at `desc_path` lists, in order.
fn open_extents(desc_path: &Path, d: &Descriptor, chain: &Chain, opts: &OpenOptions) -> Result<Vec<Extent>> {
    if let Some(ct) = d.create_type() {
        if DEVICE_CREATE_TYPES.iter().any(|t| t.eq_ignore_ascii_case(ct)) {
            return Err(Error::unsupported(
                desc_path,
                format!("createType \"{ct}\" is a raw device mapping: the disk's data is on a physical disk or LUN, not in an image file; image that device and open the copy instead"),
            ));
        }
    }
    if d.extents.is_empty() {
        return Err(Error::corrupt(
            desc_path,
            "the descriptor lists no extents (no lines like RW 2048 FLAT \"disk-flat.vmdk\" 0)",
        ));
    }
    let mut extents = Vec::with_capacity(d.extents.len());
    let mut start = 0u64;
    for line in &d.extents {
        let len = line.sectors.saturating_mul(SECTOR);
        let end = start.saturating_add(len);
        limits::check(desc_path, "total size of the descriptor's extents (bytes)", end, MAX_VIRTUAL_SIZE)?;
        let data = open_extent(desc_path, line, chain, opts)?;
        let file_label = match &line.file {
            Some(f) => format!(" \"{f}\""),
            None => String::new(),
        };
        let what = match &data {
            ExtentData::Sparse(s) => format!(" ({})", s.description),
            ExtentData::SeSparse(_) => " (seSparse)".to_string(),
            ExtentData::Flat { .. } if line.offset != 0 => {
                format!(" (from sector {})", line.offset)
            }
            _ if line.access == Access::NoAccess => " (no access: reads as zeros)".to_string(),
            _ => String::new(),
        };
        let label = format!("{} {} {}{file_label}{what}", line.access.name(), line.sectors, line.kind.name());
        extents.push(Extent { start, len, data, label });
        start = end;
    }
    Ok(extents)
}

fn open_extent(desc_path: &Path, line: &ExtentLine, chain: &Chain, opts: &OpenOptions) -> Result<ExtentData> {
    if let ExtentType::Other(t) = &line.kind {
        let t_up = t.to_ascii_uppercase();
        let msg = if t_up.starts_with("VMFSR") {
            format!("extent type {t} (line {}) is a raw device mapping: the data is on a physical disk or LUN, not in an image file; image that device and open the copy instead", line.line)
        } else {
            format!("extent type {t} (line {}) is unknown", line.line)
        };
        return Err(Error::unsupported(desc_path, msg));
    }
    if line.kind == ExtentType::Zero || line.access == Access::NoAccess {
        return Ok(ExtentData::Zero);
    }
    let name = line.file.as_deref().unwrap_or("");
    let file = open_extent_file(desc_path, name, line.line, chain)?;
    let cache = opts.cache.clone();
    Ok(match line.kind {
        ExtentType::Flat | ExtentType::Vmfs => {
            let base = line.offset.saturating_mul(SECTOR);
            ExtentData::Flat { file, base }
        }
        ExtentType::Sparse | ExtentType::VmfsSparse => {
            let mut magic = [0u8; 4];
            file.read_exact_at(&mut magic, 0, "the sparse extent signature")?;
            match &magic {
                b"KDMV" => ExtentData::Sparse(SparseExtent::open_kdmv(file, cache)?),
                b"COWD" => ExtentData::Sparse(cowd::open_cowd(file, cache)?),
                _ => {
                    return Err(Error::corrupt(
                        &file.path,
                        format!("extent named on line {} of {} should be a sparse extent, but does not start with \"KDMV\" or \"COWD\"", line.line, desc_path.display()),
                    ))
                }
            }
        }
        ExtentType::SeSparse => ExtentData::SeSparse(SeSparseExtent::open(file, cache)?),
        ExtentType::Zero | ExtentType::Other(_) => ExtentData::Zero,
    })
}

/// Opens the extent file `name`, taken relative to the descriptor's folder, where the chain's
/// confinement allows (beneath the image's folder by default) and only if it is a regular file.
fn open_extent_file(desc_path: &Path, name: &str, line: usize, chain: &Chain) -> Result<ImageFile> {
    if name.is_empty() {
        return Err(Error::corrupt(desc_path, format!("the extent on line {line} has an empty file name")));
    }
    chain.confine.open(desc_path, Path::new(name), &format!("extent file (descriptor line {line})"))
}

/// Opens the parent named by `hint` and checks that it is the version the child was made from.
fn open_parent(
    child: &Path,
    d: &Descriptor,
    hint: &str,
    chain: &Chain,
    opts: &OpenOptions,
) -> Result<Arc<dyn DiskImage>> {
    // Hints are often absolute paths on the original host (even Windows ones); a copied chain
    // keeps the parent beside the child, so fall back to the bare file name there.
    let base = hint.rsplit(['/', '\\']).next().unwrap_or(hint);
    let mut names: Vec<PathBuf> = [hint, base].iter().filter(|n| !n.is_empty()).map(PathBuf::from).collect();
    names.dedup();
    let (name, parent) = match first_present(child, &names, chain) {
        Some((name, opened)) => {
            (name.clone(), open_backing_with(child, name, || opened, Some(Format::Vmdk), chain, opts)?)
        }
        None => (PathBuf::from(hint), open_backing(child, Path::new(hint), Some(Format::Vmdk), chain, opts)?),
    };
    let parent_path = resolve_beside(child, &name);
    if let (Some(raw), None) = (d.get("parentCID"), d.parent_cid()) {
        if !opts.ignore_parent_id {
            return Err(Error::corrupt(
                child,
                format!("parentCID {raw:?} is not a hexadecimal number, so the parent {} cannot be checked; pass --ignore-parent-id to read the chain anyway", parent_path.display()),
            ));
        }
    }
    if let (Some(expected), LayerId::VmdkCid(actual)) = (d.parent_cid(), parent.layer_id()) {
        if expected != actual && expected != NO_PARENT_CID && !opts.ignore_parent_id {
            return Err(Error::corrupt(
                child,
                format!(
                    "records parentCID {expected:08x}, but its parent {} has CID {actual:08x}: the parent changed after this snapshot was taken (or is another disk), so reading the chain would mix data; pass --ignore-parent-id to read it anyway",
                    parent_path.display()
                ),
            ));
        }
    }
    Ok(parent)
}
