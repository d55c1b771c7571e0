//! The one read loop and the one map loop. Every layer (each format's reader, and the overlays)
//! answers one question, `Layer::lookup(pos, max)`: where the bytes from `pos` come from, and
//! for how long. `read_layer` reads those runs (`DiskImage::read_at`) and `map_layer` describes
//! the same runs as extents for the kernel (`DiskImage::map`), so what the kernel is told to
//! read is what `read_at` reads, by construction.

use super::{clamp_to_size, len_inside, DiskImage, Extent, Extents, ImageInfo, LayerId, StoredDigests};
use crate::error::{Error, Result};
use crate::source::file::ImageFile;
use std::path::Path;
use std::sync::Arc;

/// Where a run of a layer's bytes comes from.
pub enum Source<'a> {
    /// Stored as is in `file` from `offset` (what lies past the file's end reads as zeros).
    Data { file: &'a dyn DataFile, offset: u64 },
    /// Zeros.
    Zero,
    /// Not in this layer: the layer below's bytes at the same offset (zeros if there is none).
    Below,
    /// Bytes from `skip` on of the compressed cluster stored at `at` (`len` bytes, where the
    /// format records it), decompressed by `from`. The kernel cannot inflate: never mapped.
    Compressed { from: &'a dyn Decompress, at: u64, len: u64, skip: u64 },
}

/// A file whose bytes a layer serves as they are.
pub trait DataFile: Send + Sync {
    /// Reads `buf.len()` bytes at `offset`; past the end of the file, zeros.
    fn read_data_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;
    /// Appends the extents `read_data_at` reads for `len` bytes at `offset`; false if it cannot.
    fn map_data(&self, offset: u64, len: u64, out: &mut Extents) -> bool;
}

impl DataFile for ImageFile {
    fn read_data_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        ImageFile::read_data_at(self, buf, offset)
    }
    fn map_data(&self, offset: u64, len: u64, out: &mut Extents) -> bool {
        ImageFile::map_data(self, offset, len, out)
    }
}

/// What holds compressed clusters (a qcow2 image, a streamOptimized VMDK extent).
pub trait Decompress {
    /// Fills `out` with the bytes from `skip` on of the compressed cluster at `at`.
    fn read_compressed(&self, at: u64, len: u64, skip: u64, out: &mut [u8]) -> Result<()>;
}

/// One layer of a disk, as the loops see it.
pub trait Layer {
    /// The image file, for error messages.
    fn path(&self) -> &Path;
    /// Virtual size: bytes past it read as zeros.
    fn size(&self) -> u64;
    /// Where the bytes from `pos` (below `size()`) come from, and how many (1 to `max`).
    fn lookup(&self, pos: u64, max: u64) -> Result<(Source<'_>, u64)>;
    /// The layer below (backing file, parent), if any.
    fn below(&self) -> Option<&Arc<dyn DiskImage>>;
}

/// A format whose reader is a `Layer`: its `DiskImage` (size, `read_at`, `map`) is the one
/// loop below, so a reader adds only what it alone knows.
pub trait LayerImage: Layer + Send + Sync {
    /// What `vdmount info` shows (`DiskImage::info`).
    fn describe(&self) -> ImageInfo;
    /// See `DiskImage::layer_id`.
    fn layer_id(&self) -> LayerId {
        LayerId::None
    }
    /// See `DiskImage::logical_sector_size`.
    fn logical_sector_size(&self) -> u32 {
        512
    }
    /// See `DiskImage::stored_digests`.
    fn stored_digests(&self) -> StoredDigests {
        StoredDigests::default()
    }
}

impl<T: LayerImage> DiskImage for T {
    fn virtual_size(&self) -> u64 {
        self.size()
    }
    fn logical_sector_size(&self) -> u32 {
        LayerImage::logical_sector_size(self)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        read_layer(self, buf, offset)
    }
    fn map(&self, offset: u64, len: u64, out: &mut Extents) -> Result<bool> {
        map_layer(self, offset, len, out)
    }
    fn layer_id(&self) -> LayerId {
        LayerImage::layer_id(self)
    }
    fn stored_digests(&self) -> StoredDigests {
        LayerImage::stored_digests(self)
    }
    fn info(&self) -> ImageInfo {
        self.describe()
    }
}

/// `DiskImage::read_at` for a layer.
pub fn read_layer(l: &impl Layer, buf: &mut [u8], offset: u64) -> Result<()> {
    let n = clamp_to_size(buf, offset, l.size());
    let mut done = 0usize;
    while done < n {
        let pos = offset + done as u64;
        let want = (n - done) as u64;
        let (source, len) = l.lookup(pos, want)?;
        let part = &mut buf[done..done + run_length(l, pos, len, want)? as usize];
        match source {
            Source::Data { file, offset } => file.read_data_at(part, offset)?,
            Source::Zero => part.fill(0),
            Source::Below => match l.below() {
                Some(b) => b.read_at(part, pos)?,
                None => part.fill(0),
            },
            Source::Compressed { from, at, len, skip } => from.read_compressed(at, len, skip, part)?,
        }
        done += part.len();
    }
    Ok(())
}

/// `DiskImage::map` for a layer: the runs `read_layer` reads, described instead of read.
pub fn map_layer(l: &impl Layer, offset: u64, len: u64, out: &mut Extents) -> Result<bool> {
    let n = len_inside(offset, len, l.size());
    let mut done = 0u64;
    while done < n {
        let pos = offset + done;
        let want = n - done;
        let (source, run) = l.lookup(pos, want)?;
        let run = run_length(l, pos, run, want)?;
        let described = match source {
            Source::Data { file, offset } => file.map_data(offset, run, out),
            Source::Zero => out.push(Extent::Zero { len: run }),
            Source::Below => match l.below() {
                Some(b) => b.map(pos, run, out)?,
                None => out.push(Extent::Zero { len: run }),
            },
            Source::Compressed { .. } => false,
        };
        if !described {
            return Ok(false);
        }
        done += run;
    }
    Ok(out.push(Extent::Zero { len: len - n }))
}

/// A lookup's run length, at most `want`; an empty run would never end the loop.
fn run_length(l: &impl Layer, pos: u64, len: u64, want: u64) -> Result<u64> {
    if len == 0 {
        return Err(Error::corrupt(l.path(), format!("internal error: empty run at disk offset {pos}")));
    }
    Ok(len.min(want))
}
