//! `vdmount IMAGE [CTLDEV]`: serve IMAGE on /dev/abuseN until SIGINT or SIGTERM, read-only
//! unless --cow.

use super::ImageArgs;
use crate::abuse::backend::{Backend, ReadOnly};
use crate::abuse::device::{self, ControlDevice};
use crate::abuse::server::{self, Stats};
use crate::abuse::uapi::*;
use crate::cow::CowOverlay;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

#[derive(clap::Args, Default)]
pub struct ServeArgs {
    #[command(flatten)]
    pub image: Option<ImageArgs>,
    /// Control device to serve on (default: the first free /dev/abctlN).
    #[arg(value_name = "CTLDEV")]
    pub ctldev: Option<PathBuf>,
    /// Accept writes into an ephemeral overlay (an unlinked temporary file in $TMPDIR) that is
    /// gone when the server stops; the image itself is never written.
    #[arg(long)]
    pub cow: bool,
    /// Take over CTLDEV from a server that died (kill -9, OOM): the new server must serve the
    /// same size and mode; requests the old one left unanswered are served by this one.
    #[arg(long, requires = "ctldev")]
    pub reattach: bool,
    /// Worker threads answering requests.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub threads: u32,
    /// Seconds the device waits for a new server if this one dies, before failing I/O
    /// (default: the module's reconnect_timeout_ms).
    #[arg(long, value_name = "SECONDS")]
    pub reconnect_timeout: Option<u32>,
}

static STOP: AtomicBool = AtomicBool::new(false);
static SIGNALS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// SIGUSR1 only interrupts a worker's wait in the kernel, so it sees STOP.
extern "C" fn on_wake_signal(_: libc::c_int) {}

fn set_handler(sig: libc::c_int, handler: extern "C" fn(libc::c_int)) {
    // SAFETY: the handlers only touch atomics. No SA_RESTART, so a waiting ABUSE_XFER returns
    // EINTR and the loop looks at STOP.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Workers leave SIGINT and SIGTERM to the main thread.
fn block_stop_signals_in_this_thread() {
    // SAFETY: plain signal-mask calls on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

pub fn device_error(ctl: &Path, what: &str, e: std::io::Error) -> Error {
    let hint = match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENXIO) if ctl.starts_with("/dev") => {
            " (is abuse.ko loaded? try: modprobe abuse)"
        }
        Some(libc::EBUSY) => " (another server is using it; pick another /dev/abctlN, or omit CTLDEV)",
        Some(libc::EACCES) | Some(libc::EPERM) => " (serving a block device needs root)",
        Some(libc::EINVAL) => " (for --reattach: the size and mode must be the first server's)",
        Some(libc::ENODEV) => " (nothing to reattach to: start without --reattach)",
        _ => "",
    };
    Error::Device(format!("{}: {what}: {e}{hint}", ctl.display()))
}

/// Runs `threads` copies of the service loop until STOP; the caller's thread is one of them.
fn serve_with_workers(dev: &ControlDevice, backend: &dyn Backend, threads: u32, stats: &Stats) -> std::io::Result<()> {
    let worker_ids = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let workers: Vec<_> = (1..threads)
            .map(|_| {
                s.spawn(|| {
                    block_stop_signals_in_this_thread();
                    // SAFETY: pthread_self has no preconditions.
                    worker_ids.lock().unwrap().push(unsafe { libc::pthread_self() });
                    server::serve(dev, backend, &STOP, stats)
                })
            })
            .collect();
        let mut result = server::serve(dev, backend, &STOP, stats);
        STOP.store(true, Ordering::SeqCst);
        // Interrupt the workers' waits until every one has seen STOP (a worker may only now be
        // entering its wait, so once is not enough).
        while !workers.iter().all(|w| w.is_finished()) {
            for &id in worker_ids.lock().unwrap().iter() {
                // SAFETY: the ids are of threads in this scope, which outlive the loop; SIGUSR1
                // has a no-op handler.
                unsafe { libc::pthread_kill(id, libc::SIGUSR1) };
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for w in workers {
            let r = w.join().unwrap_or_else(|_| Err(std::io::Error::other("a worker thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}

pub fn run(args: &ServeArgs) -> Result<()> {
    let Some(image) = &args.image else {
        return Err(Error::Usage("no IMAGE given; see vdmount --help".into()));
    };
    let disk = image.open()?;
    let backend: Box<dyn Backend> = if args.cow {
        Box::new(CowOverlay::new(disk, None)?)
    } else {
        Box::new(ReadOnly(disk))
    };
    let ctl = match &args.ctldev {
        Some(p) => p.clone(),
        None => device::find_free().map_err(|e| device_error(Path::new(device::CONTROL_PATH), "cannot find a free device", e))?,
    };
    let dev = ControlDevice::open(&ctl).map_err(|e| device_error(&ctl, "cannot open", e))?;
    let block_size = backend.block_size();
    let size = backend.size().div_ceil(block_size as u64) * block_size as u64;
    let mut flags = if backend.writable() {
        ABUSE_FLAG_FLUSH | ABUSE_FLAG_FUA | ABUSE_FLAG_DISCARD | ABUSE_FLAG_WRITE_ZEROES
    } else {
        ABUSE_FLAG_READ_ONLY
    };
    if args.reattach {
        flags |= ABUSE_FLAG_RECONNECT;
    }
    let setup = AbuseSetup {
        version: ABUSE_ABI_VERSION,
        flags,
        size,
        block_size,
        queue_depth: server::QUEUE_DEPTH,
        max_io_bytes: server::MAX_IO_BYTES,
        reconnect_timeout_ms: args.reconnect_timeout.map_or(0, |s| s.saturating_mul(1000)),
        ..Default::default()
    };
    set_handler(libc::SIGINT, on_stop_signal);
    set_handler(libc::SIGTERM, on_stop_signal);
    set_handler(libc::SIGUSR1, on_wake_signal);
    dev.setup(&setup).map_err(|e| device_error(&ctl, "cannot set up the device", e))?;
    let bdev = device::block_device_for(&ctl).map(|p| p.display().to_string()).unwrap_or_else(|| "the device".into());
    let mode = if args.cow { "copy-on-write: writes go to a temporary overlay" } else { "read-only" };
    eprintln!("vdmount: serving {} on {bdev} ({mode}); stop with Ctrl-C", image.image.display());

    let stats = Stats::default();
    loop {
        let served = serve_with_workers(&dev, backend.as_ref(), args.threads, &stats);
        eprintln!("vdmount: {}", stats.summary());
        served.map_err(|e| device_error(&ctl, "serving requests", e))?;
        match dev.reset() {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && SIGNALS.load(Ordering::SeqCst) < 2 => {
                eprintln!(
                    "vdmount: {bdev} is still open (mounted?): unmount it and stop vdmount again, \
                     or signal once more to leave it waiting for a new server (vdmount --reattach IMAGE {})",
                    ctl.display()
                );
                STOP.store(false, Ordering::SeqCst);
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                eprintln!("vdmount: leaving {bdev} to wait for a new server: vdmount --reattach IMAGE {}", ctl.display());
                return Ok(());
            }
            Err(e) => return Err(device_error(&ctl, "cannot reset the device", e)),
        }
    }
}
