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
        } else if libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            warn("cannot make the server's mounts private");
        } else {
            drop_abuse_mounts();
        }
        if mlock && libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) != 0 {
            warn("cannot lock the server's memory (--mlock; check ulimit -l)");
        }
    }
}

/// The new namespace starts as a copy of the old one, so a server started while an abuse
/// device is mounted (a reattach) holds its own copy of that mount, and the device could never
/// be released. Detach every such copy in our namespace; the user's mounts are untouched.
fn drop_abuse_mounts() {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    // Mount points of filesystems whose source is an abuse device, deepest first.
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let source = right.split(' ').nth(1)?;
            (source.starts_with("/dev/abuse") || source.starts_with("/dev/ublkb"))
                .then(|| left.split(' ').nth(4))
                .flatten()
        })
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        // Mount points with spaces are octal-escaped in mountinfo; unescape \040 etc.
        let path = unescape(p);
        if let Ok(c) = std::ffi::CString::new(path) {
            // SAFETY: a path string; MNT_DETACH in our private namespace only.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

pub(super) fn unescape(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn warn(what: &str) {
    eprintln!("vdmount: warning: {what}: {}", std::io::Error::last_os_error());
}
