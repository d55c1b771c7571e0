//! Hostile images: valid images made at test time with qemu-img, then truncated, given a wrong
//! magic or version, byte-flipped, or patched with absurd sizes; and backing chains that loop,
//! run too deep or end in a folder, a FIFO or a device. Each case runs `vdmount cat` as a child
//! with a 1 GiB address-space limit and a 10 s timeout: it must succeed or fail cleanly (one line
//! on stderr starting "vdmount: " and naming the file), never panic, die of a signal or hang.
//!
//! One test binary; one file per format (harness.rs holds what they share).

#[path = "../common/mod.rs"]
mod common;

mod chains;
mod dmg;
mod ewf;
mod ewf2;
mod harness;
mod memory;
mod parallels;
mod qcow2;
mod qed;
mod requests;
mod sparse;
mod vdi;
mod vhd;
mod vhdx;
mod vmdk;
