//! Once the device is set up, the server needs only a few system calls: to answer requests
//! (ioctl, pread, pwrite, fdatasync), to run its threads and manage memory, and to report and
//! clean up. A seccomp filter allows just those; anything else (open, execve, socket, ...)
//! fails with EPERM, so a bug in an image parser cannot be turned into much.
//!
//! Refused calls fail instead of killing the server: a server that dies leaves the device
//! waiting for a new one, which is worse for the user than one failed request.

use seccompiler::{apply_filter, BpfProgram, SeccompAction, SeccompFilter};
use std::collections::BTreeMap;

/// The system calls the service loop and its threads make (x86_64 and aarch64 names via libc).
const ALLOWED: &[libc::c_long] = &[
    // answering requests
    libc::SYS_ioctl,
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
    // memory
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    // threads, signals, time
    libc::SYS_futex,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_tgkill,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_getrandom,
    libc::SYS_prctl,
    // reporting and cleaning up: stat and remove /run/vdmount/abuseN, close, exit
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_fstat,
    libc::SYS_unlinkat,
    libc::SYS_close,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// Applies the filter to this thread and every thread it starts later.
pub fn restrict() -> Result<(), String> {
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = ALLOWED.iter().map(|&nr| (nr, Vec::new())).collect();
    let arch = std::env::consts::ARCH.try_into().map_err(|e| format!("{e:?}"))?;
    let filter = SeccompFilter::new(rules, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow, arch)
        .map_err(|e| e.to_string())?;
    let program: BpfProgram = filter.try_into().map_err(|e: seccompiler::BackendError| e.to_string())?;
    apply_filter(&program).map_err(|e| e.to_string())
}
