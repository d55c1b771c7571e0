//! vdmount: VM disk images (qcow2, VMDK, VHD, VHDX, raw) served as Linux block devices through
//! the abuse.ko kernel module.
//!
//! - `formats/`: one reader per image format behind the `DiskImage` trait;
//! - `source/`: where the files an image names may be (confinement);
//! - `cache`: the byte-bounded LRU of metadata tables and clusters the readers share;
//! - `abuse/`: the kernel ABI (mirroring kmod/include/uapi/linux/abuse.h) and the service loop;
//! - `cli/`: the `vdmount` command line;
//! - `safe_open`: opening a file to write in a folder others may share, without races.

pub mod abuse;
pub mod cache;
pub mod cli;
pub mod cow;
pub mod cow_qcow2;
pub mod error;
pub mod formats;
pub mod limits;
pub mod partitions;
pub mod safe_open;
pub mod source;
