//! On-disk constants of qcow2 that both its reader and the `--cow=FILE` overlay writer use
//! (docs/interop/qcow2.txt in qemu).

/// The file's first four bytes.
pub const MAGIC: &[u8; 4] = b"QFI\xfb";
/// Header extension: the backing file's format name.
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
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
