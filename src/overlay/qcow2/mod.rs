//! `--cow=FILE`: writes go into FILE, a qcow2 v3 overlay whose backing file is the image (with
//! its format recorded), so qemu-img info/convert/commit/check understand it and `vdmount FILE`
//! later shows the same disk. The image itself is never written.
//!
//! Layout made by `create` (64 KiB clusters, 16-bit refcounts):
//!   cluster 0           header, backing-format extension, backing file name
//!   cluster 1..         refcount table (one cluster covers 16 TiB of file)
//!   next cluster        refcount block 0 (covers the first 2 GiB of file)
//!   next clusters       L1 table
//!   then                data clusters, L2 tables and further refcount blocks, appended.
//!
//! Crash safety (a power cut at any point may leak clusters, never corrupt):
//! - Clusters are handed out from a reservation: a run at the end of the file whose refcounts
//!   are set to 1 and made durable (fdatasync) before any of them is used, so no L1/L2 entry can
//!   ever reach the disk pointing at a cluster with refcount 0. A new refcount block is written
//!   and synced before the refcount table points at it. Reserved clusters left unused are given
//!   back (refcount 0, file truncated) when the overlay is closed; after a crash they are leaks,
//!   which `qemu-img check -r leaks` reclaims.
//! - A cluster's L2 entry is written after its data. When the part of the cluster the guest did
//!   not write holds something that must survive (data copied from the image, or an old
//!   allocation being reused), the data is synced before the L2 entry is written, so a cut can
//!   never make those bytes read as zeros or as stale data.
//! - Every write reaches the file (page cache) before it is acknowledged, so a killed server
//!   loses nothing; `flush` and FUA writes fdatasync.
//!
//! Locking: reads take no lock. L1 and L2 entries are atomics; a cached L2 table is found in a
//! sharded cache (least recently used out first), and only a table missing from it is loaded
//! under `meta`, the lock every metadata change holds, so a load never races a change and reads
//! the table as the last change left it on disk. A write to clusters already allocated writes in
//! place without a lock. A write that allocates claims its guest clusters (other writes to them
//! wait), takes `meta` only to hand out clusters and again to set the L2 entries, and copies,
//! writes and syncs the data in between, so allocating writes to different clusters overlap.
//! - Discard and write-zeroes set the zero flag on whole clusters, keeping any allocation (no
//!   refcount is ever decremented while the overlay is in use); partial clusters get real zeros.

mod alloc;
mod create;
mod header;
mod open;
mod tables;
mod write;

use crate::error::{Error, Result};
use crate::formats::bytes::{be32, be64};
use crate::formats::layer::{DataFile, Layer, Source};
use crate::formats::qcow2::spec::{
    COMPRESSED, COPIED, EXT_BACKING_FORMAT, L1_RESERVED, L2_RESERVED, MAGIC, MAX_BACKING_NAME, OFFSET_MASK,
    V3_HEADER_LEN, ZERO,
};
use crate::formats::{DiskImage, Extent, Extents};
use crate::limits::{self, MAX_L1_BYTES, MAX_TABLE_BYTES, MAX_VIRTUAL_SIZE};
use crate::overlay::Overlay;
pub use header::backing_file_name;
use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use tables::{place, Place};

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// Entries per L2 table (8 bytes each).
const L2_ENTRIES: u64 = CLUSTER / 8;
/// Refcounts per refcount block (16 bits each).
const REFCOUNTS_PER_BLOCK: u64 = CLUSTER / 2;
/// Clusters reserved at a time: an eighth of the file, from 1 MiB up to 16 MiB, so a small
/// overlay leaks little after a crash and a big one syncs once per 16 MiB of growth.
const MIN_RESERVE_CLUSTERS: u64 = 16;
const MAX_RESERVE_CLUSTERS: u64 = 256;
/// L2 tables kept in memory (64 MiB, reaching 512 GiB of disk); all are written through, so
/// any can be dropped.
const MAX_CACHED_L2: usize = 1024;

/// 16-bit refcounts, as qemu-img creates them.
const REFCOUNT_ORDER: u32 = 4;

/// The file operations the overlay uses. A real `File` implements it; tests wrap one to record
/// every write and cut the log where a power failure could have.
#[doc(hidden)]
pub trait OverlayFile: Send + Sync {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    fn size(&self) -> io::Result<u64>;
    fn sync(&self) -> io::Result<()>;
    /// Its descriptor, if it is a regular file abuse.ko may read reads' extents from.
    fn regular_fd(&self) -> Option<RawFd> {
        None
    }
}

impl OverlayFile for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_exact_at(buf, offset)
    }
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_at(data, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn sync(&self) -> io::Result<()> {
        self.sync_data()
    }
    fn regular_fd(&self) -> Option<RawFd> {
        use std::os::fd::AsRawFd;
        self.metadata().ok().filter(|m| m.is_file()).map(|_| self.as_raw_fd())
    }
}

/// An L2 table as on disk; entries change only under `meta`.
type L2Table = Arc<[AtomicU64]>;

pub struct Qcow2Overlay {
    path: PathBuf,
    file: Box<dyn OverlayFile>,
    base: Arc<dyn DiskImage>,
    size: u64,
    l1_offset: u64,
    /// The L1 table as on disk; entries change only under `meta`.
    l1: Box<[AtomicU64]>,
    /// Cached L2 tables by L1 index.
    l2: quick_cache::sync::Cache<usize, L2Table>,
    meta: Mutex<Meta>,
    /// Guest clusters an allocating write is filling; other writes to them wait.
    claimed: Mutex<HashSet<u64>>,
    released: Condvar,
    /// The overlay's fd for extents (`map_read`), when it is a regular file.
    data_fd: Option<RawFd>,
}

/// The allocator's state; its lock is held by every change of metadata.
struct Meta {
    refcount_table_offset: u64,
    refcount_table: Vec<u64>,
    /// Next cluster (index) to hand out.
    next_free: u64,
    /// First cluster past the file; clusters in [next_free, file_end) are reserved.
    file_end: u64,
}

fn table_bytes(entries: &[u64]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_be_bytes()).collect()
}

impl Qcow2Overlay {
    /// The overlay over `base` in `file`, as `create` made it or `open` found it.
    fn assemble(
        path: &Path,
        file: Box<dyn OverlayFile>,
        base: Arc<dyn DiskImage>,
        size: u64,
        l1_offset: u64,
        l1: Vec<u64>,
        meta: Meta,
    ) -> Qcow2Overlay {
        let data_fd = file.regular_fd();
        Qcow2Overlay {
            path: path.to_path_buf(),
            file,
            base,
            size,
            l1_offset,
            l1: l1.into_iter().map(AtomicU64::new).collect(),
            l2: quick_cache::sync::Cache::new(MAX_CACHED_L2),
            meta: Mutex::new(meta),
            claimed: Mutex::new(HashSet::new()),
            released: Condvar::new(),
            data_fd,
        }
    }

    /// Gives back the reserved clusters no write used and syncs, leaving a file `qemu-img check`
    /// finds clean. Dropping the overlay does this too (ignoring errors).
    pub fn close(&self) -> Result<()> {
        let mut m = self.meta();
        let (start, end) = (m.next_free, m.file_end);
        if start < end {
            // Refcounts back to 0 (durable) before the file shrinks: never a refcount past EOF.
            let mut c = start;
            while c < end {
                let block_end = ((c / REFCOUNTS_PER_BLOCK + 1) * REFCOUNTS_PER_BLOCK).min(end);
                let block = m.refcount_table.get((c / REFCOUNTS_PER_BLOCK) as usize).copied().unwrap_or(0);
                if block != 0 {
                    let zeros = vec![0u8; ((block_end - c) * 2) as usize];
                    self.pwrite(&zeros, block + (c % REFCOUNTS_PER_BLOCK) * 2, "a refcount block")?;
                }
                c = block_end;
            }
            self.sync()?;
            self.file.set_len(start * CLUSTER).map_err(|e| self.io_err("truncating", e))?;
            m.file_end = start;
        }
        self.sync()
    }

    fn meta(&self) -> MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn io_err(&self, what: &str, e: io::Error) -> Error {
        Error::io(&self.path, format!("{what} the qcow2 overlay"), e)
    }

    fn pwrite(&self, data: &[u8], offset: u64, what: &str) -> Result<()> {
        self.file.write_at(data, offset).map_err(|e| self.io_err(&format!("writing {what} at offset {offset} of"), e))
    }

    fn pread(&self, buf: &mut [u8], offset: u64, what: &str) -> Result<()> {
        self.file.read_at(buf, offset).map_err(|e| self.io_err(&format!("reading {what} at offset {offset} of"), e))
    }

    fn sync(&self) -> Result<()> {
        self.file.sync().map_err(|e| self.io_err("syncing", e))
    }
}

impl Drop for Qcow2Overlay {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// The overlay's clusters, zero clusters, and the image below where the overlay has nothing.
impl Layer for Qcow2Overlay {
    fn path(&self) -> &Path {
        &self.path
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn lookup(&self, pos: u64, max: u64) -> Result<(Source<'_>, u64)> {
        let (place, len) = self.run_at(pos, max)?;
        let source = match place {
            Place::Zero => Source::Zero,
            Place::Data(host) => Source::Data { file: self, offset: host + pos % CLUSTER },
            Place::Backing => Source::Below,
        };
        Ok((source, len))
    }
    fn below(&self) -> Option<&Arc<dyn DiskImage>> {
        Some(&self.base)
    }
}

/// Data clusters are read from the overlay file (regular files only are described).
impl DataFile for Qcow2Overlay {
    fn read_data_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.pread(buf, offset, "data")
    }
    fn map_data(&self, offset: u64, len: u64, out: &mut Extents) -> bool {
        self.data_fd.is_some_and(|fd| out.push(Extent::Data { fd, offset, len }))
    }
}

impl Overlay for Qcow2Overlay {
    fn close(&self) -> Result<()> {
        Qcow2Overlay::close(self)
    }

    fn write(&self, data: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.write_range(data, offset)?;
        if fua {
            self.sync()?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        // Every write reached the file before it was acknowledged: syncing it is enough.
        self.sync()
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.write_zeroes(offset, len)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        let Some(end) = offset.checked_add(len).filter(|&end| end <= self.size) else {
            return Err(Error::from_errno(libc::EINVAL));
        };
        // Whole clusters get the zero flag; a last cluster cut by the end of the disk counts
        // as whole. The partial clusters at either end get real zeros.
        let first_whole = offset.next_multiple_of(CLUSTER);
        let end_whole = if end == self.size { end.next_multiple_of(CLUSTER) } else { end / CLUSTER * CLUSTER };
        let zeros = vec![0u8; CLUSTER as usize];
        let write_zeros = |from: u64, to: u64| -> Result<()> {
            let mut pos = from;
            while pos < to {
                let n = (CLUSTER - pos % CLUSTER).min(to - pos);
                self.write_range(&zeros[..n as usize], pos)?;
                pos += n;
            }
            Ok(())
        };
        if first_whole >= end_whole {
            return write_zeros(offset, end);
        }
        write_zeros(offset, first_whole)?;
        self.zero_clusters(first_whole / CLUSTER, end_whole / CLUSTER)?;
        write_zeros(end_whole, end)
    }
}
