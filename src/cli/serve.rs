//! `vdmount IMAGE [CTLDEV]`: serve IMAGE read-only on /dev/abuseN until SIGINT or SIGTERM.

use super::ImageArgs;
use crate::abuse::device::{self, ControlDevice};
use crate::abuse::server;
use crate::abuse::uapi::*;
use crate::error::{Error, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

#[derive(clap::Args, Default)]
pub struct ServeArgs {
    #[command(flatten)]
    pub image: Option<ImageArgs>,
    /// Control device to serve on (default: the first free /dev/abctlN).
    #[arg(value_name = "CTLDEV")]
    pub ctldev: Option<PathBuf>,
}

static STOP: AtomicBool = AtomicBool::new(false);
static SIGNALS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches atomics. No SA_RESTART, so a waiting ABUSE_XFER
        // returns EINTR and the loop sees STOP.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

fn device_error(ctl: &std::path::Path, what: &str, e: std::io::Error) -> Error {
    let hint = match e.raw_os_error() {
        Some(libc::ENOENT) => " (is abuse.ko loaded? try: modprobe abuse)",
        Some(libc::EBUSY) => " (another server is using it; pick another /dev/abctlN or omit CTLDEV)",
        Some(libc::EACCES) | Some(libc::EPERM) => " (serving a block device needs root)",
        _ => "",
    };
    Error::Usage(format!("{}: {what}: {e}{hint}", ctl.display()))
}

pub fn run(args: &ServeArgs) -> Result<()> {
    let Some(image) = &args.image else {
        return Err(Error::Usage("no IMAGE given; see vdmount --help".into()));
    };
    let disk = image.open()?;
    let ctl = match &args.ctldev {
        Some(p) => p.clone(),
        None => device::find_free()
            .map_err(|e| device_error(std::path::Path::new(device::CONTROL_PATH), "cannot find a free device", e))?,
    };
    let dev = ControlDevice::open(&ctl).map_err(|e| device_error(&ctl, "cannot open", e))?;
    let block_size = disk.logical_sector_size();
    let size = disk.virtual_size().div_ceil(block_size as u64) * block_size as u64;
    let setup = AbuseSetup {
        version: ABUSE_ABI_VERSION,
        flags: ABUSE_FLAG_READ_ONLY,
        size,
        block_size,
        queue_depth: server::QUEUE_DEPTH,
        max_io_bytes: server::MAX_IO_BYTES,
        ..Default::default()
    };
    install_signal_handlers();
    dev.setup(&setup).map_err(|e| device_error(&ctl, "cannot set up the device", e))?;
    let bdev = device::block_device_for(&ctl).map(|p| p.display().to_string()).unwrap_or_else(|| "the device".into());
    eprintln!("vdmount: serving {} on {bdev} (read-only); stop with Ctrl-C", image.image.display());

    loop {
        server::serve(&dev, &disk, &STOP).map_err(|e| device_error(&ctl, "serving requests", e))?;
        match dev.reset() {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && SIGNALS.load(Ordering::SeqCst) < 2 => {
                eprintln!(
                    "vdmount: {bdev} is still open (mounted?); unmount it and stop vdmount again, \
                     or signal once more to leave it waiting for a new server"
                );
                STOP.store(false, Ordering::SeqCst);
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                eprintln!("vdmount: leaving {bdev} to wait for a new server (vdmount IMAGE {})", ctl.display());
                return Ok(());
            }
            Err(e) => return Err(device_error(&ctl, "cannot reset the device", e)),
        }
    }
}
