//! TEST AID ONLY (tests/vm/scenarios/sandbox.sh): if VDMOUNT_TEST_SANDBOX=1 was set when the
//! server started, SIGUSR2 makes it try a call the sandbox forbids (open /etc/hostname) and log
//! what came back, so the VM test can see a refusal logged while the device keeps serving.
//! Without that variable SIGUSR2 keeps its default action.

extern "C" fn on_probe(_: libc::c_int) {
    // SAFETY: open, close and write are async-signal-safe; the buffer is a local.
    unsafe {
        let saved_errno = *libc::__errno_location();
        let fd = libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        let line: &[u8] = if fd >= 0 {
            libc::close(fd);
            b"vdmount: sandbox test: open(/etc/hostname) succeeded\n"
        } else if *libc::__errno_location() == libc::EPERM {
            b"vdmount: sandbox test: open(/etc/hostname) failed with EPERM\n"
        } else {
            b"vdmount: sandbox test: open(/etc/hostname) failed, not with EPERM\n"
        };
        libc::write(2, line.as_ptr().cast(), line.len());
        *libc::__errno_location() = saved_errno;
    }
}

pub fn install_if_asked() {
    if std::env::var_os("VDMOUNT_TEST_SANDBOX").is_none_or(|v| v != "1") {
        return;
    }
    // SAFETY: an async-signal-safe handler; plain sigaction on a zeroed struct.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_probe as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut());
    }
}
