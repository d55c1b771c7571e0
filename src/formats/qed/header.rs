//! The QED header (qemu's docs/interop/qed_spec.txt; all fields little-endian), with the checks
//! qemu's bdrv_qed_open makes, so an image qemu refuses is refused here too, by name.

use crate::error::{Error, Result};
use crate::formats::bytes::{le32, le64};
use crate::limits::{self, MAX_QED_BACKING_NAME_BYTES, MAX_VIRTUAL_SIZE};
use crate::source::file::ImageFile;

pub const MAGIC: &[u8; 4] = b"QED\0";
const HEADER_LEN: usize = 64;

/// Incompatible feature bits (`features`).
pub const F_BACKING_FILE: u64 = 1 << 0;
pub const F_NEED_CHECK: u64 = 1 << 1;
pub const F_BACKING_FORMAT_NO_PROBE: u64 = 1 << 2;
const F_KNOWN: u64 = F_BACKING_FILE | F_NEED_CHECK | F_BACKING_FORMAT_NO_PROBE;

const MIN_CLUSTER: u32 = 4 << 10;
const MAX_CLUSTER: u32 = 64 << 20;
const MAX_TABLE_CLUSTERS: u32 = 16;

pub struct Header {
    pub cluster_size: u64,
    /// Clusters per L1 or L2 table.
    pub table_size: u64,
    /// Clusters before the first table or data cluster.
    pub header_size: u64,
    pub features: u64,
    pub compat_features: u64,
    pub autoclear_features: u64,
    pub l1_table_offset: u64,
    pub image_size: u64,
    /// The backing file's name, if the image has one (QED_F_BACKING_FILE and a non-empty name).
    pub backing_file: Option<Vec<u8>>,
}

impl Header {
    pub fn table_bytes(&self) -> u64 {
        self.cluster_size * self.table_size
    }
    /// Entries per L1 or L2 table.
    pub fn entries(&self) -> u64 {
        self.table_bytes() / 8
    }
    /// Disk bytes one L2 table maps (at most 2^27 entries of 2^26 bytes: no overflow).
    pub fn l2_span(&self) -> u64 {
        self.entries() * self.cluster_size
    }
    pub fn header_bytes(&self) -> u64 {
        self.header_size * self.cluster_size
    }
    /// The backing file must be read as raw, never probed.
    pub fn backing_is_raw(&self) -> bool {
        self.features & F_BACKING_FORMAT_NO_PROBE != 0
    }
    pub fn need_check(&self) -> bool {
        self.features & F_NEED_CHECK != 0
    }

    /// Feature names for `info`.
    pub fn feature_list(&self) -> Vec<String> {
        let mut f = Vec::new();
        for (bit, name) in
            [(F_BACKING_FILE, "backing_file"), (F_NEED_CHECK, "need_check"), (F_BACKING_FORMAT_NO_PROBE, "backing_raw")]
        {
            if self.features & bit != 0 {
                f.push(name.to_string());
            }
        }
        for (kind, bits) in [("compatible", self.compat_features), ("autoclear", self.autoclear_features)] {
            f.extend((0..64).filter(|b| bits & (1u64 << b) != 0).map(|b| format!("{kind} bit {b}")));
        }
        f
    }
}

/// Reads and checks the header of the QED image `file`.
pub fn read_header(file: &ImageFile) -> Result<Header> {
    let path = &file.path;
    let bad = |msg: String| Error::corrupt(path, format!("QED header: {msg}; the image is corrupt"));
    let mut b = [0u8; HEADER_LEN];
    file.read_exact_at(&mut b, 0, "the QED header")?;
    if &b[0..4] != MAGIC {
        return Err(Error::corrupt(path, "does not start with the QED signature \"QED\\0\"; it is not a QED image"));
    }
    let cluster_size = le32(&b, 4);
    let table_size = le32(&b, 8);
    let header_size = le32(&b, 12);
    let features = le64(&b, 16);

    let unknown = features & !F_KNOWN;
    if unknown != 0 {
        let bits: Vec<String> = (0..64).filter(|i| unknown & (1u64 << i) != 0).map(|i| i.to_string()).collect();
        return Err(Error::unsupported(
            path,
            format!(
                "uses unknown incompatible QED feature bit(s) {} (features {features:#x}), which vdmount cannot read safely",
                bits.join(", ")
            ),
        ));
    }
    if !cluster_size.is_power_of_two() || !(MIN_CLUSTER..=MAX_CLUSTER).contains(&cluster_size) {
        return Err(bad(format!("cluster size {cluster_size} is not a power of 2 from 4 KiB to 64 MiB")));
    }
    if !table_size.is_power_of_two() || table_size > MAX_TABLE_CLUSTERS {
        return Err(bad(format!("table size {table_size} clusters is not a power of 2 from 1 to 16")));
    }
    // The header is in cluster 0, and qemu keeps header_size * cluster_size inside 32 bits.
    if header_size == 0 || header_size > u32::MAX / cluster_size {
        return Err(bad(format!("header size {header_size} clusters is not from 1 to {}", u32::MAX / cluster_size)));
    }
    let mut h = Header {
        cluster_size: u64::from(cluster_size),
        table_size: u64::from(table_size),
        header_size: u64::from(header_size),
        features,
        compat_features: le64(&b, 24),
        autoclear_features: le64(&b, 32),
        l1_table_offset: le64(&b, 40),
        image_size: le64(&b, 48),
        backing_file: None,
    };

    // Two table levels address at most entries^2 clusters (computed wide: 2^80 at the largest).
    let addressable = u128::from(h.entries()) * u128::from(h.l2_span());
    if !h.image_size.is_multiple_of(512) || u128::from(h.image_size) > addressable {
        return Err(bad(format!(
            "image size {} is not a multiple of 512 or more than its tables address ({addressable} bytes)",
            h.image_size
        )));
    }
    limits::check(path, "the QED image size", h.image_size, MAX_VIRTUAL_SIZE)?;
    if let Some(why) = table_offset_problem(&h, file.size, h.l1_table_offset) {
        return Err(bad(format!("the L1 table offset {} {why}", h.l1_table_offset)));
    }

    if features & F_BACKING_FILE != 0 {
        let offset = u64::from(le32(&b, 56));
        let size = u64::from(le32(&b, 60));
        if offset + size > h.header_bytes() {
            return Err(bad(format!(
                "the backing file name ({size} bytes at offset {offset}) does not lie inside the header's {} bytes",
                h.header_bytes()
            )));
        }
        limits::check(path, "the QED backing file name length", size, MAX_QED_BACKING_NAME_BYTES)?;
        let mut name = file.read_vec(offset, size, MAX_QED_BACKING_NAME_BYTES, "the backing file name")?;
        // qemu reads the name as a C string.
        if let Some(nul) = name.iter().position(|&c| c == 0) {
            name.truncate(nul);
        }
        if !name.is_empty() {
            h.backing_file = Some(name);
        }
    }
    Ok(h)
}

/// Why a table (L1 or L2) at `offset` cannot be read, if it cannot: as qemu's
/// qed_check_table_offset, it must be cluster aligned, after the header, and end inside the
/// file's whole clusters. (qemu's own check also refuses every table of one cluster, an
/// off-by-one; vdmount reads those.)
pub fn table_offset_problem(h: &Header, file_size: u64, offset: u64) -> Option<String> {
    let whole = file_size / h.cluster_size * h.cluster_size;
    if !offset.is_multiple_of(h.cluster_size) {
        Some(format!("is not a multiple of the cluster size ({})", h.cluster_size))
    } else if offset < h.header_bytes() {
        Some(format!("lies inside the header (its first {} bytes)", h.header_bytes()))
    } else if offset.checked_add(h.table_bytes()).is_none_or(|end| end > whole) {
        Some(format!(
            "leaves no room for the table's {} bytes before the end of the file ({file_size} bytes)",
            h.table_bytes()
        ))
    } else {
        None
    }
}

/// Why a data cluster at `offset` cannot be read, if it cannot (qemu's qed_check_cluster_offset).
pub fn cluster_offset_problem(h: &Header, file_size: u64, offset: u64) -> Option<String> {
    let whole = file_size / h.cluster_size * h.cluster_size;
    if !offset.is_multiple_of(h.cluster_size) {
        Some(format!("is not a multiple of the cluster size ({})", h.cluster_size))
    } else if offset < h.header_bytes() {
        Some(format!("lies inside the header (its first {} bytes)", h.header_bytes()))
    } else if offset >= whole {
        Some(format!("is past the last whole cluster of the file ({file_size} bytes)"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::bytes::{put_le32, put_le64};
    use crate::source::file::{assert_refused, parse_edited};

    /// A valid image: 4 KiB clusters, tables of 2 clusters, L1 at 4096, 1 MiB disk, 12 KiB file.
    fn image() -> Vec<u8> {
        let mut b = vec![0u8; 3 * 4096];
        b[0..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&4096u32.to_le_bytes());
        b[8..12].copy_from_slice(&2u32.to_le_bytes());
        b[12..16].copy_from_slice(&1u32.to_le_bytes());
        b[40..48].copy_from_slice(&4096u64.to_le_bytes());
        b[48..56].copy_from_slice(&(1u64 << 20).to_le_bytes());
        b
    }

    fn open(edit: impl Fn(&mut Vec<u8>)) -> std::result::Result<Header, String> {
        parse_edited(image(), edit, read_header)
    }

    #[test]
    fn valid_header() {
        let h = open(|_| {}).unwrap();
        assert_eq!((h.cluster_size, h.table_size, h.entries(), h.l2_span()), (4096, 2, 1024, 4 << 20));
        assert!(h.backing_file.is_none());
    }

    #[test]
    fn header_fields_are_checked() {
        assert_refused(open(|b| b[3] = 1), "QED signature");
        assert_refused(open(|b| b.truncate(40)), "past the end of the file");
        assert_refused(open(|b| put_le64(b, 16, 1 << 5)), "feature bit(s) 5");
        assert_refused(open(|b| put_le32(b, 4, 2048)), "cluster size 2048");
        assert_refused(open(|b| put_le32(b, 4, 12288)), "cluster size 12288");
        assert_refused(open(|b| put_le32(b, 4, 128 << 20)), "cluster size");
        assert_refused(open(|b| put_le32(b, 8, 0)), "table size 0");
        assert_refused(open(|b| put_le32(b, 8, 32)), "table size 32");
        assert_refused(open(|b| put_le32(b, 12, 0)), "header size 0");
        assert_refused(open(|b| put_le32(b, 12, u32::MAX)), "header size");
        assert_refused(open(|b| put_le64(b, 48, 1000)), "image size 1000");
        // 1024 entries of 4 MiB: 4 GiB addressable.
        assert_refused(open(|b| put_le64(b, 48, (4 << 30) + 512)), "more than its tables address");
        assert_refused(open(|b| put_le64(b, 40, 4096 + 512)), "not a multiple of the cluster size");
        assert_refused(open(|b| put_le64(b, 40, 0)), "inside the header");
        assert_refused(open(|b| put_le64(b, 40, 8192)), "no room for the table");
        assert_refused(open(|b| put_le64(b, 40, u64::MAX - 4095)), "no room for the table");
    }

    #[test]
    fn backing_file_name() {
        let with_name = |b: &mut Vec<u8>, at: u32, len: u32| {
            put_le64(b, 16, F_BACKING_FILE | F_BACKING_FORMAT_NO_PROBE);
            put_le32(b, 56, at);
            put_le32(b, 60, len);
            b[100..108].copy_from_slice(b"base.img");
        };
        let h = open(|b| with_name(b, 100, 8)).unwrap();
        assert_eq!(h.backing_file.as_deref(), Some(&b"base.img"[..]));
        assert!(h.backing_is_raw());
        // Read as a C string; empty means no backing file.
        assert_eq!(open(|b| with_name(b, 100, 20)).unwrap().backing_file.as_deref(), Some(&b"base.img"[..]));
        assert!(open(|b| with_name(b, 200, 8)).unwrap().backing_file.is_none());
        assert_refused(open(|b| with_name(b, 100, 4000)), "does not lie inside the header");
        assert_refused(open(|b| with_name(b, u32::MAX, 8)), "does not lie inside the header");
        let zero_name_length = |b: &mut Vec<u8>| {
            with_name(b, 0, 4096);
            put_le32(b, 12, 1);
            put_le32(b, 4, 8192);
            put_le64(b, 40, 8192);
            b.resize(3 * 8192, 0);
        };
        assert_refused(open(zero_name_length), "backing file name length");
    }
}
