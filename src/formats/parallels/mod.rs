//! Parallels disks: the expanding image format (a header, a BAT, clusters stored as-is; v1
//! "WithoutFreeSpace" and v2 "WithouFreSpacExt"), and the `NAME.hdd/` bundle whose
//! DiskDescriptor.xml lists the images (expanding or plain raw) of each snapshot.
//!
//! - header.rs: the expanding image header;
//! - expanding.rs: the BAT and the expanding image as a layer;
//! - bundle.rs: DiskDescriptor.xml and the choice of snapshot chain;
//! - disk.rs: the bundle as a disk, storage by storage.

mod bundle;
mod disk;
mod expanding;
mod header;

use super::{Chain, DiskImage, OpenOptions};
use crate::error::{Error, Result};
use crate::source::file::ImageFile;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use header::{MAGIC_V1, MAGIC_V2};

/// The descriptor's name inside a bundle folder.
pub const DESCRIPTOR: &str = "DiskDescriptor.xml";

/// Whether `head`, the start of a file, is a Parallels disk descriptor.
pub fn is_descriptor(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    let text = text.trim_start_matches('\u{feff}').trim_start();
    (text.starts_with("<?xml") || text.starts_with('<')) && text.contains("<Parallels_disk_image")
}

/// For a bundle folder (`NAME.hdd/`) the descriptor inside it; any other path as it is.
pub fn descriptor_in_folder(path: &Path) -> PathBuf {
    let inside = path.join(DESCRIPTOR);
    if path.is_dir() && inside.is_file() {
        inside
    } else {
        path.to_path_buf()
    }
}

/// Opens a Parallels expanding image or bundle descriptor.
pub fn open(file: ImageFile, chain: &Chain, opts: &OpenOptions) -> Result<Arc<dyn DiskImage>> {
    let mut magic = [0u8; 16];
    let n = magic.len().min(file.size as usize);
    file.read_exact_at(&mut magic[..n], 0, "the Parallels signature")?;
    if &magic == MAGIC_V1 || &magic == MAGIC_V2 {
        if opts.snapshot.is_some() {
            return Err(Error::Usage(format!(
                "{}: --snapshot: a Parallels image file alone has no snapshots; open its .hdd bundle folder (or the DiskDescriptor.xml in it)",
                file.path.display()
            )));
        }
        return Ok(Arc::new(expanding::ExpandingImage::open(file, None, opts)?));
    }
    Ok(Arc::new(disk::BundleImage::open(file, chain, opts)?))
}
