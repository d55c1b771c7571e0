//! What qcow2 and qcow v1 share: a reader maps guest offsets to extents (runs of guest bytes
//! stored one way), which `source_at` hands to the one read loop (`formats::layer`), and the
//! reading of compressed clusters.

use super::super::layer::{Decompress, Layer, LayerImage, Source};
use crate::error::{Error, Result};
use crate::formats::{DiskImage, ImageInfo};
use crate::source::file::ImageFile;
use std::path::Path;
use std::sync::Arc;

/// Where a run of guest bytes comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    /// Stored as-is at `host` in the data file (the image itself, or its external data file).
    Data { host: u64 },
    /// Reads as zeros.
    Zero,
    /// Not allocated in this layer: read from the backing file (zeros if there is none).
    Backing,
    /// Bytes from `skip` on of the compressed cluster stored as `len` bytes at `host`.
    Compressed { host: u64, len: u64, skip: u64 },
}

impl Extent {
    /// Whether `next`, which starts `len` guest bytes after `self`, continues it, so both can
    /// be served by one read.
    pub fn continues_with(self, next: Extent, len: u64) -> bool {
        match (self, next) {
            (Extent::Data { host }, Extent::Data { host: h }) => host.checked_add(len) == Some(h),
            (Extent::Zero, Extent::Zero) | (Extent::Backing, Extent::Backing) => true,
            _ => false,
        }
    }
}

/// What a qcow reader (version 1 or 2) provides; `Layer`, `LayerImage` (so `DiskImage`) and
/// `Decompress` follow.
pub trait ClusterMap: Send + Sync {
    /// The image file, the virtual size and the backing file, if any.
    fn basics(&self) -> (&ImageFile, u64, Option<&Arc<dyn DiskImage>>);
    /// What `vdmount info` shows (`DiskImage::info`).
    fn describe(&self) -> ImageInfo;
    /// The extent holding guest byte `guest`, and how many guest bytes from there (at most
    /// `max_len`, at least 1) it covers.
    fn cluster_at(&self, guest: u64, max_len: u64) -> Result<(Extent, u64)>;
    /// The file `Extent::Data` offsets refer to.
    fn data_file(&self) -> &ImageFile;
    /// The decompressed cluster stored as `len` bytes at `host`, or at least its first `need`
    /// bytes (through the shared cache).
    fn compressed_cluster(&self, host: u64, len: u64, need: usize) -> Result<Arc<[u8]>>;
    /// Decompresses the cluster stored as `len` bytes at `host` straight into `out` if `out` is
    /// exactly one cluster and the reader can, without filling the cache with clusters a
    /// sequential reader will not read again; false if it did not.
    fn whole_compressed_cluster(&self, _host: u64, _len: u64, _out: &mut [u8]) -> Result<bool> {
        Ok(false)
    }
}

/// A qcow run in the terms of the one read loop (`formats::layer`).
fn source_at<M: ClusterMap>(m: &M, guest: u64, max_len: u64) -> Result<(Source<'_>, u64)> {
    let (extent, len) = m.cluster_at(guest, max_len)?;
    let source = match extent {
        Extent::Data { host } => Source::Data { file: m.data_file(), offset: host },
        Extent::Zero => Source::Zero,
        Extent::Backing => Source::Below,
        Extent::Compressed { host, len, skip } => Source::Compressed { from: m, at: host, len, skip },
    };
    Ok((source, len))
}

impl<M: ClusterMap> Layer for M {
    fn path(&self) -> &Path {
        &self.basics().0.path
    }
    fn size(&self) -> u64 {
        self.basics().1
    }
    fn lookup(&self, pos: u64, max: u64) -> Result<(Source<'_>, u64)> {
        source_at(self, pos, max)
    }
    fn below(&self) -> Option<&Arc<dyn DiskImage>> {
        self.basics().2
    }
}

impl<M: ClusterMap> LayerImage for M {
    fn describe(&self) -> ImageInfo {
        ClusterMap::describe(self)
    }
}

impl<M: ClusterMap> Decompress for M {
    fn read_compressed(&self, host: u64, len: u64, skip: u64, out: &mut [u8]) -> Result<()> {
        if skip == 0 && self.whole_compressed_cluster(host, len, out)? {
            return Ok(());
        }
        let cluster = self.compressed_cluster(host, len, skip as usize + out.len())?;
        let src =
            usize::try_from(skip).ok().and_then(|s| cluster.get(s..s.checked_add(out.len())?)).ok_or_else(|| {
                Error::corrupt(self.path(), format!("compressed cluster at offset {host} is shorter than a cluster"))
            })?;
        out.copy_from_slice(src);
        Ok(())
    }
}
