//! QED table entries: an L1 entry is the offset of an L2 table (0: none), an L2 entry the offset
//! of a data cluster, 0 for "not in this image" (the backing file's, or zeros) and 1 for a zero
//! cluster (qemu's QED_ZERO_CLUSTER, written by `write -z` and discards).

use super::header::{cluster_offset_problem, Header};

/// What one L2 entry says about its cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Unallocated,
    Zero,
    Data(u64),
}

impl Entry {
    /// Decodes `raw`; Err says why a data offset cannot be used.
    pub fn decode(h: &Header, file_size: u64, raw: u64) -> Result<Entry, String> {
        match raw {
            0 => Ok(Entry::Unallocated),
            1 => Ok(Entry::Zero),
            at => match cluster_offset_problem(h, file_size, at) {
                None => Ok(Entry::Data(at)),
                Some(why) => Err(format!("points to data at offset {at}, which {why}")),
            },
        }
    }

    /// Whether `next`, the entry of the following cluster, continues this run: one read (or one
    /// extent) can serve both.
    pub fn continues_with(self, next: Entry, cluster_size: u64) -> bool {
        match (self, next) {
            (Entry::Data(a), Entry::Data(b)) => a.checked_add(cluster_size) == Some(b),
            (a, b) => a == b,
        }
    }
}

/// Entry `index` of a little-endian table piece (0 past its end, which callers never ask for).
pub fn entry_at(piece: &[u8], index: usize) -> u64 {
    piece.get(index * 8..index * 8 + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            cluster_size: 4096,
            table_size: 1,
            header_size: 2,
            features: 0,
            compat_features: 0,
            autoclear_features: 0,
            l1_table_offset: 4096,
            image_size: 1 << 20,
            backing_file: None,
        }
    }

    #[test]
    fn entries() {
        let h = header();
        let size = 5 * 4096 + 100;
        assert_eq!(Entry::decode(&h, size, 0), Ok(Entry::Unallocated));
        assert_eq!(Entry::decode(&h, size, 1), Ok(Entry::Zero));
        assert_eq!(Entry::decode(&h, size, 4 * 4096), Ok(Entry::Data(4 * 4096)));
        // Unaligned, in the header's two clusters, and in the file's last partial cluster or past the end.
        assert!(Entry::decode(&h, size, 4 * 4096 + 512).is_err());
        assert!(Entry::decode(&h, size, 4096).is_err());
        assert!(Entry::decode(&h, size, 5 * 4096).is_err());
        assert!(Entry::decode(&h, size, !4095).is_err());
    }

    #[test]
    fn runs() {
        let c = 4096;
        assert!(Entry::Data(c).continues_with(Entry::Data(2 * c), c));
        assert!(!Entry::Data(c).continues_with(Entry::Data(3 * c), c));
        assert!(Entry::Zero.continues_with(Entry::Zero, c));
        assert!(!Entry::Zero.continues_with(Entry::Unallocated, c));
        assert!(!Entry::Data(u64::MAX - 4095).continues_with(Entry::Data(0), c));
    }

    #[test]
    fn little_endian_entries() {
        let piece = [1u8, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0];
        assert_eq!(entry_at(&piece, 0), 1);
        assert_eq!(entry_at(&piece, 1), 0x1000);
        assert_eq!(entry_at(&piece, 2), 0);
    }
}
