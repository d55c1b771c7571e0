//! Image formats. Each reader turns reads of the virtual disk into reads of its image file(s);
//! they all implement `DiskImage`, and `open` (open.rs) picks one by magic.

pub mod bytes;
pub mod cached;
pub mod chain;
pub mod dmg;
pub mod ewf;
pub mod failed;
pub mod format;
pub mod layer;
pub mod open;
pub mod options;
pub mod parallels;
pub mod parent_id;
pub mod qcow2;
pub mod qed;
pub mod raw;
pub mod sparseimage;
pub mod utc;
pub mod vdi;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

pub use crate::source::extents::{Extent, Extents};
/// The 512-byte sector most formats count offsets and sizes in.
pub const SECTOR: u64 = 512;

pub use chain::{open_backing, Chain};
pub use format::Format;
pub use open::open;
pub use options::OpenOptions;

use crate::error::Result;
use std::path::PathBuf;

/// A virtual disk, as a reader of one image format presents it. Implementations are shared by
/// the server's worker threads, so `read_at` takes `&self`.
pub trait DiskImage: Send + Sync {
    /// Size of the virtual disk in bytes.
    fn virtual_size(&self) -> u64;

    /// Logical sector size the guest saw (512, or 4096 for 4Kn VHDX).
    fn logical_sector_size(&self) -> u32 {
        512
    }

    /// Fills `buf` with the virtual disk's bytes from `offset`. Bytes at or past
    /// `virtual_size()` read as zeros, so a backing file shorter than its child needs no
    /// special case in the child.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;

    /// Describes the bytes `read_at` would give for `[offset, offset + len)` as extents of the
    /// image files (and zeros) appended to `out`, for the kernel to read itself. Ok(false) when
    /// some part cannot be described (compressed data, a block device, more extents than `out`
    /// holds): the caller then uses `read_at`, and ignores what was appended. Bytes past
    /// `virtual_size()` are zeros, as for `read_at`. The default describes nothing.
    fn map(&self, _offset: u64, _len: u64, _out: &mut Extents) -> Result<bool> {
        Ok(false)
    }

    /// What a child records of this layer to check it is the parent it was made from.
    fn layer_id(&self) -> LayerId {
        LayerId::None
    }

    /// The media hashes the image itself recorded when it was made (EWF), for `vdmount verify`.
    fn stored_digests(&self) -> StoredDigests {
        StoredDigests::default()
    }

    /// What `vdmount info` shows about this image (and, through `backing`, its chain).
    fn info(&self) -> ImageInfo;
}

/// What an image stores about its own contents, for `vdmount verify`: hashes of the whole
/// virtual disk (forensic formats record them at acquisition), checksums of parts of it (DMG
/// keeps a CRC-32 per partition table), and disagreements among these records found at open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredDigests {
    pub md5: Option<[u8; 16]>,
    pub sha1: Option<[u8; 20]>,
    pub crc32: Vec<PartCrc32>,
    pub inconsistencies: Vec<String>,
}

/// A CRC-32 (IEEE) stored over `ranges` of the virtual disk (byte ranges, sorted, and disjoint
/// from every other `PartCrc32`'s), read in order as one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartCrc32 {
    pub what: String,
    pub ranges: Vec<std::ops::Range<u64>>,
    pub crc: u32,
}

/// The identity of one layer, as children record their parent's: a differencing child is only
/// read over the parent it was made from (unless --ignore-parent-id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerId {
    /// The format records no identity (qcow2, raw, COWD).
    None,
    /// A VMDK descriptor's CID.
    VmdkCid(u32),
    /// A VHD footer's unique id.
    VhdUniqueId([u8; 16]),
    /// A VHDX header's data write GUID.
    VhdxDataWriteGuid(vhdx::guid::Guid),
    /// A VDI header's creation UUID (what a child links to) and modification UUID (what it
    /// checks: the parent was not written to since).
    VdiUuids { create: [u8; 16], modify: [u8; 16] },
}

/// A description of one image for `info`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImageInfo {
    pub path: PathBuf,
    /// Format name, as `--format` takes it ("qcow2", "vmdk", "vhd", "vhdx", "vdi", "qed", "parallels", "ewf", "dmg", "sparseimage", "sparsebundle", "raw").
    pub format: String,
    pub virtual_size: u64,
    /// Cluster, grain or block size, where the format has one.
    pub cluster_size: Option<u64>,
    pub logical_sector_size: u32,
    /// Feature names in use (e.g. "compression=zstd", "extended_l2").
    pub features: Vec<String>,
    /// Further format-specific facts, in the order to print them.
    pub details: Vec<(String, String)>,
    /// The next layer down, for images with a backing file or parent.
    pub backing: Option<Box<ImageInfo>>,
    /// Why this layer could not be opened (`info` shows the rest of the chain anyway).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How much of `len` bytes at `offset` lies before `size`: `map` implementations describe that
/// part, then push `Extent::Zero` for the rest (as `clamp_to_size` does for `read_at`).
pub fn len_inside(offset: u64, len: u64, size: u64) -> u64 {
    size.saturating_sub(offset).min(len)
}

/// Fills the part of `buf` at or past `size` (for a read starting at `offset`) with zeros and
/// returns the length of the part before it, for readers implementing `read_at`'s contract.
pub fn clamp_to_size(buf: &mut [u8], offset: u64, size: u64) -> usize {
    let inside = size.saturating_sub(offset).min(buf.len() as u64) as usize;
    buf[inside..].fill(0);
    inside
}
