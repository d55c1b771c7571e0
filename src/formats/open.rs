//! The one place formats are recognised and opened: magic detection, `--format`, and the
//! depth limit and loop check for backing chains.

use super::image_file::ImageFile;
use super::{qcow2, raw, vhd, vhdx, vmdk, DiskImage};
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::limits::MAX_CHAIN_DEPTH;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Raw,
    Qcow2,
    Vmdk,
    Vhd,
    Vhdx,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
        }
    }

    /// Parses a format name as images record it (qcow2 backing_format, for instance).
    pub fn from_name(name: &str) -> Option<Format> {
        Some(match name.to_ascii_lowercase().as_str() {
            "raw" | "file" => Format::Raw,
            "qcow2" | "qcow" => Format::Qcow2,
            "vmdk" => Format::Vmdk,
            "vhd" | "vpc" => Format::Vhd,
            "vhdx" => Format::Vhdx,
            _ => return None,
        })
    }
}

/// How to open an image: what the user asked for, and the cache every layer shares.
#[derive(Clone)]
pub struct OpenOptions {
    /// Force the top image's format instead of detecting it.
    pub format: Option<Format>,
    /// qcow2 internal snapshot to expose instead of the live disk.
    pub snapshot: Option<String>,
    /// Open a child whose recorded parent id does not match its parent's.
    pub ignore_parent_id: bool,
    pub cache: Arc<Cache>,
}

impl OpenOptions {
    pub fn new(cache: Arc<Cache>) -> OpenOptions {
        OpenOptions { format: None, snapshot: None, ignore_parent_id: false, cache }
    }
}

/// The images opened so far on the way down a backing chain, top first.
#[derive(Clone, Default)]
pub struct Chain {
    pub paths: Vec<PathBuf>,
}

impl Chain {
    fn describe(&self, last: &Path) -> String {
        let mut names: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
        names.push(last.display().to_string());
        names.join(" -> ")
    }
}

/// Opens the image at `path` (the top of its chain).
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Arc<dyn DiskImage>> {
    open_in_chain(path, opts.format, &Chain::default(), opts, true)
}

/// Opens the backing file (or parent) `name` of the image `child`, which is the last entry of
/// `chain`. A relative `name` is taken relative to the child's folder, never the working
/// directory. `format` is the format the child recorded, if it did.
pub fn open_backing(
    child: &Path,
    name: &Path,
    format: Option<Format>,
    chain: &Chain,
    opts: &OpenOptions,
) -> Result<Arc<dyn DiskImage>> {
    let path = resolve_beside(child, name);
    open_in_chain(&path, format, chain, opts, false)
}

/// `name` resolved relative to the folder holding `child`.
pub fn resolve_beside(child: &Path, name: &Path) -> PathBuf {
    if name.is_absolute() {
        return name.to_path_buf();
    }
    match child.parent() {
        Some(dir) => dir.join(name),
        None => name.to_path_buf(),
    }
}

fn open_in_chain(
    path: &Path,
    format: Option<Format>,
    chain: &Chain,
    opts: &OpenOptions,
    top: bool,
) -> Result<Arc<dyn DiskImage>> {
    if chain.paths.len() >= MAX_CHAIN_DEPTH {
        return Err(Error::Limit {
            path: path.to_path_buf(),
            field: format!("backing chain depth ({})", chain.describe(path)),
            value: chain.paths.len() as u64 + 1,
            limit: MAX_CHAIN_DEPTH as u64,
        });
    }
    // A backing file that cannot be opened (missing, a folder, a FIFO, a device) is named with
    // the image that asked for it, so the user knows which file to look at.
    let child = chain.paths.last().map(|p| p.display().to_string()).unwrap_or_default();
    let file = ImageFile::open(path).map_err(|e| match (top, e) {
        (false, Error::Io { path, context, source }) => Error::Io {
            context: format!("{context} (backing file of {child})"),
            path,
            source,
        },
        (false, Error::Unsupported { path, msg }) => Error::Unsupported { msg: format!("{msg} (backing file of {child})"), path },
        (_, e) => e,
    })?;
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if chain.paths.iter().any(|p| std::fs::canonicalize(p).ok().as_deref() == Some(canonical.as_path())) {
        return Err(Error::corrupt(
            path,
            format!("backing chain loops back on itself: {}", chain.describe(path)),
        ));
    }
    let mut chain = chain.clone();
    chain.paths.push(path.to_path_buf());

    let detected = detect(&file)?;
    let format = match format {
        None => detected,
        Some(Format::Raw) => Format::Raw,
        Some(f) if f == detected => f,
        Some(f) => {
            return Err(Error::corrupt(
                path,
                format!(
                    "{} was asked for, but the file does not start with a {} signature (it looks like {}); check the file or drop --format",
                    f.name(),
                    f.name(),
                    detected.name()
                ),
            ))
        }
    };
    match format {
        Format::Raw => Ok(Arc::new(raw::RawImage::new(file))),
        Format::Qcow2 => Ok(Arc::new(qcow2::Qcow2Image::open(file, &chain, opts)?)),
        Format::Vmdk => Ok(Arc::new(vmdk::VmdkImage::open(file, &chain, opts)?)),
        Format::Vhd => Ok(Arc::new(vhd::VhdImage::open(file, &chain, opts)?)),
        Format::Vhdx => Ok(Arc::new(vhdx::VhdxImage::open(file, &chain, opts)?)),
    }
}

/// The format of `file`, by its signature. A file with no known signature is raw, as qemu-img
/// treats it.
pub fn detect(file: &ImageFile) -> Result<Format> {
    let mut head = [0u8; 512];
    let n = head.len().min(file.size as usize);
    file.read_exact_at(&mut head[..n], 0, "the first sector")?;
    let head = &head[..n];
    if head.starts_with(b"QFI\xfb") {
        return Ok(Format::Qcow2);
    }
    if head.starts_with(b"KDMV") || head.starts_with(b"COWD") || looks_like_vmdk_descriptor(head) {
        return Ok(Format::Vmdk);
    }
    if head.starts_with(b"vhdxfile") {
        return Ok(Format::Vhdx);
    }
    if head.starts_with(b"conectix") {
        return Ok(Format::Vhd);
    }
    // A fixed VHD has its only footer in the last 512 bytes (511 in some old writers).
    if file.size >= 1024 {
        let mut tail = [0u8; 8];
        for back in [512u64, 511] {
            file.read_exact_at(&mut tail, file.size - back, "the VHD footer")?;
            if &tail == b"conectix" {
                return Ok(Format::Vhd);
            }
        }
    }
    Ok(Format::Raw)
}

fn looks_like_vmdk_descriptor(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    text.trim_start().starts_with("# Disk DescriptorFile")
        || text.lines().take(20).any(|l| l.trim_start().starts_with("createType"))
}
