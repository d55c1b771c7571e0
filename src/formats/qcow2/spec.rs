//! On-disk constants of qcow2 that both its reader and the `--cow=FILE` overlay writer use
//! (docs/interop/qcow2.txt in qemu).

/// The file's first four bytes.
pub const MAGIC: &[u8; 4] = b"QFI\xfb";
/// Length of the version 2 header; version 3 headers are at least 104 bytes, 112 with the
/// compression type byte (and padding) that the overlay writes.
pub const V2_HEADER_LEN: u64 = 72;
pub const V3_MIN_HEADER_LEN: u64 = 104;
pub const V3_HEADER_LEN: u32 = 112;
/// Header extension types: the end of the list, the backing file's format name, the feature
/// name table, the external data file's name.
pub const EXT_END: u32 = 0;
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
pub const EXT_FEATURE_NAMES: u32 = 0x6803_f857;
pub const EXT_DATA_FILE: u32 = 0x4441_5441;
/// qemu refuses longer backing file names.
pub const MAX_BACKING_NAME: u64 = 1023;
/// Host offset bits of an L1 entry and of a standard L2 entry (bits 9..55).
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L1/L2: the refcount is exactly 1 (qemu-img check insists on it being set then).
pub const COPIED: u64 = 1 << 63;
/// L2: the cluster is compressed.
pub const COMPRESSED: u64 = 1 << 62;
/// Standard L2: the cluster reads as zeros.
pub const ZERO: u64 = 1;
/// Bits of L1 and standard L2 entries that must be zero.
pub const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;
pub const L2_RESERVED: u64 = 0x3f00_0000_0000_01fe;
