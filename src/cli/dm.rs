//! Device-mapper devices made with the kernel's ioctls on /dev/mapper/control (no dmsetup, so the
//! static vdmount needs nothing installed): create, load a table, resume, remove. `vdmount
//! mount` maps an image's LVM volumes with these under names of its own (`vdmount-abuse0-VG-LV`),
//! never the `VG-LV` lvm uses, so a host volume group of the same name or UUID is untouched.
//! The layout mirrors <linux/dm-ioctl.h>, checked at compile time.

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;

const DM_NAME_LEN: usize = 128;

#[repr(C)]
#[derive(Clone, Copy)]
struct DmIoctl {
    version: [u32; 3],
    data_size: u32,
    data_start: u32,
    target_count: u32,
    open_count: i32,
    flags: u32,
    event_nr: u32,
    padding: u32,
    dev: u64,
    name: [u8; DM_NAME_LEN],
    uuid: [u8; 129],
    data: [u8; 7],
}

#[repr(C)]
struct DmTargetSpec {
    sector_start: u64,
    length: u64,
    status: i32,
    next: u32,
    target_type: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<DmIoctl>() == 312);
const _: () = assert!(std::mem::offset_of!(DmIoctl, dev) == 40);
const _: () = assert!(std::mem::offset_of!(DmIoctl, uuid) == 176);
const _: () = assert!(std::mem::size_of::<DmTargetSpec>() == 40);

const HDR: usize = std::mem::size_of::<DmIoctl>();
/// The interface version we speak: 4.x (the kernel refuses another major, or a newer minor).
const DM_VERSION: [u32; 3] = [4, 0, 0];
const DM_READONLY_FLAG: u32 = 1 << 0;

/// _IOWR(0xfd, nr, struct dm_ioctl).
const fn dm_iowr(nr: u64) -> u64 {
    (3 << 30) | ((HDR as u64) << 16) | (0xfd << 8) | nr
}
const DM_DEV_CREATE: u64 = dm_iowr(3);
const DM_DEV_REMOVE: u64 = dm_iowr(4);
const DM_DEV_SUSPEND: u64 = dm_iowr(6);
const DM_TABLE_LOAD: u64 = dm_iowr(9);

/// One call: the header for `name`, then `payload`; returns the kernel's header.
fn call(cmd: u64, name: &str, flags: u32, targets: u32, payload: &[u8]) -> io::Result<DmIoctl> {
    if name.len() >= DM_NAME_LEN || name.contains('/') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("device-mapper name {name:?} is not valid")));
    }
    let ctl = File::options().read(true).write(true).open("/dev/mapper/control").map_err(|e| {
        io::Error::new(e.kind(), format!("/dev/mapper/control: {e} (is dm-mod loaded? modprobe dm-mod)"))
    })?;
    // u64 words keep the buffer aligned as the kernel's structs are.
    let words = (HDR + payload.len()).div_ceil(8) + 512;
    let mut buf = vec![0u64; words];
    let mut h = DmIoctl {
        version: DM_VERSION,
        data_size: (words * 8) as u32,
        data_start: HDR as u32,
        target_count: targets,
        open_count: 0,
        flags,
        event_nr: 0,
        padding: 0,
        dev: 0,
        name: [0; DM_NAME_LEN],
        uuid: [0; 129],
        data: [0; 7],
    };
    h.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: the buffer holds at least HDR + payload bytes; DmIoctl is plain data.
    unsafe {
        let p = buf.as_mut_ptr().cast::<u8>();
        std::ptr::write_unaligned(p.cast::<DmIoctl>(), h);
        std::ptr::copy_nonoverlapping(payload.as_ptr(), p.add(HDR), payload.len());
    }
    // SAFETY: the kernel reads and writes at most data_size bytes of `buf`.
    let r = unsafe { libc::ioctl(ctl.as_raw_fd(), cmd as _, buf.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel left a header at the start.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<DmIoctl>()) })
}

/// The target specs of a table: each a header, its parameters NUL-terminated, padded to 8 bytes.
fn table_payload(lines: &[(u64, u64, &str, String)]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    for (start, len, target, params) in lines {
        if target.len() >= 16 || params.contains('\0') {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let size = (40 + params.len() + 1).div_ceil(8) * 8;
        let mut spec = vec![0u8; size];
        spec[0..8].copy_from_slice(&start.to_ne_bytes());
        spec[8..16].copy_from_slice(&len.to_ne_bytes());
        spec[20..24].copy_from_slice(&(size as u32).to_ne_bytes());
        spec[24..24 + target.len()].copy_from_slice(target.as_bytes());
        spec[40..40 + params.len()].copy_from_slice(params.as_bytes());
        out.extend_from_slice(&spec);
    }
    Ok(out)
}

/// Creates device `name` with `table` ((start, length, target, parameters) in sectors), read-only
/// if asked (the kernel then opens the devices below read-only too); returns its node /dev/dm-N.
pub fn create(name: &str, table: &[(u64, u64, &str, String)], read_only: bool) -> io::Result<PathBuf> {
    let payload = table_payload(table)?;
    let made = call(DM_DEV_CREATE, name, 0, 0, &[])?;
    let ro = if read_only { DM_READONLY_FLAG } else { 0 };
    let loaded = call(DM_TABLE_LOAD, name, ro, table.len() as u32, &payload)
        // No DM_SUSPEND_FLAG: resume, which makes the loaded table live.
        .and_then(|_| call(DM_DEV_SUSPEND, name, 0, 0, &[]));
    if let Err(e) = loaded {
        let _ = remove(name);
        return Err(e);
    }
    // The kernel encodes dev_t as new_encode_dev; dm's nodes are named after the minor.
    let minor = (made.dev & 0xff) | ((made.dev >> 12) & !0xff);
    let node = PathBuf::from(format!("/dev/dm-{minor}"));
    for _ in 0..100 {
        if node.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(node)
}

/// Removes device `name`.
pub fn remove(name: &str) -> io::Result<()> {
    call(DM_DEV_REMOVE, name, 0, 0, &[]).map(|_| ())
}

/// The names of the device-mapper devices that exist, with their nodes (/dev/dm-N).
pub fn list() -> Vec<(String, PathBuf)> {
    let Ok(dir) = std::fs::read_dir("/sys/block") else { return Vec::new() };
    let mut out: Vec<(String, PathBuf)> = dir
        .flatten()
        .filter_map(|e| {
            let block = e.file_name().to_string_lossy().into_owned();
            let name = std::fs::read_to_string(e.path().join("dm/name")).ok()?;
            Some((name.trim_end().to_string(), PathBuf::from(format!("/dev/{block}"))))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn ioctl_numbers_match_the_kernel() {
        // From <linux/dm-ioctl.h> as the kernel headers expand them.
        assert_eq!(super::DM_DEV_CREATE, 0xc138fd03);
        assert_eq!(super::DM_TABLE_LOAD, 0xc138fd09);
        let p = super::table_payload(&[(0, 8, "linear", "/dev/x 0".into())]).unwrap();
        assert_eq!(p.len(), 56);
        assert_eq!(u32::from_ne_bytes(p[20..24].try_into().unwrap()), 56);
    }
}
