//! The server's capabilities, dropped once the device is set up: what it does from then on
//! (ioctl on its already open control device, pread/pwrite/fdatasync on already open files,
//! writing its log) needs none. Only with --mlock does it keep CAP_IPC_LOCK: with MCL_FUTURE,
//! every later allocation is locked too, which without it counts against RLIMIT_MEMLOCK.

const CAP_IPC_LOCK: u32 = 14;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Empties the bounding and ambient sets, then the effective, permitted and inheritable sets
/// (keeping CAP_IPC_LOCK if `keep_ipc_lock`). Per thread: called before any worker starts, so
/// every thread the server creates later inherits the empty sets.
pub fn drop_all(keep_ipc_lock: bool) -> Result<(), String> {
    // SAFETY: prctl and capset with constant arguments and pointers to locals.
    unsafe {
        for cap in 0..64 {
            if !(keep_ipc_lock && cap == CAP_IPC_LOCK) {
                // EINVAL past the kernel's last capability: nothing to drop there.
                libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
            }
        }
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0);
        let mut header = Header { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
        let mut data = [Data::default(); 2];
        if keep_ipc_lock {
            data[0].effective = 1 << CAP_IPC_LOCK;
            data[0].permitted = 1 << CAP_IPC_LOCK;
        }
        if libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_mut_ptr()) != 0 {
            return Err(format!("cannot drop capabilities: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}
