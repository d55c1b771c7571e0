//! What is on a disk, read through the same `DiskImage` the transports serve: its partitions and
//! filesystems (`partitions`), and how each filesystem is mounted without writing to the device
//! when the device is read-only (`mount_options`).

pub mod lvm;
pub mod lvm_text;
pub mod mount_options;
pub mod partitions;
