//! qcow2 (versions 2 and 3) and the original qcow (version 1): both start with "QFI\xfb", and
//! open.rs hands every such file here.

mod compressed;
mod header;
mod image;
mod l2;
mod qcow1;
mod read;
mod snapshot;
pub mod spec;

use crate::formats::bytes::be32;

use super::{open_backing, Chain, DiskImage, Format, ImageInfo, OpenOptions};
use crate::error::{Error, Result};
use crate::source::file::ImageFile;
use std::path::Path;
use std::sync::Arc;

pub enum Qcow2Image {
    V2(Box<image::Qcow2>),
    V1(qcow1::Qcow1),
}

impl Qcow2Image {
    pub fn open(file: ImageFile, chain: &Chain, opts: &OpenOptions) -> Result<Qcow2Image> {
        let mut head = [0u8; 8];
        file.read_exact_at(&mut head, 0, "the qcow header")?;
        if be32(&head, 4) == 1 {
            if opts.snapshot.is_some() {
                return Err(Error::Usage(format!(
                    "{}: --snapshot: this is a qcow version 1 image, which has no internal snapshots",
                    file.path.display()
                )));
            }
            return Ok(Qcow2Image::V1(qcow1::Qcow1::open(file, chain, opts)?));
        }
        Ok(Qcow2Image::V2(Box::new(image::Qcow2::open(file, chain, opts)?)))
    }

    fn inner(&self) -> &dyn DiskImage {
        match self {
            Qcow2Image::V2(i) => i.as_ref(),
            Qcow2Image::V1(i) => i,
        }
    }
}

impl DiskImage for Qcow2Image {
    fn virtual_size(&self) -> u64 {
        self.inner().virtual_size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.inner().read_at(buf, offset)
    }
    fn map(&self, offset: u64, len: u64, out: &mut crate::formats::Extents) -> Result<bool> {
        self.inner().map(offset, len, out)
    }
    fn info(&self) -> ImageInfo {
        self.inner().info()
    }
}

/// A file name stored in an image, as a path (names are bytes; no lossy conversion).
fn path_from_bytes(name: &[u8]) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(name))
}

/// Opens the backing file `name` of the image at `child`, in the recorded `format` if any.
/// The internal snapshot chosen with --snapshot applies to the top image only.
fn open_backing_layer(
    child: &Path,
    name: &[u8],
    format: Option<&str>,
    chain: &Chain,
    opts: &OpenOptions,
) -> Result<Arc<dyn DiskImage>> {
    let format = match format {
        None => None,
        Some(f) => Some(Format::from_name(f).ok_or_else(|| {
            Error::unsupported(
                child,
                format!(
                    "the backing file {} is recorded as format '{f}', which vdmount does not read",
                    String::from_utf8_lossy(name)
                ),
            )
        })?),
    };
    let mut backing_opts = opts.clone();
    backing_opts.snapshot = None;
    open_backing(child, path_from_bytes(name), format, chain, &backing_opts)
}

/// Reads an L1 table of `count` big-endian u64 entries at `offset`, checking its size against
/// qemu's limit, the file size and the chain's memory budget before allocating.
fn read_l1_table(file: &ImageFile, offset: u64, count: u64, opts: &OpenOptions) -> Result<Vec<u64>> {
    let what = "the L1 table";
    let bytes = count.saturating_mul(8);
    crate::limits::check(&file.path, &format!("size of {what}"), bytes, crate::limits::MAX_L1_BYTES)?;
    if offset.checked_add(bytes).is_none_or(|end| end > file.size) {
        return Err(Error::corrupt(
            &file.path,
            format!(
                "{what} at offset {offset} ({bytes} bytes) lies past the end of the file ({} bytes); the image is truncated or corrupt",
                file.size
            ),
        ));
    }
    // Held as u64s beside the bytes while converting: take both from the budget.
    opts.budget.take(&file.path, what, bytes * 2)?;
    let raw = file.read_vec(offset, bytes, crate::limits::MAX_L1_BYTES, what)?;
    Ok(raw.chunks_exact(8).map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect())
}
