//! `vdmount detach DEV`: stop serving a device, refusing while any of it is mounted or open
//! (naming the mount point), or with --lazy, as soon as it is released.

use super::record;
use crate::abuse::device::{index_from_name, ControlDevice};
use crate::abuse::uapi::*;
use crate::error::{Error, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct DetachArgs {
    /// The device: /dev/abuseN, /dev/abuseNpM, /dev/abctlN or N.
    #[arg(value_name = "DEV")]
    pub device: String,
    /// If the device is in use, detach it in the background as soon as it is released.
    #[arg(long)]
    pub lazy: bool,
}

/// "major:minor" of /dev/abuseN and each of its partitions, from sysfs.
fn device_numbers(n: u32) -> Vec<(String, String)> {
    let base = PathBuf::from(format!("/sys/block/abuse{n}"));
    let mut out = Vec::new();
    if let Ok(d) = std::fs::read_to_string(base.join("dev")) {
        out.push((d.trim().to_string(), format!("/dev/abuse{n}")));
    }
    for e in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(&format!("abuse{n}p")) {
            if let Ok(d) = std::fs::read_to_string(e.path().join("dev")) {
                out.push((d.trim().to_string(), format!("/dev/{name}")));
            }
        }
    }
    out
}

/// Why the device cannot go now: its mounts, or that it is open.
fn in_use(n: u32, dev: &ControlDevice) -> Option<String> {
    let numbers = device_numbers(n);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let (devno, point) = (f.get(2)?, f.get(4)?);
            let (_, name) = numbers.iter().find(|(d, _)| d == devno)?;
            Some(format!("{name} is mounted on {point}"))
        })
        .collect();
    if !mounts.is_empty() {
        return Some(mounts.join(", "));
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
        record::remove(n);
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
                record::remove(n);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        return Err(Error::Device(format!(
            "/dev/abuse{n}: its server (pid {}) did not remove it within 10 s; see {}",
            st.server_pid,
            record::log_path(n).display()
        )));
    }
    dev.reset().map_err(|e| Error::device(ctl, "cannot remove the device", e))?;
    record::remove(n);
    Ok(())
}

/// True once `pid` has exited (a zombie counts as exited).
fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

pub fn run(args: &DetachArgs) -> Result<()> {
    let n = index_from_name(&args.device)
        .ok_or_else(|| Error::Usage(format!("{}: not an abuse device (expected /dev/abuseN or N)", args.device)))?;
    let ctl = PathBuf::from(format!("/dev/abctl{n}"));
    let dev = ControlDevice::open(&ctl).map_err(|e| Error::device(&ctl, "cannot open", e))?;
    match in_use(n, &dev) {
        None => detach_now(n, &dev, &ctl),
        Some(why) if !args.lazy => {
            Err(Error::Device(format!("{why}: unmount it first, or use vdmount detach --lazy /dev/abuse{n}")))
        }
        Some(why) => {
            // SAFETY: single-threaded here; the child only polls and detaches.
            match unsafe { libc::fork() } {
                0 => {
                    unsafe { libc::setsid() };
                    while in_use(n, &dev).is_some() {
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    std::process::exit(if detach_now(n, &dev, &ctl).is_ok() { 0 } else { 1 });
                }
                -1 => Err(Error::Device(format!("cannot start the lazy detach: {}", std::io::Error::last_os_error()))),
                _ => {
                    println!("/dev/abuse{n}: {why}; it will be detached when released");
                    Ok(())
                }
            }
        }
    }
}
