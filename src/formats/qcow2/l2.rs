//! Decoding qcow2 L1 and L2 entries (standard 64-bit and extended 128-bit) into extents.

use super::read::Extent;

pub use super::spec::OFFSET_MASK;
use super::spec::{COMPRESSED, COPIED, ZERO};
/// Subclusters per cluster with extended L2 entries.
pub const SUBCLUSTERS: u64 = 32;

/// What the reader needs to know to decode an L2 entry.
pub struct Layout {
    pub cluster_bits: u32,
    pub extended_l2: bool,
    pub has_data_file: bool,
}

/// Why an entry cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum BadEntry {
    UnalignedOffset(u64),
    CompressedWithDataFile,
    BadSubclusterBitmap(u64),
}

impl Layout {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }
    /// Bytes per L2 entry.
    pub fn entry_size(&self) -> u64 {
        if self.extended_l2 {
            16
        } else {
            8
        }
    }
    /// The unit one L2 entry bit describes: a subcluster with extended L2, else a cluster.
    pub fn unit_size(&self) -> u64 {
        if self.extended_l2 {
            self.cluster_size() / SUBCLUSTERS
        } else {
            self.cluster_size()
        }
    }

    /// The extent for guest offset `guest`, given its L2 entry (and bitmap, for extended L2).
    pub fn decode(&self, entry: u64, bitmap: u64, guest: u64) -> Result<Extent, BadEntry> {
        let in_cluster = guest & (self.cluster_size() - 1);
        if entry & COMPRESSED != 0 {
            if self.has_data_file {
                return Err(BadEntry::CompressedWithDataFile);
            }
            // Bits below `shift` are the host offset; above, the count of extra 512-byte sectors.
            let shift = 62 - (self.cluster_bits - 8);
            let host = entry & ((1u64 << shift) - 1);
            let sectors = ((entry >> shift) & ((1u64 << (self.cluster_bits - 8)) - 1)) + 1;
            let len = sectors * 512 - (host & 511);
            return Ok(Extent::Compressed { host, len, skip: in_cluster });
        }
        let host_cluster = entry & OFFSET_MASK;
        // Offset 0 means unallocated, except in an external data file, where 0 is a valid
        // offset and the COPIED bit (always set there) tells them apart.
        let allocated = host_cluster != 0 || (self.has_data_file && entry & COPIED != 0);
        let data = || {
            if host_cluster & (self.cluster_size() - 1) != 0 {
                Err(BadEntry::UnalignedOffset(host_cluster))
            } else {
                Ok(Extent::Data { host: host_cluster + in_cluster })
            }
        };
        if !self.extended_l2 {
            return if entry & ZERO != 0 {
                Ok(Extent::Zero)
            } else if allocated {
                data()
            } else {
                Ok(Extent::Backing)
            };
        }
        let alloc = bitmap & 0xffff_ffff;
        let zero = bitmap >> 32;
        let sub = 1u64 << (in_cluster / self.unit_size());
        if allocated {
            if alloc & zero != 0 {
                return Err(BadEntry::BadSubclusterBitmap(bitmap));
            }
            if zero & sub != 0 {
                Ok(Extent::Zero)
            } else if alloc & sub != 0 {
                data()
            } else {
                Ok(Extent::Backing)
            }
        } else if alloc != 0 {
            Err(BadEntry::BadSubclusterBitmap(bitmap))
        } else if zero & sub != 0 {
            Ok(Extent::Zero)
        } else {
            Ok(Extent::Backing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> Layout {
        Layout { cluster_bits: 16, extended_l2: false, has_data_file: false }
    }

    #[test]
    fn standard_entries() {
        let l = plain();
        assert_eq!(l.decode(0, 0, 5), Ok(Extent::Backing));
        assert_eq!(l.decode(COPIED | 0x30000, 0, 0x10005), Ok(Extent::Data { host: 0x30005 }));
        assert_eq!(l.decode(ZERO, 0, 0), Ok(Extent::Zero));
        assert_eq!(l.decode(0x30000 | ZERO, 0, 0), Ok(Extent::Zero));
        assert_eq!(l.decode(0x30200, 0, 0), Err(BadEntry::UnalignedOffset(0x30200)));
    }

    #[test]
    fn compressed_entry() {
        let l = plain();
        // 64 KiB clusters: shift 54; 3 extra sectors; host offset 0x1234 (not sector aligned).
        let e = COMPRESSED | (3u64 << 54) | 0x1234;
        assert_eq!(l.decode(e, 0, 7), Ok(Extent::Compressed { host: 0x1234, len: 4 * 512 - 0x34, skip: 7 }));
    }

    #[test]
    fn extended_entries() {
        let l = Layout { cluster_bits: 16, extended_l2: true, has_data_file: false };
        let sc = 65536 / 32;
        let bitmap = 0b01 | (0b10 << 32); // subcluster 0 allocated, 1 zero, rest unallocated
        assert_eq!(l.decode(0x20000, bitmap, 3), Ok(Extent::Data { host: 0x20003 }));
        assert_eq!(l.decode(0x20000, bitmap, sc + 3), Ok(Extent::Zero));
        assert_eq!(l.decode(0x20000, bitmap, 2 * sc), Ok(Extent::Backing));
        assert_eq!(l.decode(0, 0b10 << 32, sc), Ok(Extent::Zero));
        assert_eq!(l.decode(0, 1, 0), Err(BadEntry::BadSubclusterBitmap(1)));
        assert_eq!(l.decode(0x20000, 1 | (1 << 32), 0), Err(BadEntry::BadSubclusterBitmap(1 | (1 << 32))));
    }

    #[test]
    fn data_file_offset_zero() {
        let l = Layout { cluster_bits: 16, extended_l2: false, has_data_file: true };
        assert_eq!(l.decode(COPIED, 0, 9), Ok(Extent::Data { host: 9 }));
        assert_eq!(l.decode(0, 0, 9), Ok(Extent::Backing));
    }
}
