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
//! - Discard and write-zeroes set the zero flag on whole clusters, keeping any allocation (no
//!   refcount is ever decremented while the overlay is in use); partial clusters get real zeros.

use crate::abuse::backend::{errno, Backend};
use crate::error::{Error, Result};
use crate::formats::{clamp_to_size, len_inside, DiskImage, Extent, Extents};
use crate::limits::{self, MAX_TABLE_BYTES, MAX_VIRTUAL_SIZE};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

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
/// L2 tables kept in memory (64 MiB); all are written through, so any can be dropped.
const MAX_CACHED_L2: usize = 1024;
/// qemu's limit on the L1 table (QCOW_MAX_L1_SIZE).
const MAX_L1_BYTES: u64 = 32 << 20;
/// qemu refuses longer backing file names.
const MAX_BACKING_NAME: usize = 1023;

const MAGIC: &[u8; 4] = b"QFI\xfb";
const HEADER_LENGTH: u32 = 112;
const EXT_BACKING_FORMAT: u32 = 0xE279_2ACA;
const REFCOUNT_ORDER: u32 = 4;

/// Host offset bits of L1 and standard L2 entries.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Refcount is exactly 1 (qemu-img check insists on it being set then).
const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;
/// L2: the cluster reads as zeros.
const ZERO: u64 = 1;
const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;
const L2_RESERVED: u64 = 0x3f00_0000_0000_01fe;

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

pub struct Qcow2Overlay {
    path: PathBuf,
    file: Box<dyn OverlayFile>,
    base: Arc<dyn DiskImage>,
    size: u64,
    meta: Mutex<Meta>,
    /// The overlay's fd for extents (`map_read`), when it is a regular file.
    data_fd: Option<RawFd>,
}

/// Everything the allocator and the tables hold; one lock, held across every allocating write.
struct Meta {
    l1_offset: u64,
    l1: Vec<u64>,
    /// L2 tables by L1 index, as on disk.
    l2: HashMap<usize, Box<[u64]>>,
    refcount_table_offset: u64,
    refcount_table: Vec<u64>,
    /// Next cluster (index) to hand out.
    next_free: u64,
    /// First cluster past the file; clusters in [next_free, file_end) are reserved.
    file_end: u64,
}

/// Where a guest cluster's bytes come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Backing,
    Zero,
    Data(u64),
}

fn place(entry: u64) -> Place {
    if entry & ZERO != 0 {
        Place::Zero
    } else if entry & OFFSET_MASK != 0 {
        Place::Data(entry & OFFSET_MASK)
    } else {
        Place::Backing
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

fn table_bytes(entries: &[u64]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_be_bytes()).collect()
}

/// qemu's driver name for a format name as vdmount or qemu spell it.
fn qemu_format_name(path: &Path, format: &str) -> Result<&'static str> {
    Ok(match format.to_ascii_lowercase().as_str() {
        "raw" => "raw",
        "qcow2" => "qcow2",
        "qcow" => "qcow",
        "vmdk" => "vmdk",
        "vhd" | "vpc" => "vpc",
        "vhdx" => "vhdx",
        other => {
            return Err(Error::unsupported(
                path,
                format!("cannot record backing format {other:?} in a qcow2 overlay: qemu knows no such format"),
            ))
        }
    })
}

/// The backing file name a qcow2 overlay records, read from the already opened `file` (so it
/// is the very file we will write to, not whatever its name points at by now). A relative name
/// is resolved against the overlay's folder, as qemu does.
pub fn backing_file_name(file: &dyn OverlayFile, path: &Path) -> Result<Option<PathBuf>> {
    let mut h = [0u8; 20];
    file.read_at(&mut h, 0).map_err(|e| Error::io(path, "cannot read the qcow2 overlay's header", e))?;
    if &h[0..4] != MAGIC {
        return Err(Error::unsupported(path, "is not a qcow2 file; give a qcow2 overlay, or a new FILE to create one"));
    }
    let (offset, len) = (be64(&h, 8), be32(&h, 16) as usize);
    if offset == 0 || len == 0 {
        return Ok(None);
    }
    if len > MAX_BACKING_NAME {
        return Err(Error::corrupt(path, format!("qcow2 overlay: backing file name of {len} bytes (at most {MAX_BACKING_NAME})")));
    }
    let mut name = vec![0u8; len];
    file.read_at(&mut name, offset).map_err(|e| Error::io(path, "cannot read the qcow2 overlay's backing file name", e))?;
    let name = PathBuf::from(std::ffi::OsStr::from_bytes(&name));
    Ok(Some(match path.parent() {
        Some(dir) if name.is_relative() => dir.join(name),
        _ => name,
    }))
}

impl Qcow2Overlay {
    /// Creates the overlay FILE at `path` over `base` (the image at `base_path`, of format
    /// `base_format`). Refuses if `path` exists.
    ///
    /// The backing file name stored is the absolute canonical path of the base: the overlay is
    /// often made in another folder than the evidence (a scratch disk), and a relative name
    /// would break as soon as either moves; `qemu-img rebase -u -b NEW` changes it if needed.
    pub fn create(path: &Path, base: Arc<dyn DiskImage>, base_path: &Path, base_format: &str) -> Result<Qcow2Overlay> {
        // 0600 and never through a symlink: the overlay holds what the guest wrote.
        let file = crate::safe_open::create_private(path, "qcow2 overlay")?;
        let kept = file.try_clone().map_err(|e| Error::io(path, "cannot create the qcow2 overlay", e))?;
        match Self::create_on(Box::new(file), path, base, base_path, base_format) {
            Ok(overlay) => {
                // The new name must survive a power cut too.
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
                Ok(overlay)
            }
            Err(e) => {
                crate::safe_open::remove_if_same(path, &kept);
                Err(e)
            }
        }
    }

    /// `create` on an already opened, empty file (tests pass a recording wrapper).
    #[doc(hidden)]
    pub fn create_on(
        file: Box<dyn OverlayFile>,
        path: &Path,
        base: Arc<dyn DiskImage>,
        base_path: &Path,
        base_format: &str,
    ) -> Result<Qcow2Overlay> {
        let format = qemu_format_name(path, base_format)?;
        let canonical = std::fs::canonicalize(base_path)
            .map_err(|e| Error::io(base_path, "cannot resolve the image's full path for the overlay's backing file name", e))?;
        let name = canonical.as_os_str().as_bytes().to_vec();
        if name.len() > MAX_BACKING_NAME {
            return Err(Error::unsupported(
                path,
                format!(
                    "the image's full path is {} bytes long, more than the {MAX_BACKING_NAME} a qcow2 backing file name may hold; move the image to a shorter path",
                    name.len()
                ),
            ));
        }
        let size = base.virtual_size().checked_add(511).map(|s| s & !511).unwrap_or(u64::MAX);
        limits::check(path, "virtual size of the overlay", size, MAX_VIRTUAL_SIZE)?;
        if size == 0 {
            return Err(Error::unsupported(path, "the image is empty (0 bytes): there is nothing to write to"));
        }
        let l1_size = size.div_ceil(CLUSTER * L2_ENTRIES);
        limits::check(path, "L1 table size of the overlay", l1_size * 8, MAX_L1_BYTES)?;
        let l1_clusters = (l1_size * 8).div_ceil(CLUSTER);
        // Room for a file somewhat larger than the disk (metadata, leaks), at least 16 TiB.
        let max_file = size.saturating_add(size / 64).saturating_add(1 << 30);
        let refcount_entries = max_file.div_ceil(REFCOUNTS_PER_BLOCK * CLUSTER);
        let refcount_table_clusters = (refcount_entries * 8).div_ceil(CLUSTER).max(1);
        let refcount_table_offset = CLUSTER;
        let block0 = 1 + refcount_table_clusters;
        let l1_cluster = block0 + 1;
        let metadata_end = l1_cluster + l1_clusters;
        // Refcount block 0 must cover all the initial metadata (always true below ~1 EiB disks).
        limits::check(path, "clusters of initial overlay metadata", metadata_end, REFCOUNTS_PER_BLOCK)?;

        let io = |e| Error::io(path, "cannot write the new qcow2 overlay", e);
        file.set_len(metadata_end * CLUSTER).map_err(io)?;
        file.write_at(&header_cluster(size, l1_size as u32, l1_cluster * CLUSTER, refcount_table_clusters as u32, format, &name), 0)
            .map_err(io)?;
        file.write_at(&(block0 * CLUSTER).to_be_bytes(), refcount_table_offset).map_err(io)?;
        let refcounts: Vec<u8> = (0..metadata_end).flat_map(|_| 1u16.to_be_bytes()).collect();
        file.write_at(&refcounts, block0 * CLUSTER).map_err(io)?;
        file.sync().map_err(io)?;

        let mut refcount_table = vec![0u64; (refcount_table_clusters * CLUSTER / 8) as usize];
        refcount_table[0] = block0 * CLUSTER;
        let meta = Meta {
            l1_offset: l1_cluster * CLUSTER,
            l1: vec![0; l1_size as usize],
            l2: HashMap::new(),
            refcount_table_offset,
            refcount_table,
            next_free: metadata_end,
            file_end: metadata_end,
        };
        let data_fd = file.regular_fd();
        Ok(Qcow2Overlay { path: path.to_path_buf(), file, base, size, meta: Mutex::new(meta), data_fd })
    }

    /// Reopens an overlay made by `create` (a second session, or after a crash) over `base`.
    /// The file must be a regular file of the user running vdmount, not a symlink.
    pub fn open(path: &Path, base: Arc<dyn DiskImage>) -> Result<Qcow2Overlay> {
        let file = crate::safe_open::open_own_file(path, "qcow2 overlay")?.ok_or_else(|| {
            Error::io(path, "cannot open the qcow2 overlay", io::Error::from_raw_os_error(libc::ENOENT))
        })?;
        Self::open_on(Box::new(file), path, base)
    }

    /// `open` on an already opened file (tests pass a recording wrapper).
    #[doc(hidden)]
    pub fn open_on(file: Box<dyn OverlayFile>, path: &Path, base: Arc<dyn DiskImage>) -> Result<Qcow2Overlay> {
        let corrupt = |msg: String| Error::corrupt(path, format!("qcow2 overlay: {msg}"));
        let refuse = |msg: &str| {
            Error::unsupported(
                path,
                format!("{msg}; vdmount appends only to overlays it made itself (start a new overlay with --cow=NEWFILE)"),
            )
        };
        let file_len = file.size().map_err(|e| Error::io(path, "cannot stat the qcow2 overlay", e))?;
        let mut h = [0u8; HEADER_LENGTH as usize];
        if file_len < h.len() as u64 {
            return Err(corrupt(format!("the file is {file_len} bytes, too short for a qcow2 v3 header")));
        }
        file.read_at(&mut h, 0).map_err(|e| Error::io(path, "cannot read the qcow2 overlay's header", e))?;
        if &h[0..4] != MAGIC {
            return Err(refuse("this is not a qcow2 file"));
        }
        if be32(&h, 4) != 3 {
            return Err(refuse(&format!("qcow2 version {} (only version 3 is written)", be32(&h, 4))));
        }
        if be32(&h, 20) != CLUSTER_BITS {
            return Err(refuse(&format!("cluster size 2^{} (only 64 KiB clusters are written)", be32(&h, 20))));
        }
        if be32(&h, 32) != 0 {
            return Err(refuse("the overlay is encrypted"));
        }
        if be32(&h, 60) != 0 {
            return Err(refuse("the overlay has internal snapshots"));
        }
        let incompatible = be64(&h, 72);
        if incompatible & 2 != 0 {
            return Err(corrupt(
                "qemu marked it corrupt (incompatible bit 1); repair it with `qemu-img check -r all` first".into(),
            ));
        }
        if incompatible != 0 {
            return Err(refuse(&format!(
                "the overlay uses incompatible features {incompatible:#x} (dirty lazy refcounts, external data file, compression type or extended L2)"
            )));
        }
        if be32(&h, 96) != REFCOUNT_ORDER {
            return Err(refuse(&format!("refcount order {} (only 16-bit refcounts are written)", be32(&h, 96))));
        }
        if be32(&h, 100) < 104 {
            return Err(corrupt(format!("header length {} is shorter than the 104 bytes of version 3", be32(&h, 100))));
        }
        let size = be64(&h, 24);
        limits::check(path, "qcow2 overlay virtual size", size, MAX_VIRTUAL_SIZE)?;
        let l1_size = u64::from(be32(&h, 36));
        let l1_offset = be64(&h, 40);
        if l1_size < size.div_ceil(CLUSTER * L2_ENTRIES) {
            return Err(corrupt(format!("its L1 table ({l1_size} entries) does not cover its virtual size {size}")));
        }
        limits::check(path, "qcow2 overlay L1 table size", l1_size * 8, MAX_L1_BYTES)?;
        let refcount_table_offset = be64(&h, 48);
        let refcount_table_bytes = u64::from(be32(&h, 56)) * CLUSTER;
        limits::check(path, "qcow2 overlay refcount table size", refcount_table_bytes, MAX_TABLE_BYTES)?;
        for (what, offset, len) in [("L1 table", l1_offset, l1_size * 8), ("refcount table", refcount_table_offset, refcount_table_bytes)] {
            if !offset.is_multiple_of(CLUSTER) || offset == 0 || offset.checked_add(len).is_none_or(|end| end > file_len) {
                return Err(corrupt(format!("its {what} at offset {offset} ({len} bytes) is misaligned or past the end of the file ({file_len} bytes)")));
            }
        }
        let file_end = file_len.div_ceil(CLUSTER);
        let read_table = |offset: u64, len: u64, what: &str| -> Result<Vec<u64>> {
            let mut raw = vec![0u8; len as usize];
            file.read_at(&mut raw, offset).map_err(|e| Error::io(path, format!("cannot read the overlay's {what}"), e))?;
            Ok(raw.chunks_exact(8).map(|c| be64(c, 0)).collect())
        };
        let l1 = read_table(l1_offset, l1_size * 8, "L1 table")?;
        for (i, &e) in l1.iter().enumerate() {
            let offset = e & OFFSET_MASK;
            if e & L1_RESERVED != 0 || !offset.is_multiple_of(CLUSTER) || offset / CLUSTER >= file_end {
                return Err(corrupt(format!("L1 entry {i} ({e:#x}) is malformed or points past the end of the file")));
            }
            if offset != 0 && e & COPIED == 0 {
                return Err(refuse(&format!("L1 entry {i} points at a shared L2 table")));
            }
        }
        let refcount_table = read_table(refcount_table_offset, refcount_table_bytes, "refcount table")?;
        for (i, &e) in refcount_table.iter().enumerate() {
            if !e.is_multiple_of(CLUSTER) || e / CLUSTER >= file_end {
                return Err(corrupt(format!("refcount table entry {i} ({e:#x}) is misaligned or points past the end of the file")));
            }
        }
        if refcount_table.first().is_none_or(|&e| e == 0) {
            return Err(corrupt("it has no refcount block for its first clusters".into()));
        }
        if be64(&h, 88) != 0 {
            // Autoclear features (persistent bitmaps) are invalid once someone who does not
            // update them writes: the specification says to clear them.
            file.write_at(&[0u8; 8], 88).and_then(|_| file.sync()).map_err(|e| Error::io(path, "cannot update the overlay's header", e))?;
        }
        let meta = Meta {
            l1_offset,
            l1,
            l2: HashMap::new(),
            refcount_table_offset,
            refcount_table,
            next_free: file_end,
            file_end,
        };
        let data_fd = file.regular_fd();
        Ok(Qcow2Overlay { path: path.to_path_buf(), file, base, size, meta: Mutex::new(meta), data_fd })
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

    /// Where the guest bytes from `guest` come from, and how many of them (at most `max` and
    /// one L2 table's reach) come from there alike: `read` and `map_read` both walk with this.
    fn run_at(&self, guest: u64, max: u64) -> Result<(Place, u64)> {
        let mut m = self.meta();
        let first = place(self.entry(&mut m, guest / CLUSTER)?);
        let mut len = (CLUSTER - guest % CLUSTER).min(max);
        while len < max && len < CLUSTER * L2_ENTRIES {
            let next = guest + len;
            let following = place(self.entry(&mut m, next / CLUSTER)?);
            // Data continues only where the clusters are contiguous in the file.
            let continues = match (first, following) {
                (Place::Data(h0), Place::Data(h)) => h == h0 + (next / CLUSTER - guest / CLUSTER) * CLUSTER,
                (Place::Data(_), _) | (_, Place::Data(_)) => false,
                (a, b) => a == b,
            };
            if !continues {
                break;
            }
            len += CLUSTER.min(max - len);
        }
        Ok((first, len))
    }

    fn pread(&self, buf: &mut [u8], offset: u64, what: &str) -> Result<()> {
        self.file.read_at(buf, offset).map_err(|e| self.io_err(&format!("reading {what} at offset {offset} of"), e))
    }

    fn sync(&self) -> Result<()> {
        self.file.sync().map_err(|e| self.io_err("syncing", e))
    }

    /// Loads L2 table `l1i` into the cache; false if it does not exist yet.
    fn load_table(&self, m: &mut Meta, l1i: usize) -> Result<bool> {
        if m.l2.contains_key(&l1i) {
            return Ok(true);
        }
        let offset = m.l1.get(l1i).copied().unwrap_or(0) & OFFSET_MASK;
        if offset == 0 {
            return Ok(false);
        }
        let mut raw = vec![0u8; CLUSTER as usize];
        self.pread(&mut raw, offset, "an L2 table")?;
        let table: Box<[u64]> = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
        for (i, &e) in table.iter().enumerate() {
            let host = e & OFFSET_MASK;
            let bad = if e & COMPRESSED != 0 {
                Some("is a compressed cluster, which vdmount does not write to")
            } else if e & L2_RESERVED != 0 || !host.is_multiple_of(CLUSTER) || host / CLUSTER >= m.file_end {
                Some("is malformed or points past the end of the file")
            } else if host != 0 && e & COPIED == 0 {
                Some("points at a shared cluster, which vdmount does not write to")
            } else {
                None
            };
            if let Some(why) = bad {
                return Err(Error::unsupported(
                    &self.path,
                    format!("qcow2 overlay: L2 entry {i} ({e:#x}) of the table at offset {offset} {why}; start a new overlay"),
                ));
            }
        }
        self.cache_table(m, l1i, table);
        Ok(true)
    }

    fn cache_table(&self, m: &mut Meta, l1i: usize, table: Box<[u64]>) {
        if m.l2.len() >= MAX_CACHED_L2 {
            if let Some(&victim) = m.l2.keys().find(|&&k| k != l1i) {
                m.l2.remove(&victim);
            }
        }
        m.l2.insert(l1i, table);
    }

    /// The L2 entry of guest cluster `cluster` (0 where no L2 table exists).
    fn entry(&self, m: &mut Meta, cluster: u64) -> Result<u64> {
        let l1i = (cluster / L2_ENTRIES) as usize;
        if !self.load_table(m, l1i)? {
            return Ok(0);
        }
        Ok(m.l2.get(&l1i).and_then(|t| t.get((cluster % L2_ENTRIES) as usize)).copied().unwrap_or(0))
    }

    /// Writes L2 entries `(guest cluster, entry)`, sorted by cluster, making L2 tables as needed.
    /// The callers have already made whatever the entries point at safe to point at.
    fn set_entries(&self, m: &mut Meta, updates: &[(u64, u64)]) -> Result<()> {
        let mut i = 0;
        while i < updates.len() {
            let l1i = (updates[i].0 / L2_ENTRIES) as usize;
            let group_len = updates[i..].iter().take_while(|(c, _)| (c / L2_ENTRIES) as usize == l1i).count();
            let group = &updates[i..i + group_len];
            i += group_len;
            if l1i >= m.l1.len() {
                return Err(errno(libc::EINVAL));
            }
            let new_table = !self.load_table(m, l1i)?;
            let table_offset = if new_table {
                // A fresh cluster reads as zeros: an empty table until the entries land.
                let offset = self.alloc_cluster(m)?;
                self.cache_table(m, l1i, vec![0u64; L2_ENTRIES as usize].into_boxed_slice());
                offset
            } else {
                m.l1[l1i] & OFFSET_MASK
            };
            let Some(table) = m.l2.get_mut(&l1i) else { return Err(errno(libc::EIO)) };
            for &(c, e) in group {
                table[(c % L2_ENTRIES) as usize] = e;
            }
            let lo = group[0].0 % L2_ENTRIES;
            let hi = group[group_len - 1].0 % L2_ENTRIES;
            let bytes = table_bytes(&table[lo as usize..=hi as usize]);
            let mut result = self.pwrite(&bytes, table_offset + lo * 8, "an L2 table");
            if result.is_ok() && new_table {
                // The L1 entry goes after the table's entries: a cut in between leaves an
                // unreferenced (leaked) cluster, never a table with stale contents.
                result = self.pwrite(&(table_offset | COPIED).to_be_bytes(), m.l1_offset + l1i as u64 * 8, "the L1 table");
                if result.is_ok() {
                    m.l1[l1i] = table_offset | COPIED;
                }
            }
            if result.is_err() {
                // Forget what may not match the file; it is reloaded from there.
                m.l2.remove(&l1i);
                return result;
            }
        }
        Ok(())
    }

    /// A cluster whose refcount is already durably 1 and which reads as zeros (host offset).
    fn alloc_cluster(&self, m: &mut Meta) -> Result<u64> {
        while m.next_free >= m.file_end {
            self.reserve(m)?;
        }
        let cluster = m.next_free;
        m.next_free += 1;
        Ok(cluster * CLUSTER)
    }

    /// Extends the file by a run of clusters with refcount 1, synced before any is used. A run
    /// never crosses into the next refcount block's range; a missing block is made at the start
    /// of its range (covering itself).
    fn reserve(&self, m: &mut Meta) -> Result<()> {
        let start = m.file_end;
        let block_index = start / REFCOUNTS_PER_BLOCK;
        let Some(&block) = m.refcount_table.get(block_index as usize) else {
            return Err(Error::io(
                &self.path,
                "the qcow2 overlay's refcount table is full (the file would pass its size limit)",
                io::Error::from_raw_os_error(libc::ENOSPC),
            ));
        };
        let range_end = (block_index + 1) * REFCOUNTS_PER_BLOCK;
        let count = (start / 8).clamp(MIN_RESERVE_CLUSTERS, MAX_RESERVE_CLUSTERS);
        if block == 0 {
            let end = (start + 1 + count).min(range_end);
            let mut buf = vec![0u8; CLUSTER as usize];
            for c in start..end {
                let at = ((c % REFCOUNTS_PER_BLOCK) * 2) as usize;
                buf[at..at + 2].copy_from_slice(&1u16.to_be_bytes());
            }
            self.file.set_len(end * CLUSTER).map_err(|e| self.io_err("extending", e))?;
            self.pwrite(&buf, start * CLUSTER, "a refcount block")?;
            self.sync()?;
            // The table points at the block only once the block is durable.
            self.pwrite(&(start * CLUSTER).to_be_bytes(), m.refcount_table_offset + block_index * 8, "the refcount table")?;
            self.sync()?;
            m.refcount_table[block_index as usize] = start * CLUSTER;
            m.next_free = start + 1;
            m.file_end = end;
        } else {
            let end = (start + count).min(range_end);
            let ones: Vec<u8> = (start..end).flat_map(|_| 1u16.to_be_bytes()).collect();
            // The file grows first, so no refcount ever lies past its end.
            self.file.set_len(end * CLUSTER).map_err(|e| self.io_err("extending", e))?;
            self.pwrite(&ones, block + (start % REFCOUNTS_PER_BLOCK) * 2, "a refcount block")?;
            self.sync()?;
            m.next_free = start;
            m.file_end = end;
        }
        Ok(())
    }

    /// Writes `data` at guest `offset` (inside the disk).
    fn write_range(&self, data: &[u8], offset: u64) -> Result<()> {
        if offset.checked_add(data.len() as u64).is_none_or(|end| end > self.size) {
            return Err(errno(libc::EINVAL));
        }
        let mut m = self.meta();
        // Pieces in clusters already allocated are written in place; the others get a cluster
        // of their own (copy-on-write of the rest of the cluster) and a new L2 entry.
        let mut in_place: Vec<(u64, usize, usize)> = Vec::new();
        let mut new_entries: Vec<(u64, u64)> = Vec::new();
        let mut sync_before_entries = false;
        let mut pos = 0usize;
        while pos < data.len() {
            let guest = offset + pos as u64;
            let cluster = guest / CLUSTER;
            let in_cluster = guest % CLUSTER;
            let n = ((CLUSTER - in_cluster) as usize).min(data.len() - pos);
            let piece = &data[pos..pos + n];
            let entry = self.entry(&mut m, cluster)?;
            match place(entry) {
                Place::Data(host) => in_place.push((host + in_cluster, pos, n)),
                view => {
                    // A zeroed cluster keeps its allocation: reuse it.
                    let reused = entry & OFFSET_MASK;
                    let host = if reused != 0 { reused } else { self.alloc_cluster(&mut m)? };
                    if n as u64 == CLUSTER {
                        self.pwrite(piece, host, "data")?;
                    } else {
                        let mut buf = vec![0u8; CLUSTER as usize];
                        if view == Place::Backing {
                            self.base.read_at(&mut buf, cluster * CLUSTER)?;
                        }
                        let at = in_cluster as usize;
                        buf[at..at + n].copy_from_slice(piece);
                        // Bytes the guest did not write that must not read as zeros after a cut.
                        if buf[..at].iter().chain(&buf[at + n..]).any(|&b| b != 0) {
                            sync_before_entries = true;
                        }
                        self.pwrite(&buf, host, "data")?;
                    }
                    // A reused cluster holds stale data until this write is durable.
                    if reused != 0 {
                        sync_before_entries = true;
                    }
                    new_entries.push((cluster, host | COPIED));
                }
            }
            pos += n;
        }
        if new_entries.is_empty() {
            // Nothing changes in the metadata: the data goes in without holding the lock.
            drop(m);
            for &(host, at, n) in &in_place {
                self.pwrite(&data[at..at + n], host, "data")?;
            }
            return Ok(());
        }
        for &(host, at, n) in &in_place {
            self.pwrite(&data[at..at + n], host, "data")?;
        }
        if sync_before_entries {
            self.sync()?;
        }
        self.set_entries(&mut m, &new_entries)
    }

    /// Sets the zero flag on guest clusters [first, end), keeping their allocations.
    fn zero_clusters(&self, first: u64, end: u64) -> Result<()> {
        let mut cluster = first;
        while cluster < end {
            // One L2 table's worth at a time, so the lock is not held for a whole disk.
            let stop = ((cluster / L2_ENTRIES + 1) * L2_ENTRIES).min(end);
            let mut m = self.meta();
            let mut updates = Vec::new();
            for c in cluster..stop {
                let entry = self.entry(&mut m, c)?;
                let host = entry & OFFSET_MASK;
                let zeroed = if host != 0 { host | COPIED | ZERO } else { ZERO };
                if zeroed != entry {
                    updates.push((c, zeroed));
                }
            }
            self.set_entries(&mut m, &updates)?;
            cluster = stop;
        }
        Ok(())
    }
}

/// The header cluster: v3 header, backing format extension, end of extensions, backing name.
fn header_cluster(size: u64, l1_size: u32, l1_offset: u64, refcount_table_clusters: u32, format: &str, name: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(CLUSTER as usize);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&3u32.to_be_bytes());
    let name_offset_at = h.len();
    h.extend_from_slice(&0u64.to_be_bytes()); // backing file offset, filled below
    h.extend_from_slice(&(name.len() as u32).to_be_bytes());
    h.extend_from_slice(&CLUSTER_BITS.to_be_bytes());
    h.extend_from_slice(&size.to_be_bytes());
    h.extend_from_slice(&0u32.to_be_bytes()); // no encryption
    h.extend_from_slice(&l1_size.to_be_bytes());
    h.extend_from_slice(&l1_offset.to_be_bytes());
    h.extend_from_slice(&CLUSTER.to_be_bytes()); // refcount table offset
    h.extend_from_slice(&refcount_table_clusters.to_be_bytes());
    h.extend_from_slice(&0u32.to_be_bytes()); // no snapshots
    h.extend_from_slice(&0u64.to_be_bytes()); // snapshots offset
    h.extend_from_slice(&0u64.to_be_bytes()); // incompatible features
    h.extend_from_slice(&0u64.to_be_bytes()); // compatible features
    h.extend_from_slice(&0u64.to_be_bytes()); // autoclear features
    h.extend_from_slice(&REFCOUNT_ORDER.to_be_bytes());
    h.extend_from_slice(&HEADER_LENGTH.to_be_bytes());
    h.push(0); // compression type zlib
    h.resize(HEADER_LENGTH as usize, 0);
    h.extend_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
    h.extend_from_slice(&(format.len() as u32).to_be_bytes());
    h.extend_from_slice(format.as_bytes());
    h.resize(h.len().next_multiple_of(8), 0);
    h.extend_from_slice(&[0u8; 8]); // end of extensions
    let name_offset = h.len() as u64;
    h[name_offset_at..name_offset_at + 8].copy_from_slice(&name_offset.to_be_bytes());
    h.extend_from_slice(name);
    h.resize(CLUSTER as usize, 0);
    h
}

impl Drop for Qcow2Overlay {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl Backend for Qcow2Overlay {
    fn close(&self) -> Result<()> {
        Qcow2Overlay::close(self)
    }

    fn size(&self) -> u64 {
        self.size
    }
    fn block_size(&self) -> u32 {
        self.base.logical_sector_size()
    }
    fn writable(&self) -> bool {
        true
    }

    fn read(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let inside = clamp_to_size(buf, offset, self.size);
        let mut pos = 0usize;
        while pos < inside {
            let guest = offset + pos as u64;
            let (from, len) = self.run_at(guest, (inside - pos) as u64)?;
            let piece = &mut buf[pos..pos + len as usize];
            match from {
                Place::Zero => piece.fill(0),
                Place::Data(host) => self.pread(piece, host + guest % CLUSTER, "data")?,
                Place::Backing => self.base.read_at(piece, guest)?,
            }
            pos += piece.len();
        }
        Ok(())
    }

    fn map_read(&self, offset: u64, len: u64, out: &mut Extents) -> Result<bool> {
        let Some(fd) = self.data_fd else { return Ok(false) };
        let inside = len_inside(offset, len, self.size);
        let mut pos = 0u64;
        while pos < inside {
            let guest = offset + pos;
            let (from, run) = self.run_at(guest, inside - pos)?;
            let described = match from {
                Place::Zero => out.push(Extent::Zero { len: run }),
                Place::Data(host) => out.push(Extent::Data { fd, offset: host + guest % CLUSTER, len: run }),
                Place::Backing => self.base.map(guest, run, out)?,
            };
            if !described {
                return Ok(false);
            }
            pos += run;
        }
        Ok(out.push(Extent::Zero { len: len - inside }))
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
            return Err(errno(libc::EINVAL));
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
