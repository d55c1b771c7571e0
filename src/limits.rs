//! The one place for limits on sizes read from untrusted images. Every reader checks a value
//! from an image against the file's size and these limits before it allocates or reads.

use crate::error::{Error, Result};
use std::path::Path;

/// Longest backing chain (qcow2 backing files, VMDK parents, VHD/VHDX parents), counting the top.
pub const MAX_CHAIN_DEPTH: usize = 64;
/// Largest single metadata table read into memory at once (L1 table, grain directory, BAT...).
pub const MAX_TABLE_BYTES: u64 = 256 << 20;
/// Largest cluster, grain or block read or decompressed as one piece.
pub const MAX_CLUSTER_BYTES: u64 = 256 << 20;
/// Largest text descriptor (VMDK) read into memory.
pub const MAX_DESCRIPTOR_BYTES: u64 = 1 << 20;
/// Most extents one VMDK descriptor may list.
pub const MAX_EXTENTS: usize = 4096;
/// Most internal snapshots listed from one qcow2 image.
pub const MAX_SNAPSHOTS: u64 = 65536;
/// Largest VHDX metadata item (the specification caps items at 1 MiB).
pub const MAX_VHDX_METADATA_ITEM_BYTES: u64 = 1 << 20;
/// Largest VHD parent locator (a path) read from an image.
pub const MAX_PARENT_LOCATOR_BYTES: u64 = 64 << 10;
/// Largest VHDX log replayed into memory.
pub const MAX_LOG_BYTES: u64 = 1 << 30;
/// Largest virtual disk: 2^63 bytes keeps every offset computation inside i64 (pread's off_t).
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 62;

/// Refuses `value` for `field` if it exceeds `limit`.
pub fn check(path: &Path, field: &str, value: u64, limit: u64) -> Result<u64> {
    if value > limit {
        return Err(Error::Limit { path: path.to_path_buf(), field: field.to_string(), value, limit });
    }
    Ok(value)
}
