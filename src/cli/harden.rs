//! What the server does to itself before serving, which the peers don't: it is the block
//! device's only way to make progress, so it must not be the thing that deadlocks or is paged out.

/// - PR_SET_IO_FLUSHER: the kernel treats this process like a block driver's I/O thread when it
///   reclaims memory (no reclaim that would wait on our own device);
/// - its own mount namespace, private: a filesystem mounted later on its own device is invisible
///   to it, so its exit never has to unmount (and wait on) that filesystem;
/// - with `mlock`, all its memory locked (a server that must page in its code to answer a
///   request, while memory is short because of that request, can deadlock).
///
/// Each step is best effort: a failure is reported once and serving goes on.
pub fn harden(mlock: bool) {
    // SAFETY: plain syscalls with constant arguments.
    unsafe {
        const PR_SET_IO_FLUSHER: libc::c_int = 57;
        if libc::prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) != 0 {
            warn("cannot mark the server as an I/O flusher (PR_SET_IO_FLUSHER)");
        }
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            warn("cannot give the server its own mount namespace");
        } else if libc::mount(c"none".as_ptr(), c"/".as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) != 0 {
            warn("cannot make the server's mounts private");
        }
        if mlock && libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) != 0 {
            warn("cannot lock the server's memory (--mlock; check ulimit -l)");
        }
    }
}

fn warn(what: &str) {
    eprintln!("vdmount: warning: {what}: {}", std::io::Error::last_os_error());
}
