//! `vdmount detach DEV`: stop serving a device, refusing while any of it is mounted or open
//! (naming the mount point), or with --lazy, as soon as it is released.

use super::in_use::{mounts, process_gone};
use super::record;
use super::transport::{Dev, Transport};
use crate::abuse::device::ControlDevice;
use crate::abuse::uapi::*;
use crate::error::{Error, Result};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct DetachArgs {
    /// The device: /dev/abuseN, /dev/abuseNpM, /dev/abctlN, N, or /dev/ublkbN[pM].
    #[arg(value_name = "DEV")]
    pub device: String,
    /// If the device is in use, detach it in the background as soon as it is released.
    #[arg(long)]
    pub lazy: bool,
}

/// Why the device cannot go now: its mounts, or that it is open.
fn in_use(n: u32, dev: &ControlDevice) -> Option<String> {
    if let Some(m) = mounts(Dev::abuse(n)) {
        return Some(m);
    }
    let st = dev.status().ok()?;
    (st.openers > 0)
        .then(|| format!("/dev/abuse{n} is held open ({} opener(s); see: fuser -vm /dev/abuse{n}*)", st.openers))
}

/// Stops the device: signals its live server (which removes it), or resets it directly; then
/// removes the record (the sandboxed server cannot).
fn detach_now(n: u32, dev: &ControlDevice, ctl: &std::path::Path) -> Result<()> {
    let st = dev.status().map_err(|e| Error::device(ctl, "cannot read the status", e))?;
    if st.state == ABUSE_STATE_FREE {
        record::remove(Dev::abuse(n));
        return Ok(());
    }
    if st.server_pid > 0 && std::path::Path::new(&format!("/proc/{}", st.server_pid)).exists() {
        // SAFETY: a signal to the process the kernel says serves this device.
        unsafe { libc::kill(st.server_pid, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            // Done when the device is gone and the server has exited (it holds abuse.ko until then).
            let free = dev.status().map(|s| s.state == ABUSE_STATE_FREE).unwrap_or(false);
            if free && process_gone(st.server_pid) {
                record::remove(Dev::abuse(n));
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        return Err(Error::Device(format!(
            "/dev/abuse{n}: its server (pid {}) did not remove it within 10 s; see {}",
            st.server_pid,
            record::log_path(Dev::abuse(n)).display()
        )));
    }
    dev.reset().map_err(|e| Error::device(ctl, "cannot remove the device", e))?;
    record::remove(Dev::abuse(n));
    Ok(())
}

pub fn run(args: &DetachArgs) -> Result<()> {
    let dev = Dev::parse(&args.device).ok_or_else(|| {
        Error::Usage(format!("{}: not a vdmount device (expected /dev/abuseN, /dev/ublkbN or N)", args.device))
    })?;
    if dev.transport == Transport::Ublk {
        let ctrl = super::ublk_admin::control()?;
        let in_use = || super::ublk_admin::in_use(dev);
        return when_released(dev, args.lazy, &in_use, &|| super::ublk_admin::detach_now(&ctrl, dev));
    }
    let n = dev.index;
    let ctl = dev.control();
    let ctl_dev = ControlDevice::open(&ctl).map_err(|e| Error::device(&ctl, "cannot open", e))?;
    when_released(dev, args.lazy, &|| in_use(n, &ctl_dev), &|| detach_now(n, &ctl_dev, &ctl))
}

/// Detaches now if nothing uses the device; else refuses, or with `lazy` detaches from a
/// background process as soon as it is released.
fn when_released(
    dev: Dev,
    lazy: bool,
    in_use: &dyn Fn() -> Option<String>,
    detach_now: &dyn Fn() -> Result<()>,
) -> Result<()> {
    let path = dev.path();
    match in_use() {
        None => detach_now(),
        Some(why) if !lazy => {
            Err(Error::Device(format!("{why}: unmount it first, or use vdmount detach --lazy {}", path.display())))
        }
        Some(why) => {
            // SAFETY: single-threaded here; the child only polls and detaches.
            match unsafe { libc::fork() } {
                0 => {
                    unsafe { libc::setsid() };
                    while in_use().is_some() {
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    std::process::exit(if detach_now().is_ok() { 0 } else { 1 });
                }
                -1 => Err(Error::Device(format!("cannot start the lazy detach: {}", std::io::Error::last_os_error()))),
                _ => {
                    println!("{}: {why}; it will be detached when released", path.display());
                    Ok(())
                }
            }
        }
    }
}
