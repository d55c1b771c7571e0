//! `list` and `detach` for ublk devices: their state comes from the kernel (GET_DEV_INFO), the
//! image and mode from the record their server left in /run/vdmount.

use super::in_use::{mounts, process_gone};
use super::record;
use super::transport::Dev;
use crate::error::{Error, Result};
use crate::ublk::ctrl::{Control, CONTROL_PATH};
use crate::ublk::server;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

pub fn control() -> Result<Control> {
    Control::open().map_err(|e| Error::Device(format!("{CONTROL_PATH}: cannot open: {e}")))
}

/// Why the device cannot go now: its mounts, or another exclusive holder (device mapper, md).
pub fn in_use(dev: Dev) -> Option<String> {
    if let Some(m) = mounts(dev) {
        return Some(m);
    }
    let path = dev.path();
    match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_EXCL).open(&path) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            Some(format!("{} is held open (see: fuser -vm {}*)", path.display(), path.display()))
        }
        _ => None,
    }
}

/// Stops the device (its server, if alive, sees its queues end and exits), then deletes it
/// once the server has let go, and removes the record.
pub fn detach_now(ctrl: &Control, dev: Dev) -> Result<()> {
    let ctl = dev.control();
    let info = ctrl.info(dev.index).map_err(|e| Error::device(&ctl, "cannot read the device's state", e))?;
    ctrl.stop(dev.index).map_err(|e| Error::device(&ctl, "cannot stop the device", e))?;
    let start = Instant::now();
    while info.ublksrv_pid > 0 && !process_gone(info.ublksrv_pid) {
        if start.elapsed() > Duration::from_secs(10) {
            return Err(Error::Device(format!(
                "{}: its server (pid {}) did not exit within 10 s; see {}",
                dev.path().display(),
                info.ublksrv_pid,
                record::log_path(dev).display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ctrl.delete(dev.index).map_err(|e| Error::device(&ctl, "cannot delete the device", e))?;
    record::remove(dev);
    Ok(())
}

/// One ublk device for `list`.
pub struct Row {
    pub dev: Dev,
    pub state: &'static str,
    pub mode: String,
    pub size: u64,
    pub server_pid: i32,
    pub server_alive: bool,
    pub image: Option<String>,
}

/// Every ublk device (from /sys/block/ublkbN), with what the kernel and the record say.
pub fn rows() -> Vec<Row> {
    let Ok(ctrl) = Control::open() else { return Vec::new() };
    let mut ids: Vec<u32> = std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("ublkb")?.parse().ok())
        .collect();
    ids.sort();
    ids.into_iter()
        .filter_map(|id| {
            let info = ctrl.info(id).ok()?;
            let dev = Dev::ublk(id);
            let rec = record::load(dev);
            let size = std::fs::read_to_string(format!("/sys/block/{}/size", dev.name()))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map_or(0, |sectors| sectors * 512);
            Some(Row {
                dev,
                state: server::state_name(info.state),
                mode: rec.as_ref().map_or("-".into(), |r| r.mode.clone()),
                size,
                server_pid: info.ublksrv_pid,
                server_alive: info.ublksrv_pid > 0 && !process_gone(info.ublksrv_pid),
                image: rec.map(|r| r.image.display().to_string()),
            })
        })
        .collect()
}
