//! The one place formats are recognised and opened: magic detection, `--format`, and the
//! depth limit, loop check and confinement of backing chains.

use super::failed::FailedLayer;
use super::{dmg, ewf, parallels, qcow2, qed, raw, sparseimage, vdi, vhd, vhdx, vmdk, DiskImage};
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::limits::{MemoryBudget, MAX_CHAIN_DEPTH};
pub use crate::source::confine::resolve_beside;
use crate::source::file::ImageFile;
use crate::source::Confinement;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Raw,
    Qcow2,
    Vmdk,
    Vhd,
    Vhdx,
    Vdi,
    Qed,
    Parallels,
    Ewf,
    Dmg,
    #[value(name = "sparseimage")]
    SparseImage,
    #[value(name = "sparsebundle")]
    SparseBundle,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Vdi => "vdi",
            Format::Qed => "qed",
            Format::Parallels => "parallels",
            Format::Ewf => "ewf",
            Format::Dmg => "dmg",
            Format::SparseImage => "sparseimage",
            Format::SparseBundle => "sparsebundle",
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
            "vdi" => Format::Vdi,
            "qed" => Format::Qed,
            "parallels" => Format::Parallels,
            "ewf" => Format::Ewf,
            "dmg" | "udif" => Format::Dmg,
            "sparseimage" | "udsp" => Format::SparseImage,
            "sparsebundle" | "udsb" => Format::SparseBundle,
            _ => return None,
        })
    }
}

/// How to open an image: what the user asked for, and the cache every layer shares.
#[derive(Clone)]
pub struct OpenOptions {
    /// Force the top image's format instead of detecting it.
    pub format: Option<Format>,
    /// qcow2 internal snapshot, or Parallels bundle snapshot, to expose instead of the live disk.
    pub snapshot: Option<String>,
    /// Open a child whose recorded parent id does not match its parent's.
    pub ignore_parent_id: bool,
    /// Folders beyond the top image's own where files the images name may lie (--allow-dir).
    pub allow_dirs: Vec<PathBuf>,
    /// Follow names an image gives anywhere (--allow-any-path).
    pub allow_any_path: bool,
    /// For `info`: a backing layer that cannot be opened becomes a placeholder saying why,
    /// instead of failing the whole chain.
    pub describe_failed_layers: bool,
    pub cache: Arc<Cache>,
    /// Memory the chain's long-lived tables may take, all layers together.
    pub budget: Arc<MemoryBudget>,
}

impl OpenOptions {
    pub fn new(cache: Arc<Cache>) -> OpenOptions {
        OpenOptions {
            format: None,
            snapshot: None,
            ignore_parent_id: false,
            allow_dirs: Vec::new(),
            allow_any_path: false,
            describe_failed_layers: false,
            cache,
            budget: Arc::new(MemoryBudget::default()),
        }
    }
}

/// The images opened so far on the way down a backing chain, top first, and the rules for the
/// files they name.
#[derive(Clone)]
pub struct Chain {
    pub paths: Vec<PathBuf>,
    /// Device and inode of each layer: a chain that comes back to a file under another name
    /// (a hard link, a symlink, "sub/../x") is a loop too.
    inodes: Vec<(u64, u64)>,
    pub confine: Arc<Confinement>,
}

impl Chain {
    fn describe(&self, last: &Path) -> String {
        let mut names: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
        names.push(last.display().to_string());
        names.join(" -> ")
    }

    /// The layer the next one is opened for.
    fn child(&self) -> &Path {
        self.paths.last().map_or(Path::new(""), |p| p.as_path())
    }
}

/// Opens the image at `path` (the top of its chain); a Parallels bundle folder (`NAME.hdd/`)
/// stands for the descriptor in it.
/// A sparse bundle folder (`NAME.sparsebundle/`) stands for its Info.plist.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Arc<dyn DiskImage>> {
    let path = &parallels::descriptor_in_folder(path);
    let path = &sparseimage::bundle::info_in_folder(path);
    let file = ImageFile::open(path)?;
    let confine = Confinement::new(path, &opts.allow_dirs, opts.allow_any_path)?;
    let chain = Chain { paths: Vec::new(), inodes: Vec::new(), confine: Arc::new(confine) };
    open_in_chain(file, opts.format, &chain, opts)
}

/// Opens the backing file (or parent) `name` of the image `child`, which is the last entry of
/// `chain`. A relative `name` is taken relative to the child's folder, never the working
/// directory; the file must be where the chain's confinement allows. `format` is the format the
/// child recorded, if it did.
pub fn open_backing(
    child: &Path,
    name: &Path,
    format: Option<Format>,
    chain: &Chain,
    opts: &OpenOptions,
) -> Result<Arc<dyn DiskImage>> {
    let opened = if chain.paths.len() >= MAX_CHAIN_DEPTH {
        Err(Error::Refused {
            path: chain.paths[0].clone(),
            msg: format!(
                "its backing chain is more than {MAX_CHAIN_DEPTH} images deep; the image is corrupt or hostile"
            ),
        })
    } else {
        chain
            .confine
            .open(child, name, "backing file")
            .and_then(|file| open_in_chain(file, format, chain, opts).map_err(|e| e.in_layer_of(child)))
    };
    match opened {
        Err(e) if opts.describe_failed_layers => Ok(Arc::new(FailedLayer::new(resolve_beside(child, name), e))),
        r => r,
    }
}

fn open_in_chain(
    file: ImageFile,
    format: Option<Format>,
    chain: &Chain,
    opts: &OpenOptions,
) -> Result<Arc<dyn DiskImage>> {
    let path = file.path.clone();
    if let Some(inode) = file.inode() {
        if chain.inodes.contains(&inode) {
            return Err(Error::Refused {
                path: chain.child().to_path_buf(),
                msg: format!("its backing chain loops back on itself: {}", chain.describe(&path)),
            });
        }
    }
    // A remote layer has no inode: the same URL twice is the loop.
    if file.is_remote() && chain.paths.contains(&path) {
        return Err(Error::Refused {
            path: chain.child().to_path_buf(),
            msg: format!("its backing chain loops back on itself: {}", chain.describe(&path)),
        });
    }
    let mut chain = chain.clone();
    chain.paths.push(path.clone());
    chain.inodes.extend(file.inode());

    let detected = detect(&file)?;
    let format = match format {
        None => detected,
        Some(Format::Raw) => Format::Raw,
        // A DMG is known by its trailer and property list: asked for one, the reader says which
        // of the two is wrong, more precisely than "does not look like one".
        Some(Format::Dmg) if detected == Format::Raw => Format::Dmg,
        // Likewise an Info.plist: the reader says what it lacks.
        Some(Format::SparseBundle) if detected == Format::Raw => Format::SparseBundle,
        Some(f) if f == detected => f,
        Some(f) => {
            return Err(Error::corrupt(
                &path,
                format!(
                    "{} was asked for, but the file does not {} a {} signature (it looks like {}); check the file or drop --format",
                    f.name(),
                    if f == Format::Dmg { "end with" } else { "start with" },
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
        Format::Vdi => Ok(Arc::new(vdi::VdiImage::open(file, &chain, opts)?)),
        Format::Qed => Ok(Arc::new(qed::QedImage::open(file, &chain, opts)?)),
        Format::Parallels => parallels::open(file, &chain, opts),
        Format::Ewf => ewf::open(file, &chain, opts),
        Format::Dmg => Ok(Arc::new(dmg::DmgImage::open(file, &chain, opts)?)),
        Format::SparseImage => Ok(Arc::new(sparseimage::SparseImage::open(file, &chain, opts)?)),
        Format::SparseBundle => Ok(Arc::new(sparseimage::bundle::BundleImage::open(file, &chain, opts)?)),
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
    if head.starts_with(qed::MAGIC) {
        return Ok(Format::Qed);
    }
    if head.starts_with(b"conectix") {
        return Ok(Format::Vhd);
    }
    if head.starts_with(parallels::MAGIC_V1) || head.starts_with(parallels::MAGIC_V2) || parallels::is_descriptor(head)
    {
        return Ok(Format::Parallels);
    }
    // EWF1 and EWF2, disk and logical: the reader refuses what it does not read, by name.
    let ewf = [ewf::SIGNATURE, ewf::LOGICAL_SIGNATURE, ewf::EWF2_SIGNATURE, ewf::EWF2_LOGICAL_SIGNATURE];
    if ewf.iter().any(|sig| head.starts_with(&sig[..])) {
        return Ok(Format::Ewf);
    }
    if head.starts_with(sparseimage::MAGIC) {
        return Ok(Format::SparseImage);
    }
    if sparseimage::bundle::is_info_plist(file, head) {
        return Ok(Format::SparseBundle);
    }
    // VDI's text line varies by writer ("<<< Oracle VM VirtualBox Disk Image >>>", qemu's own);
    // the signature after it does not.
    let vdi_sig = head.get(vdi::SIGNATURE_AT..vdi::SIGNATURE_AT + 4);
    if vdi_sig.is_some_and(|s| s == vdi::SIGNATURE.to_le_bytes()) {
        return Ok(Format::Vdi);
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
    // A DMG (UDIF) has only a trailer: "koly", version 4, 512 bytes, as the last 512 bytes (its
    // data fork usually starts with the disk's own first sector, which says nothing). Checked
    // after every head signature: a qcow2 or VMDK whose last cluster holds a .dmg file's last
    // sector is not a DMG.
    if file.size >= 2 * dmg::koly::SIZE {
        let mut tail = [0u8; dmg::koly::SIZE as usize];
        file.read_exact_at(&mut tail, file.size - dmg::koly::SIZE, "the UDIF trailer")?;
        if dmg::koly::is_dmg(file, &tail) {
            return Ok(Format::Dmg);
        }
    }
    Ok(Format::Raw)
}

fn looks_like_vmdk_descriptor(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    text.trim_start().starts_with("# Disk DescriptorFile")
        || text.lines().take(20).any(|l| l.trim_start().starts_with("createType"))
}
