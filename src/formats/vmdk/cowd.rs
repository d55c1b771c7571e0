//! VMFS sparse extents of ESX 2/3 (magic "COWD", used by vmfsSparse snapshots): 32-bit header
//! fields, a grain directory of `numGDEntries` sector numbers, grain tables of 4096 entries.
//! Header layout from libvmdk's format description: version at 4, flags 8, capacity 12, grain
//! size 16, grain directory sector 20, grain directory entries 24 (all u32, in sectors).

use super::sparse::{capacity_bytes, grain_bytes, Directory, SparseExtent};
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::formats::bytes::le32;
use crate::source::file::ImageFile;
use std::sync::Arc;

const GTES_PER_GT: u64 = 4096;

pub fn open_cowd(file: ImageFile, cache: Arc<Cache>) -> Result<SparseExtent> {
    let mut h = [0u8; 28];
    file.read_exact_at(&mut h, 0, "the COWD header")?;
    if &h[..4] != b"COWD" {
        return Err(Error::corrupt(&file.path, "is not a COWD (VMFS sparse) extent: no \"COWD\" signature"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::vmdk::test_extent::{extent_refusal, open_extent};

    /// A COWD header (little-endian, all fields u32): a 4 MiB extent of 512-byte grains, one
    /// grain directory entry at sector 1; then that directory.
    fn cowd() -> Vec<u8> {
        let mut b = b"COWD".to_vec(); // 0: magic; then each field a little-endian u32:
        for field in [
            1,    //  4: version 1
            3,    //  8: flags 3
            8192, // 12: capacity 8192 sectors (4 MiB)
            1,    // 16: grain size 1 sector
            1,    // 20: grain directory at sector 1
            1,    // 24: grain directory entries 1
        ] {
            b.extend(u32::to_le_bytes(field));
        }
        b.resize(1024, 0); // 28: rest of the sector; 512: the directory, its entry 0 (no table)
        b
    }

    fn refusal(bytes: &[u8]) -> String {
        extent_refusal(bytes, open_cowd)
    }

    #[test]
    fn header_fields() {
        let e = open_extent(&cowd(), open_cowd).unwrap();
        assert_eq!(e.description, "COWD version 1 (VMFS sparse)");
        assert_eq!((e.capacity, e.grain_bytes, e.gtes_per_gt), (4 << 20, 512, 4096));
    }

    #[test]
    fn refuses_wrong_magic() {
        let mut b = cowd();
        b[..4].copy_from_slice(b"KDMV"); //                       0: magic "KDMV"
        assert!(refusal(&b).contains("no \"COWD\" signature"));
    }

    #[test]
    fn refuses_absurd_grain_sizes_and_a_directory_outside_the_file() {
        let mut b = cowd();
        b[16..20].copy_from_slice(&0u32.to_le_bytes()); //       16: grain size 0
        assert!(refusal(&b).contains("grain size of 0 sectors"));
        b[16..20].copy_from_slice(&(1u32 << 20).to_le_bytes()); // 16: grain size 512 MiB
        assert!(refusal(&b).contains("grain size (bytes) is 536870912, more than the limit"));
        let mut b = cowd();
        b[24..28].copy_from_slice(&129u32.to_le_bytes()); //     24: 129 directory entries: 516 bytes
        assert!(refusal(&b).contains("the COWD grain directory (129 entries at sector 1) lies outside the file"));
    }
}
