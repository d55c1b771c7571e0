//! An open /dev/abctlN: typed wrappers around the abuse.ko ioctls.

use super::uapi::*;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub const CONTROL_PATH: &str = "/dev/abuse-control";

pub struct ControlDevice {
    pub path: PathBuf,
    file: File,
    /// ABUSE_FEAT_* the module granted at setup.
    features: AtomicU64,
    /// Hardware queues the device has (1 without ABUSE_FEAT_QUEUES).
    queues: AtomicU32,
}

fn ioctl<T>(file: &File, request: u64, arg: *mut T) -> io::Result<i32> {
    // SAFETY: `request` is one of the abuse ioctls whose argument is a `T` (or none, when
    // `arg` is null); the kernel reads and writes only that struct.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), request as _, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The descriptor, for the sandbox: ioctl is allowed on it only.
impl AsRawFd for ControlDevice {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}

impl ControlDevice {
    pub fn open(path: &Path) -> io::Result<ControlDevice> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(ControlDevice { path: path.to_path_buf(), file, features: AtomicU64::new(0), queues: AtomicU32::new(1) })
    }

    /// ABUSE_SETUP. The module writes back the features it granted (a subset of those asked
    /// for); `features()` returns them afterwards.
    pub fn setup(&self, setup: &AbuseSetup) -> io::Result<()> {
        let mut s = *setup;
        ioctl(&self.file, ABUSE_SETUP, &mut s)?;
        if s.features & !setup.features != 0 {
            // A module that grants what nobody asked for does not speak this ABI.
            return Err(io::Error::from_raw_os_error(libc::EPROTO));
        }
        self.features.store(s.features, Ordering::Relaxed);
        let queues = if s.features & ABUSE_FEAT_QUEUES != 0 { s.nr_queues } else { 1 };
        if !(1..=ABUSE_MAX_QUEUES).contains(&queues) {
            return Err(io::Error::from_raw_os_error(libc::EPROTO));
        }
        self.queues.store(queues, Ordering::Relaxed);
        Ok(())
    }

    /// The device's hardware queues, as the module said at setup: each takes its own ABUSE_XFER
    /// calls (`AbuseXfer::queue`).
    pub fn queues(&self) -> u32 {
        self.queues.load(Ordering::Relaxed)
    }

    /// The optional features this module has (ABUSE_STATUS; 0 from one older than
    /// ABUSE_FEAT_QUEUES, which reports none).
    pub fn module_features(&self) -> u64 {
        self.status().map_or(0, |s| s.features)
    }

    /// The ABUSE_FEAT_* bits granted at setup (0 before it).
    pub fn features(&self) -> u64 {
        self.features.load(Ordering::Relaxed)
    }

    /// One ABUSE_XFER call. Interrupted waits come back as `ErrorKind::Interrupted`.
    pub fn xfer(&self, x: &mut AbuseXfer) -> io::Result<()> {
        ioctl(&self.file, ABUSE_XFER, x).map(|_| ())
    }

    pub fn status(&self) -> io::Result<AbuseStatus> {
        let mut s = AbuseStatus::default();
        ioctl(&self.file, ABUSE_STATUS, &mut s)?;
        Ok(s)
    }

    pub fn reset(&self) -> io::Result<()> {
        ioctl(&self.file, ABUSE_RESET, std::ptr::null_mut::<u8>()).map(|_| ())
    }
}

/// The first free device's control path, asked of /dev/abuse-control, and that open file: the
/// kernel keeps the device for it (other GET_FREE callers get another one) until it is closed,
/// so keep it until ABUSE_SETUP has returned. A module with on-demand devices creates one when
/// none is free (and removes it once it is free and closed again).
pub fn find_free() -> io::Result<(PathBuf, File)> {
    let ctl = OpenOptions::new().read(true).write(true).open(CONTROL_PATH)?;
    let n = ioctl(&ctl, ABUSE_CTL_GET_FREE, std::ptr::null_mut::<u8>())?;
    Ok((PathBuf::from(format!("/dev/abctl{n}")), ctl))
}

/// Whether the loaded abuse.ko creates devices on demand (ABUSE_CTL_ADD/REMOVE): asked by
/// removing an index that cannot exist, which changes nothing (ENODEV), where an older module
/// does not know the request (ENOTTY).
pub fn creates_on_demand() -> bool {
    let Ok(ctl) = OpenOptions::new().read(true).write(true).open(CONTROL_PATH) else { return false };
    // SAFETY: ABUSE_CTL_REMOVE takes the index as its argument, not a pointer.
    let r = unsafe { libc::ioctl(ctl.as_raw_fd(), ABUSE_CTL_REMOVE as _, libc::c_ulong::MAX) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ENOTTY)
}

/// /dev/abuseN for /dev/abctlN.
pub fn block_device_for(ctl: &Path) -> Option<PathBuf> {
    index_of(ctl).map(|n| PathBuf::from(format!("/dev/abuse{n}")))
}

/// N of /dev/abctlN.
pub fn index_of(ctl: &Path) -> Option<u32> {
    ctl.file_name()?.to_str()?.strip_prefix("abctl")?.parse().ok()
}

/// N of a device named any way a user might: N, /dev/abuseN, /dev/abuseNpM, /dev/abctlN.
pub fn index_from_name(name: &str) -> Option<u32> {
    let base = name.rsplit('/').next()?;
    let digits = base.strip_prefix("abuse").or_else(|| base.strip_prefix("abctl")).unwrap_or(base);
    let digits = digits.split('p').next()?;
    digits.parse().ok()
}
