//! VMFS sparse extents of ESX 2/3 (magic "COWD", used by vmfsSparse snapshots): 32-bit header
//! fields, a grain directory of `numGDEntries` sector numbers, grain tables of 4096 entries.
//! Header layout from libvmdk's format description: version at 4, flags 8, capacity 12, grain
//! size 16, grain directory sector 20, grain directory entries 24 (all u32, in sectors).

use super::sparse::{capacity_bytes, grain_bytes, Directory, SparseExtent};
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::formats::image_file::{le32, ImageFile};
use std::sync::Arc;

const GTES_PER_GT: u64 = 4096;

pub fn open_cowd(file: ImageFile, cache: Arc<Cache>) -> Result<SparseExtent> {
    let mut h = [0u8; 28];
    file.read_exact_at(&mut h, 0, "the COWD header")?;
    if &h[..4] != b"COWD" {
        return Err(Error::corrupt(
            &file.path,
            "is not a COWD (VMFS sparse) extent: no \"COWD\" signature",
        ));
    }
    let version = le32(&h, 4);
    let capacity = capacity_bytes(&file, le32(&h, 12) as u64)?;
    let grain_bytes = grain_bytes(&file, le32(&h, 16) as u64)?;
    let gd_sector = le32(&h, 20) as u64;
    let gd_entries = le32(&h, 24) as u64;
    let gd = Directory::new(&file, gd_sector, gd_entries, 4, "COWD grain directory")?;
    Ok(SparseExtent {
        description: format!("COWD version {version} (VMFS sparse)"),
        file,
        capacity,
        grain_bytes,
        gtes_per_gt: GTES_PER_GT,
        gd,
        rgd: None,
        compressed: false,
        markers: false,
        cache,
    })
}
