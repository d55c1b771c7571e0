//! vdmount: VM disk images (qcow2, VMDK, VHD, VHDX, raw) served as Linux block devices through
//! the abuse.ko kernel module.
//!
//! - `formats/`: one reader per image format behind the `DiskImage` trait;
//! - `source/`: where the files an image names may be (confinement);
//! - `cache`: the byte-bounded LRU of metadata tables and clusters the readers share;
//! - `abuse/`: the kernel ABI (mirroring kmod/include/uapi/linux/abuse.h) and the service loop;
//! - `overlay/`: what the transports serve: a read-only image, or writes over it (--cow);
//! - `cli/`: the `vdmount` command line.

pub mod abuse;
pub mod cache;
pub mod cli;
pub mod error;
pub mod formats;
pub mod inspect;
pub mod limits;
pub mod overlay;
pub mod readahead;
pub mod request;
pub mod source;
pub mod ublk;
