//! The one place for limits on sizes read from untrusted images. Every reader checks a value
//! from an image against the file's size and these limits before it allocates or reads.

use crate::error::{Error, Result};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest backing chain (qcow2 backing files, VMDK parents, VHD/VHDX parents), counting the top.
pub const MAX_CHAIN_DEPTH: usize = 64;
/// Largest single metadata table read into memory at once (L1 table, grain directory, BAT...).
pub const MAX_TABLE_BYTES: u64 = 256 << 20;
/// Largest cluster, grain or block read or decompressed as one piece.
pub const MAX_CLUSTER_BYTES: u64 = 256 << 20;
/// Largest compressed VMDK grain: a random read inflates up to a whole grain, and a grain bigger
/// than a cache entry can be would be inflated again for every read (qemu allows 1 GiB grains;
/// VMware and qemu write 64 KiB). qcow2's largest cluster is 2 MiB too.
pub const MAX_COMPRESSED_GRAIN_BYTES: u64 = 2 << 20;
/// Largest text descriptor (VMDK, Parallels DiskDescriptor.xml) read into memory.
pub const MAX_DESCRIPTOR_BYTES: u64 = 1 << 20;
/// Most XML nodes parsed from one Parallels DiskDescriptor.xml: bounds the parser's memory
/// whatever the text's shape (a real one has a few dozen per snapshot).
pub const MAX_DESCRIPTOR_XML_NODES: u32 = 200_000;
/// Most extents one VMDK descriptor may list (and storages one Parallels descriptor may).
pub const MAX_EXTENTS: usize = 4096;
/// Most internal snapshots listed from one qcow2 image.
pub const MAX_SNAPSHOTS: u64 = 65536;
/// Largest VHDX metadata item (the specification caps items at 1 MiB).
pub const MAX_VHDX_METADATA_ITEM_BYTES: u64 = 1 << 20;
/// Largest VHD parent locator (a path) read from an image.
pub const MAX_PARENT_LOCATOR_BYTES: u64 = 64 << 10;
/// Most .vdi files per folder looked at for a differencing VDI's parent (each is opened and
/// its header read).
pub const MAX_PARENT_CANDIDATES: usize = 4096;
/// Largest VHDX log replayed into memory (Hyper-V writes 1 MiB logs).
pub const MAX_LOG_BYTES: u64 = 256 << 20;
/// Largest qcow2 (and qcow) L1 table: qemu's QCOW_MAX_L1_SIZE. Enough for a 4 PiB disk with
/// 64 KiB clusters.
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// Longest QED backing file name: qemu reads it into a PATH_MAX (4096) buffer with its NUL.
pub const MAX_QED_BACKING_NAME_BYTES: u64 = 4095;
/// QED tables are up to 16 clusters of up to 64 MiB (1 GiB): L2 tables are read and cached in
/// pieces of at most this size, so a lookup never reads or holds more.
pub const QED_TABLE_PIECE_BYTES: u64 = 64 << 10;
/// Largest EWF chunk: EnCase and ewfacquire write at most 32768 sectors of 512 bytes.
pub const MAX_EWF_CHUNK_BYTES: u64 = 16 << 20;
/// Most entries in one EWF table section (EnCase 6 and later write up to 65534).
pub const MAX_EWF_TABLE_ENTRIES: u64 = 1 << 20;
/// Most sections walked in one EWF segment file (a "sectors", "table" and "table2" section per
/// table's worth of chunks, a few more at the start and end).
pub const MAX_EWF_SECTIONS_PER_SEGMENT: u32 = 1 << 20;
/// Most segment files in an EWF set: the naming scheme ends at .ZZZ (for .E01 sets, 14971).
pub const MAX_EWF_SEGMENTS: usize = 14971;
/// Largest EWF header, header2, xheader or xhash section, compressed and inflated.
pub const MAX_EWF_HEADER_BYTES: u64 = 1 << 20;
/// Largest DMG (UDIF) XML property list (qemu reads up to 16 MiB; Apple's hold a few hundred
/// bytes per 1 MiB chunk, so this is enough for a disk of tens of terabytes).
pub const MAX_DMG_PLIST_BYTES: u64 = 64 << 20;
/// Most chunks in all of one DMG's tables (each held in memory, 40 bytes).
pub const MAX_DMG_CHUNKS: u64 = 1 << 22;
/// Largest DMG chunk, compressed or decompressed: qemu's limit (hdiutil writes 1 MiB chunks).
pub const MAX_DMG_CHUNK_BYTES: u64 = 64 << 20;
/// Largest band of an Apple sparse image or sparse bundle (hdiutil writes 1 MiB and 8 MiB bands;
/// bands are served from the file as they are, so this only keeps offsets far from overflow).
pub const MAX_SPARSE_BAND_BYTES: u64 = 4 << 30;
/// Most band files listed in one sparse bundle's bands folder (each is opened and held open: the
/// sandboxed server can open nothing later). 2^20 bands of 8 MiB are an 8 TiB disk.
pub const MAX_SPARSEBUNDLE_BAND_FILES: u64 = 1 << 20;
/// Memory the long-lived tables of one backing chain may take, all layers together (L1 tables,
/// snapshot tables, replayed VHDX logs): a chain of 64 layers each at its own limit would
/// otherwise need gigabytes.
pub const MAX_CHAIN_TABLE_BYTES: u64 = 512 << 20;
/// Largest virtual disk: 2^63 bytes keeps every offset computation inside i64 (pread's off_t).
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 62;

/// Refuses `value` for `field` if it exceeds `limit`.
pub fn check(path: &Path, field: &str, value: u64, limit: u64) -> Result<u64> {
    if value > limit {
        return Err(Error::Limit { path: path.to_path_buf(), field: field.to_string(), value, limit });
    }
    Ok(value)
}

/// What is left of `MAX_CHAIN_TABLE_BYTES` for one chain; every layer takes its tables from it.
pub struct MemoryBudget {
    left: AtomicU64,
}

impl Default for MemoryBudget {
    fn default() -> MemoryBudget {
        MemoryBudget { left: AtomicU64::new(MAX_CHAIN_TABLE_BYTES) }
    }
}

impl MemoryBudget {
    /// Takes `bytes` for `what` in the image at `path`, or refuses if the chain has used it up.
    pub fn take(&self, path: &Path, what: &str, bytes: u64) -> Result<()> {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(bytes))
            .map(|_| ())
            .map_err(|left| {
                Error::corrupt(
                    path,
                    format!(
                        "{what} needs {bytes} bytes, but the whole backing chain's tables may take {MAX_CHAIN_TABLE_BYTES} and only {left} are left; the image is corrupt or hostile"
                    ),
                )
            })
    }
}

/// A zeroed buffer of `len` bytes for `what`, or a clean error if memory is short (instead of
/// the abort an ordinary allocation failure is).
pub fn alloc(path: &Path, what: &str, len: u64) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    let ok = usize::try_from(len).ok().is_some_and(|n| v.try_reserve_exact(n).is_ok());
    if !ok {
        return Err(Error::corrupt(path, format!("cannot allocate {len} bytes for {what}: out of memory")));
    }
    v.resize(len as usize, 0);
    Ok(v)
}
/// Largest LVM2 text metadata read from one metadata area (lvm2's default area is 1 MiB; a
/// volume group with thousands of volumes needs a few MiB).
pub const MAX_LVM_METADATA_BYTES: u64 = 8 << 20;
/// Most values, sections and list items parsed from one LVM2 metadata text, and how deep its
/// sections may nest (real metadata nests 4 deep).
pub const MAX_LVM_TEXT_NODES: usize = 1 << 20;
pub const MAX_LVM_TEXT_DEPTH: usize = 32;
/// Most segments one logical volume may have, and stripes one segment (lvm2 allows 128).
pub const MAX_LVM_SEGMENTS: usize = 4096;
pub const MAX_LVM_STRIPES: usize = 128;

/// Remote images (src/source/remote/): how many times one range request is tried before the
/// read fails with EIO (resets, timeouts, short bodies, 5xx and 429 are retried).
pub const REMOTE_ATTEMPTS: u32 = 6;
/// First pause before a retry, doubled each time up to `REMOTE_BACKOFF_MAX_MS`.
pub const REMOTE_BACKOFF_MS: u64 = 100;
pub const REMOTE_BACKOFF_MAX_MS: u64 = 3000;
/// Time to connect, and time without progress (response head, then the body) before a request
/// counts as stalled and is retried. `VDMOUNT_HTTP_TIMEOUT_MS` overrides it (the tests' stalls).
pub const REMOTE_TIMEOUT_MS: u64 = 20_000;
/// Largest range one request asks for: a bigger read is split into pieces fetched in parallel.
pub const REMOTE_PIECE_BYTES: u64 = 1 << 20;
/// Most requests in flight for one read (and idle connections kept per host).
pub const REMOTE_PARALLEL: usize = 8;
/// Remote read-ahead: the window a sequential reader starts with (it grows, see below).
pub const REMOTE_READAHEAD_BYTES: u64 = 4 << 20;
/// Largest response head (status line and headers) accepted from a server.
pub const REMOTE_MAX_HEADER_BYTES: usize = 64 << 10;
/// Largest ~/.aws credentials or config file read.
pub const MAX_AWS_FILE_BYTES: u64 = 1 << 20;
/// Most entries in one EWF2 sector table (16 MiB of entries; each is checked against the
/// table's checksum once, on first use).
pub const MAX_EWF2_TABLE_ENTRIES: u64 = 1 << 20;
/// Most segment files in an EWF2 set: the naming scheme ends at .EzZZ (99 + 3 * 676).
pub const MAX_EWF2_SEGMENTS: usize = 2127;

/// Read-ahead of decoded data (src/readahead/): a sequential reader of compressed data has the
/// next `READAHEAD_WINDOW_BYTES` decoded ahead of it, in pieces of `READAHEAD_PIECE_BYTES`
/// decoded in parallel by at most `READAHEAD_THREADS` threads.
pub const READAHEAD_PIECE_BYTES: u64 = 1 << 20;
pub const READAHEAD_WINDOW_BYTES: u64 = 8 << 20;
/// Most windows held (decoding or decoded, not yet read) per image, over all its streams: the
/// read-ahead's memory is at most this many windows.
pub const READAHEAD_WINDOWS: u64 = 2;
pub const READAHEAD_THREADS: usize = 8;
/// Streams tracked per image (the server's threads interleave several readers; random reads
/// take slots too, but never those of streams found sequential while others are free).
pub const READAHEAD_STREAMS: usize = 8;

/// Read-ahead of sequential remote reads (src/source/remote/readahead.rs): the window ahead of
/// the reader grows from `REMOTE_READAHEAD_BYTES` (doubling whenever a read had to wait for it)
/// up to this, and at most `REMOTE_READAHEAD_HELD_BYTES` of fetched pieces are kept per object.
pub const REMOTE_READAHEAD_MAX_BYTES: u64 = 16 << 20;
pub const REMOTE_READAHEAD_HELD_BYTES: u64 = 32 << 20;
/// Most read-ahead pieces asked for in one request (object stores charge, and are slower, per
/// request).
pub const REMOTE_READAHEAD_RUN: usize = 4;
/// Largest folder listing read from an http(s) server (nginx autoindex, Apache's index), to
/// find a differencing VDI's parent beside a URL; the rest of a longer page is not read.
pub const MAX_LISTING_BYTES: u64 = 1 << 20;
/// Most names taken from one remote folder listing (an S3 listing's keys, or a page's links).
pub const MAX_LISTING_NAMES: usize = 4096;
/// Most ListObjectsV2 pages asked for one S3 folder listing, and the keys asked per page.
pub const MAX_LISTING_PAGES: usize = 8;
pub const LISTING_KEYS_PER_PAGE: usize = 1000;
/// Largest ListObjectsV2 answer read (1000 keys of up to 1 KiB each, with their XML).
pub const MAX_S3_LISTING_BYTES: u64 = 4 << 20;
