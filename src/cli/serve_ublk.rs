//! `vdmount --transport ublk IMAGE`: the same backends served through the kernel's ublk driver.
//! The device is added here (or, with --reattach, taken over from a server that died), then
//! served by one thread per queue until a stop signal or `vdmount detach`.

use super::launch::{check_reattach, run_server, sandbox, Served};
use super::record;
use super::transport::{Dev, Transport};
use super::workers;
use crate::error::{Error, Result};
use crate::request::Stats;
use crate::ublk::ctrl::{Control, CONTROL_PATH};
use crate::ublk::server::{self, Ending};
use std::fs::File;
use std::path::Path;

pub fn run(served: &Served) -> Result<Option<Dev>> {
    let args = served.args;
    let ctrl = open_control()?;
    let recover = args.reattach;
    let id = match &args.ctldev {
        Some(p) => match Dev::parse(&p.to_string_lossy()) {
            Some(dev) if dev.transport == Transport::Ublk && recover => dev.index,
            Some(dev) if dev.transport == Transport::Ublk => {
                return Err(Error::Usage(format!(
                    "{}: vdmount makes a new ublk device itself; give a device only with --reattach",
                    p.display()
                )))
            }
            _ => return Err(Error::Usage(format!("{}: not a ublk device (/dev/ublkbN or /dev/ublkcN)", p.display()))),
        },
        None => {
            let queues = args.threads.clamp(1, u16::MAX.into()) as u16;
            server::add(&ctrl, served.backend.as_ref(), queues)
                .map_err(|e| Error::device(Path::new(CONTROL_PATH), "cannot add a ublk device", e))?
        }
    };
    let dev = Dev::ublk(id);
    if recover {
        check_reattach(Some(dev), &served.image.image, &served.mode)?;
    }
    workers::install_signal_handlers();
    if !args.quiet {
        println!("vdmount: serving through {}", Transport::Ublk.name());
    }
    let result = run_server(served, Some(dev), &dev.control(), |report| serve(served, dev, recover, report));
    if result.is_err() && !recover {
        // A device that never served is of no use to anyone.
        let _ = ctrl.stop(id);
        let _ = ctrl.delete(id);
    }
    result
}

fn open_control() -> Result<Control> {
    Control::open().map_err(|e| {
        let hint =
            if e.kind() == std::io::ErrorKind::NotFound { " (is ublk_drv loaded? modprobe ublk_drv)" } else { "" };
        Error::Device(format!("{CONTROL_PATH}: cannot open{hint}: {e}"))
    })
}

/// The serving process: its own control ring, the queues, the record and the sandbox once the
/// device is up, then the stop policy.
fn serve(served: &Served, dev: Dev, recover: bool, report: &mut dyn FnMut(i32)) -> Result<()> {
    let args = served.args;
    // Opened before harden() gives the server its own mount namespace, so it keeps seeing the
    // user's mounts (the fd holds the namespace it was opened in), and before the sandbox, which
    // forbids opening files: how a stop checks that nothing is mounted from the device.
    let mountinfo = File::open("/proc/self/mountinfo").ok();
    super::harden::harden(args.mlock);
    let ctrl = match open_control() {
        Ok(c) => c,
        Err(e) => {
            report(libc::ENODEV);
            return Err(e);
        }
    };
    let stats = Stats::default();
    let backend = served.backend.as_ref();
    let mut started = |r: &std::io::Result<()>| {
        report(r.as_ref().map_or_else(|e| e.raw_os_error().unwrap_or(libc::EIO), |_| 0));
        if r.is_ok() {
            record::save(&served.record(dev, std::process::id()));
            sandbox(args, ctrl.as_raw_fd(), true);
        }
    };
    let mut stop_now = || stop_policy(dev, mountinfo.as_ref());
    let ending = server::serve(&ctrl, dev.index, recover, backend, &stats, &mut started, &mut stop_now);
    eprintln!("vdmount: {}", stats.summary("io_uring_enter"));
    match ending.map_err(|e| Error::device(&dev.control(), "serving requests", e))? {
        Ending::Stopped => {}
        Ending::Gone => eprintln!("vdmount: {} was stopped (vdmount detach)", dev.path().display()),
    }
    backend.close()
}

/// After a stop signal: stop the device unless something is mounted from it; then say so and
/// keep serving, and on a second signal leave the device waiting for a new server.
fn stop_policy(dev: Dev, mountinfo: Option<&File>) -> bool {
    if !workers::stop_requested() {
        return false;
    }
    if !mounted(dev, mountinfo) {
        return true;
    }
    let path = dev.path();
    if workers::signals() < 2 {
        eprintln!(
            "vdmount: {} is still mounted: unmount it and stop vdmount again, or signal once more to leave it \
             waiting for a new server (vdmount --reattach {})",
            path.display(),
            path.display()
        );
        workers::clear_stop();
        return false;
    }
    eprintln!("vdmount: leaving {} to wait for a new server: vdmount --reattach {}", path.display(), path.display());
    // The kernel holds the device's requests until a new server takes over (USER_RECOVERY).
    std::process::exit(0);
}

/// Whether a filesystem of this mount namespace is mounted from the device or a partition.
fn mounted(dev: Dev, mountinfo: Option<&File>) -> bool {
    use std::os::unix::fs::FileExt;
    let Some(f) = mountinfo else { return false };
    let mut buf = vec![0u8; 1 << 20];
    // Reading from offset 0 makes the kernel list the mounts as they are now.
    let Ok(n) = f.read_at(&mut buf, 0) else { return false };
    mounted_in(&String::from_utf8_lossy(&buf[..n]), &dev.path().display().to_string())
}

/// Whether a line of mountinfo `text` mounts `disk` (/dev/ublkbN) or one of its partitions.
fn mounted_in(text: &str, disk: &str) -> bool {
    text.lines().any(|line| {
        // "... - FSTYPE SOURCE OPTIONS": the source is what was mounted.
        let source = line.split(" - ").nth(1).and_then(|rest| rest.split(' ').nth(1)).unwrap_or("");
        source == disk || source.strip_prefix(disk).is_some_and(|p| p.starts_with('p'))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_device_and_its_partitions_among_the_mounts() {
        let text = "22 1 0:21 / /proc rw - proc proc rw\n\
                    36 22 259:1 / /mnt ro,relatime shared:1 - ext4 /dev/ublkb0p1 ro\n";
        assert!(super::mounted_in(text, "/dev/ublkb0"));
        assert!(!super::mounted_in(text, "/dev/ublkb1"));
        assert!(!super::mounted_in("36 22 259:1 / /mnt ro - ext4 /dev/ublkb10 ro\n", "/dev/ublkb1"));
    }
}
