//! The read loop shared by qcow2 and qcow v1: a reader maps guest offsets to extents (runs of
//! guest bytes stored one way), and `read_mapped` fills the caller's buffer run by run.

use super::super::image_file::ImageFile;
use super::super::{clamp_to_size, len_inside, DiskImage, Extents};
use crate::error::{Error, Result};
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

/// What a reader provides to `read_mapped`.
pub trait ClusterMap {
    fn path(&self) -> &std::path::Path;
    /// The extent holding guest byte `guest`, and how many guest bytes from there (at most
    /// `max_len`, at least 1) it covers.
    fn lookup(&self, guest: u64, max_len: u64) -> Result<(Extent, u64)>;
    /// The file `Extent::Data` offsets refer to.
    fn data_file(&self) -> &ImageFile;
    fn backing(&self) -> Option<&Arc<dyn DiskImage>>;
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

/// Implements `DiskImage::read_at` for a reader of virtual size `size`.
pub fn read_mapped(m: &impl ClusterMap, size: u64, buf: &mut [u8], offset: u64) -> Result<()> {
    let n = clamp_to_size(buf, offset, size);
    let mut done = 0usize;
    while done < n {
        let guest = offset + done as u64;
        let want = (n - done) as u64;
        let (extent, len) = m.lookup(guest, want)?;
        if len == 0 {
            return Err(Error::corrupt(m.path(), format!("internal error: empty mapping at guest offset {guest}")));
        }
        let len = len.min(want) as usize;
        let part = &mut buf[done..done + len];
        match extent {
            Extent::Data { host } => m.data_file().read_data_at(part, host)?,
            Extent::Zero => part.fill(0),
            Extent::Backing => match m.backing() {
                Some(b) => b.read_at(part, guest)?,
                None => part.fill(0),
            },
            Extent::Compressed { host, len: clen, skip } => {
                if skip == 0 && m.whole_compressed_cluster(host, clen, part)? {
                    done += len;
                    continue;
                }
                let cluster = m.compressed_cluster(host, clen, skip as usize + len)?;
                let src = usize::try_from(skip)
                    .ok()
                    .and_then(|s| cluster.get(s..s.checked_add(len)?))
                    .ok_or_else(|| {
                        Error::corrupt(m.path(), format!("compressed cluster at offset {host} is shorter than a cluster"))
                    })?;
                part.copy_from_slice(src);
            }
        }
        done += len;
    }
    Ok(())
}

/// Implements `DiskImage::map` for a reader of virtual size `size`: as `read_mapped`, but
/// describing each run instead of reading it. Compressed clusters cannot be described.
pub fn map_mapped(m: &impl ClusterMap, size: u64, offset: u64, len: u64, out: &mut Extents) -> Result<bool> {
    let n = len_inside(offset, len, size);
    let mut done = 0u64;
    while done < n {
        let guest = offset + done;
        let want = n - done;
        let (extent, run) = m.lookup(guest, want)?;
        if run == 0 {
            return Err(Error::corrupt(m.path(), format!("internal error: empty mapping at guest offset {guest}")));
        }
        let run = run.min(want);
        let described = match extent {
            Extent::Data { host } => m.data_file().map_data(host, run, out),
            Extent::Zero => out.push(super::super::Extent::Zero { len: run }),
            Extent::Backing => match m.backing() {
                Some(b) => b.map(guest, run, out)?,
                None => out.push(super::super::Extent::Zero { len: run }),
            },
            Extent::Compressed { .. } => false,
        };
        if !described {
            return Ok(false);
        }
        done += run;
    }
    Ok(out.push(super::super::Extent::Zero { len: len - n }))
}
