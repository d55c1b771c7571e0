//! The io_uring instances the ublk transport uses are restricted to passthrough commands
//! (IORING_OP_URING_CMD) before they are enabled: the server's seccomp sandbox lets
//! io_uring_enter through, and an unrestricted ring would let a compromised server open or read
//! any file with io_uring's own opcodes, which seccomp never sees.

use io_uring::register::Restriction;
use io_uring::{opcode, squeue, IoUring};
use std::io;

/// A ring of `entries` that runs only URING_CMD. `personality`: first register the caller's
/// credentials, so commands tagged with the returned id keep the capabilities the sandbox
/// later drops (ublk's control commands need CAP_SYS_ADMIN).
pub fn restricted<S: squeue::EntryMarker>(entries: u32, personality: bool) -> io::Result<(IoUring<S>, Option<u16>)> {
    let ring = IoUring::<S>::builder().setup_r_disabled().build(entries)?;
    let submitter = ring.submitter();
    let id = if personality { Some(submitter.register_personality()?) } else { None };
    submitter.register_restrictions(&mut [Restriction::sqe_op(opcode::UringCmd16::CODE)])?;
    submitter.register_enable_rings()?;
    Ok((ring, id))
}
