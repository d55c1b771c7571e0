//! The second transport: the kernel's own ublk driver (ublk_drv, in Debian's 6.12 and 7.x
//! kernels), for machines that cannot load abuse.ko. It serves the same `overlay::Backend` as
//! src/abuse/ does, through io_uring passthrough commands: `ctrl` adds, starts, recovers, stops
//! and deletes devices on /dev/ublk-control; `queue` is one queue's service loop on /dev/ublkcN;
//! `server` ties them into a device's life; `ring` restricts every io_uring to those commands;
//! `uapi` mirrors the kernel's ABI.

pub mod ctrl;
pub mod queue;
pub mod ring;
pub mod server;
pub mod uapi;
