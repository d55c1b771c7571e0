//! The server's threads: `threads` copies of the service loop on one device, the signals that
//! stop them (SIGINT, SIGTERM) and wake them (SIGUSR1), and what happens at a stop.

use crate::abuse::device::{self, ControlDevice};
use crate::abuse::server;
use crate::error::{Error, Result};
use crate::overlay::Backend;
use crate::request::Stats;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

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

/// A stop signal came (and was not cleared since).
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Stop signals received so far.
pub fn signals() -> u32 {
    SIGNALS.load(Ordering::SeqCst)
}

/// Keeps serving after a stop signal (the device could not be removed).
pub fn clear_stop() {
    STOP.store(false, Ordering::SeqCst);
}

pub fn install_signal_handlers() {
    set_handler(libc::SIGINT, on_stop_signal);
    set_handler(libc::SIGTERM, on_stop_signal);
    set_handler(libc::SIGUSR1, on_wake_signal);
}

/// Runs `threads` copies of the service loop until STOP; the caller's thread is one of them.
/// Thread i serves hardware queue i (modulo the device's queues: every queue has a thread, as
/// the server asked for one queue per thread).
fn serve_with_workers(dev: &ControlDevice, backend: &dyn Backend, threads: u32, stats: &Stats) -> std::io::Result<()> {
    let worker_ids = std::sync::Mutex::new(Vec::new());
    let queues = dev.queues().max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = (1..threads.max(queues))
            .map(|i| {
                let worker_ids = &worker_ids;
                s.spawn(move || {
                    block_stop_signals_in_this_thread();
                    // SAFETY: pthread_self has no preconditions.
                    worker_ids.lock().unwrap().push(unsafe { libc::pthread_self() });
                    server::serve(dev, i % queues, backend, &STOP, stats)
                })
            })
            .collect();
        let mut result = server::serve(dev, 0, backend, &STOP, stats);
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

/// Serves until a stop signal, then removes the device; if it is still open, says so and
/// keeps serving (a second signal leaves it waiting for a new server instead).
pub fn serve_until_stopped(dev: &ControlDevice, ctl: &Path, backend: &dyn Backend, threads: u32) -> Result<()> {
    let bdev = device::block_device_for(ctl).map(|p| p.display().to_string()).unwrap_or_else(|| "the device".into());
    let stats = Stats::default();
    loop {
        let served = serve_with_workers(dev, backend, threads, &stats);
        eprintln!("vdmount: {}", stats.summary("ABUSE_XFER"));
        served.map_err(|e| Error::device(ctl, "serving requests", e))?;
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
                eprintln!(
                    "vdmount: leaving {bdev} to wait for a new server: vdmount --reattach IMAGE {}",
                    ctl.display()
                );
                return Ok(());
            }
            Err(e) => return Err(Error::device(ctl, "cannot reset the device", e)),
        }
    }
}
