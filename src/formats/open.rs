//! The one place formats are recognised and opened: magic detection, `--format`, and each
//! format's reader. The chain's rules (depth, loops, confinement) are in chain.rs.

use super::{dmg, ewf, parallels, qcow2, qed, raw, sparseimage, vdi, vhd, vhdx, vmdk};
use super::{Chain, DiskImage, Format, OpenOptions};
use crate::error::{Error, Result};
use crate::source::file::ImageFile;
use crate::source::Confinement;
use std::path::Path;
use std::sync::Arc;

/// Opens the image at `path` (the top of its chain); a Parallels bundle folder (`NAME.hdd/`)
/// stands for the descriptor in it.
/// A sparse bundle folder (`NAME.sparsebundle/`) stands for its Info.plist.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Arc<dyn DiskImage>> {
    let path = &parallels::descriptor_in_folder(path);
    let path = &sparseimage::bundle::info_in_folder(path);
    let file = ImageFile::open(path)?;
    let confine = Confinement::new(path, &opts.allow_dirs, opts.allow_any_path)?;
    open_layer(file, opts.format, &Chain::new(confine, open_layer), opts)
}

/// Detects `file`'s format (or takes `format`, checked) and opens it as the next layer of
/// `chain` with its reader.
pub fn open_layer(
    file: ImageFile,
    format: Option<Format>,
    chain: &Chain,
    opts: &OpenOptions,
) -> Result<Arc<dyn DiskImage>> {
    let chain = chain.enter(&file)?;
    let path = file.path.clone();
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
