//! Once the device is set up, the server needs only a few system calls: to answer requests
//! (ioctl on its control device, pread, pwrite, fdatasync), to run its threads and manage
//! memory, and to report. A seccomp filter, on every thread, allows just those, several only
//! with the arguments the server uses; anything else (open, execve, socket, unlink, ...) fails
//! with EPERM and is logged (trap.rs). The server also gives up its capabilities (caps.rs).
//!
//! Refused calls fail instead of killing the server: a server that dies leaves the device
//! waiting for a new one, which is worse for the user than one failed request.

mod caps;
mod network;
pub mod probe;
mod trap;

use seccompiler::{
    apply_filter_all_threads, BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op,
    SeccompCondition as Cond, SeccompFilter, SeccompRule,
};
use std::collections::BTreeMap;
use std::os::fd::RawFd;

/// System calls allowed with any arguments (x86_64 and aarch64 names via libc).
const ALLOWED: &[libc::c_long] = &[
    // answering requests (on descriptors opened before the filter)
    libc::SYS_pread64,
    libc::SYS_preadv,
    libc::SYS_pwrite64,
    libc::SYS_pwritev,
    libc::SYS_fdatasync,
    libc::SYS_fsync,
    libc::SYS_fallocate,
    libc::SYS_ftruncate,
    libc::SYS_lseek,
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_writev,
    // memory (mmap and mprotect: see `restrict`)
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    // threads, signals, time
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_tgkill,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    // The kernel resumes a sleep a signal interrupted (SIGTERM during the stop check's 100 ms
    // sleep, a stop signal) through restart_syscall; refusing it made std's sleep panic.
    libc::SYS_restart_syscall,
    libc::SYS_sigaltstack,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_getrandom,
    // reporting: stat of the new /dev/abuseN nodes (the --foreground report), close, exit
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_fstat,
    libc::SYS_close,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// The abuse.ko requests a set-up server makes (server.rs, workers.rs): answer and fetch
/// requests, and remove the device at a stop. Not ABUSE_SETUP (made before), ABUSE_STATUS (only
/// `list` and `detach` ask) nor ABUSE_CTL_GET_FREE (another device).
const IOCTLS: &[u64] = &[crate::abuse::uapi::ABUSE_XFER, crate::abuse::uapi::ABUSE_RESET];

/// Flags every thread-creating clone carries (glibc's and musl's pthread_create); a clone without
/// them would be a new process, and none of the namespace flags may be set.
const THREAD_FLAGS: u64 =
    (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND | libc::CLONE_THREAD) as u64;
const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP) as u64;

fn cond(arg: u8, len: Len, op: Op, value: u64) -> Result<Cond, String> {
    Cond::new(arg, len, op, value).map_err(|e| e.to_string())
}

fn rule(conds: Vec<Cond>) -> Result<SeccompRule, String> {
    SeccompRule::new(conds).map_err(|e| e.to_string())
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, String> {
    let arch = std::env::consts::ARCH.try_into().map_err(|e| format!("{e:?}"))?;
    let filter = SeccompFilter::new(rules, mismatch, matched, arch).map_err(|e| e.to_string())?;
    filter.try_into().map_err(|e: seccompiler::BackendError| e.to_string())
}

/// The main filter: the allowlist, and argument checks on ioctl, clone, mmap, mprotect and
/// rt_sigaction. Everything else traps (trap.rs: logged, fails with EPERM).
fn main_filter(ctl_fd: RawFd, io_uring: bool) -> Result<BpfProgram, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED.iter().map(|&nr| (nr, Vec::new())).collect();
    if io_uring {
        // Only on rings made before the sandbox and restricted to passthrough commands
        // (ublk/ring.rs): io_uring_setup and io_uring_register stay forbidden.
        rules.insert(libc::SYS_io_uring_enter, Vec::new());
    }
    // ioctl: only the abuse requests, only on the control device.
    let ioctl = IOCTLS
        .iter()
        .map(|&cmd| {
            rule(vec![cond(0, Len::Dword, Op::Eq, ctl_fd as u64)?, cond(1, Len::Dword, Op::Eq, cmd & 0xffff_ffff)?])
        })
        .collect::<Result<_, _>>()?;
    rules.insert(libc::SYS_ioctl, ioctl);
    if crate::source::remote::in_use() {
        network::allow(&mut rules)?;
    }
    // clone: threads only.
    rules.insert(
        libc::SYS_clone,
        vec![rule(vec![cond(0, Len::Qword, Op::MaskedEq(THREAD_FLAGS | NAMESPACE_FLAGS), THREAD_FLAGS)?])?],
    );
    // clone3's flags are behind a pointer the filter cannot read: allowed here, made to fail
    // with ENOSYS by the second filter, so the C library falls back to clone.
    rules.insert(libc::SYS_clone3, Vec::new());
    // No executable memory: nothing the server does needs new code.
    let no_exec = || rule(vec![cond(2, Len::Dword, Op::MaskedEq(libc::PROT_EXEC as u64), 0)?]);
    rules.insert(libc::SYS_mmap, vec![no_exec()?]);
    rules.insert(libc::SYS_mprotect, vec![no_exec()?]);
    // Signal handlers may change, except SIGSYS's: it is what refuses and logs.
    rules.insert(libc::SYS_rt_sigaction, vec![rule(vec![cond(0, Len::Dword, Op::Ne, libc::SIGSYS as u64)?])?]);
    compile(rules, SeccompAction::Trap, SeccompAction::Allow)
}

/// clone3 fails with ENOSYS (not trapped: the C library tries it for every new thread).
fn clone3_filter() -> Result<BpfProgram, String> {
    compile(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
    )
}

/// Drops capabilities, installs the SIGSYS handler, then applies both filters to every thread
/// of the process (TSYNC). `ctl_fd` is the control device; `mlock`: the server locked its
/// memory and keeps CAP_IPC_LOCK, which memory it maps later still needs.
pub fn restrict(ctl_fd: RawFd, mlock: bool, io_uring: bool) -> Result<(), String> {
    let clone3 = clone3_filter()?;
    let main = main_filter(ctl_fd, io_uring)?;
    caps::drop_all(mlock)?;
    trap::install();
    // clone3's filter first: once the main one is on, seccomp() itself is refused. Of two
    // filters the kernel takes the stricter answer, so clone3 gets ENOSYS.
    apply_filter_all_threads(&clone3).map_err(|e| e.to_string())?;
    apply_filter_all_threads(&main).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// In a forked child (the filter is for life): forbidden calls fail with EPERM and the
    /// process goes on; allowed ones reach the kernel; threads still start.
    #[test]
    fn refuses_with_eperm_and_keeps_running() {
        let ctl = std::fs::File::open("/dev/null").unwrap();
        let other = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: the child only makes system calls and starts one thread, then _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = (|| unsafe {
                if restrict(ctl.as_raw_fd(), false, false).is_err() {
                    return 10;
                }
                if libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY) != -1 || errno() != libc::EPERM {
                    return 11;
                }
                // An abuse ioctl on the control fd reaches the driver (/dev/null: ENOTTY)...
                let xfer = crate::abuse::uapi::ABUSE_XFER;
                if libc::ioctl(ctl.as_raw_fd(), xfer as _, 0) != -1 || errno() != libc::ENOTTY {
                    return 12;
                }
                // ...not on another fd, nor another request.
                if libc::ioctl(other.as_raw_fd(), xfer as _, 0) != -1 || errno() != libc::EPERM {
                    return 13;
                }
                if libc::ioctl(ctl.as_raw_fd(), libc::FIONREAD as _, 0) != -1 || errno() != libc::EPERM {
                    return 14;
                }
                let exec = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if exec != libc::MAP_FAILED || errno() != libc::EPERM {
                    return 15;
                }
                if std::thread::spawn(|| 7).join().ok() != Some(7) {
                    return 16;
                }
                if libc::unlinkat(libc::AT_FDCWD, c"/nonexistent".as_ptr(), 0) != -1 || errno() != libc::EPERM {
                    return 17;
                }
                if trap::REFUSED.load(std::sync::atomic::Ordering::Relaxed) != 5 {
                    return 18;
                }
                0
            })();
            // SAFETY: leaves the child without running the test harness's exit path.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "the sandboxed child was killed: status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0, "check {} failed (see the test)", libc::WEXITSTATUS(status));
    }
}
