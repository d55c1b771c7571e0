//! What a server reading a remote image (src/source/remote/) needs on top of the allowlist:
//! new TCP connections for its pool (after a reset, or when more requests run at once) and
//! their reads and writes. Only IPv4 and IPv6 stream sockets; no name lookups (host names were
//! resolved before the sandbox, resolver.rs), no listening, no other socket families. Added only
//! when a layer is remote: a local image's server keeps the plain filter.

use super::{cond, rule};
use seccompiler::{SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompRule};
use std::collections::BTreeMap;

/// System calls a TCP or TLS connection makes once it exists.
const CONNECTION: &[libc::c_long] = &[
    libc::SYS_connect,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_shutdown,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_fcntl,
];

/// Adds the network rules to `rules`; `ioctl` already holds the abuse requests' rules.
pub fn allow(rules: &mut BTreeMap<i64, Vec<SeccompRule>>) -> Result<(), String> {
    fix_malloc_arenas();
    for &nr in CONNECTION {
        rules.insert(nr, Vec::new());
    }
    // socket: IPv4 or IPv6 only (any type flags: SOCK_STREAM | SOCK_CLOEXEC).
    let family = |f: i32| rule(vec![cond(0, Len::Dword, Op::Eq, f as u64)?]);
    rules.insert(libc::SYS_socket, vec![family(libc::AF_INET)?, family(libc::AF_INET6)?]);
    // The standard library makes a socket non-blocking (connect with a timeout) with FIONBIO.
    let fionbio = rule(vec![cond(1, Len::Dword, Op::Eq, libc::FIONBIO)?])?;
    rules.entry(libc::SYS_ioctl).or_default().push(fionbio);
    Ok(())
}

/// A remote read starts short-lived threads for its parallel pieces under the sandbox. The first
/// time glibc's malloc wants more than 8 arenas it counts the CPUs by opening
/// /sys/devices/system/cpu/online (then /proc/stat), which the filter refuses: set its limit
/// now, to glibc's own default (8 per CPU), so it never has to look.
fn fix_malloc_arenas() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: mallopt only sets a malloc parameter.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, (8 * cpus).min(1024) as libc::c_int) };
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    /// In a forked child with a remote layer open: new TCP connections (with a connect timeout,
    /// so non-blocking mode and poll) work under the filter; a Unix socket and open() do not.
    #[test]
    fn remote_server_connects_but_nothing_more() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let ctl = std::fs::File::open("/dev/null").unwrap();
        crate::source::remote::mark_in_use();
        // SAFETY: the child makes system calls and uses std networking, then _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = (|| {
                if crate::cli::sandbox::restrict(ctl.as_raw_fd(), false, false).is_err() {
                    return 10;
                }
                for _ in 0..3 {
                    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
                    else {
                        return 11;
                    };
                    let _ = s.set_nodelay(true);
                    if s.set_read_timeout(Some(std::time::Duration::from_secs(5))).is_err() {
                        return 12;
                    }
                    let mut b = [0u8; 4];
                    if s.write_all(b"ping").is_err() || s.read_exact(&mut b).is_err() || &b != b"pong" {
                        return 13;
                    }
                }
                // SAFETY: plain system calls with constant arguments.
                unsafe {
                    if libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) != -1 {
                        return 14;
                    }
                    if libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY) != -1 {
                        return 15;
                    }
                }
                0
            })();
            // SAFETY: leaves the child without running the test harness's exit path.
            unsafe { libc::_exit(code) };
        }
        for _ in 0..3 {
            let (mut s, _) = listener.accept().unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).unwrap();
            s.write_all(b"pong").unwrap();
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "the sandboxed child was killed: status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0, "check {} failed (see the test)", libc::WEXITSTATUS(status));
    }
}
