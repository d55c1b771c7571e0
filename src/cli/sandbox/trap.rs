//! What happens to a system call the filter refuses: seccomp's TRAP action sends SIGSYS to the
//! thread, and this handler writes one line naming the call to stderr (the server's log) and
//! makes the call return -EPERM, so the server goes on serving.
//!
//! Why TRAP and not ERRNO: ERRNO refuses silently (only the kernel's audit log, if enabled,
//! would see it), and LOG logs without refusing; a trap does both, in the server's own log.
//! The handler is async-signal-safe: no allocation, no locks, one write(2).

use std::sync::atomic::{AtomicU64, Ordering};

/// Refused calls so far.
pub static REFUSED: AtomicU64 = AtomicU64::new(0);

/// The SIGSYS part of siginfo_t (libc does not expose it): after signo, errno, code and the
/// padding that aligns the union, the calling address, the call's number and its ABI.
#[repr(C)]
struct SigsysInfo {
    signo: i32,
    errno: i32,
    code: i32,
    _pad: i32,
    call_addr: *mut libc::c_void,
    syscall: i32,
    arch: u32,
}

/// Names of calls a compromised or confused server would try first; others are logged by number.
fn name(nr: i64) -> &'static [u8] {
    match nr {
        libc::SYS_openat => b"openat",
        libc::SYS_execve => b"execve",
        libc::SYS_execveat => b"execveat",
        libc::SYS_socket => b"socket",
        libc::SYS_connect => b"connect",
        libc::SYS_unlinkat => b"unlinkat",
        libc::SYS_ioctl => b"ioctl",
        libc::SYS_clone => b"clone",
        libc::SYS_mmap => b"mmap",
        libc::SYS_mprotect => b"mprotect",
        libc::SYS_prctl => b"prctl",
        libc::SYS_ptrace => b"ptrace",
        libc::SYS_rt_sigaction => b"rt_sigaction",
        _ => b"",
    }
}

/// Appends `s` to `buf` at `at`, returning the new end (truncating at the buffer's end).
fn put(buf: &mut [u8], at: usize, s: &[u8]) -> usize {
    let n = s.len().min(buf.len() - at);
    buf[at..at + n].copy_from_slice(&s[..n]);
    at + n
}

fn put_number(buf: &mut [u8], at: usize, mut v: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    put(buf, at, &digits[i..])
}

extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a SIGSYS siginfo and this thread's saved registers; we read
    // the call's number and set its return register, which the kernel restores on return.
    unsafe {
        let saved_errno = *libc::__errno_location();
        let nr = (*(info as *const SigsysInfo)).syscall as i64;
        let uc = context as *mut libc::ucontext_t;
        #[cfg(target_arch = "x86_64")]
        {
            (*uc).uc_mcontext.gregs[libc::REG_RAX as usize] = -(libc::EPERM as i64);
        }
        #[cfg(target_arch = "aarch64")]
        {
            (*uc).uc_mcontext.regs[0] = (-(libc::EPERM as i64)) as u64;
        }
        REFUSED.fetch_add(1, Ordering::Relaxed);
        let mut line = [0u8; 128];
        let mut n = put(&mut line, 0, b"vdmount: sandbox: refused system call ");
        n = put_number(&mut line, n, nr as u64);
        let name = name(nr);
        if !name.is_empty() {
            n = put(&mut line, n, b" (");
            n = put(&mut line, n, name);
            n = put(&mut line, n, b")");
        }
        n = put(&mut line, n, b": EPERM\n");
        libc::write(2, line.as_ptr().cast(), n);
        *libc::__errno_location() = saved_errno;
    }
}

/// Installs the handler (before the filter: rt_sigaction for SIGSYS is refused after).
pub fn install() {
    // SAFETY: a handler that is async-signal-safe; plain sigaction on a zeroed struct.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigsys as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut());
    }
}
