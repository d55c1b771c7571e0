//! What every server does, whichever the transport: describe what it serves (`Served`), start
//! in the foreground or as a background process that reports its setup through a pipe
//! (`run_server`), keep its record, check a reattach against the record, and enter the sandbox.

use super::record::{self, Record};
use super::serve_args::ServeArgs;
use super::transport::Dev;
use super::{attach, ImageArgs};
use crate::error::{Error, Result};
use crate::formats::DiskImage;
use crate::overlay::Backend;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a server serves, whichever the transport.
pub struct Served<'a> {
    pub args: &'a ServeArgs,
    pub image: &'a ImageArgs,
    pub disk: Arc<dyn DiskImage>,
    pub parts: Vec<crate::inspect::partitions::Partition>,
    /// "read-only", "cow" or "cow=FILE", as the record keeps it.
    pub mode: String,
    pub backend: Box<dyn Backend>,
}

impl Served<'_> {
    pub fn writable(&self) -> bool {
        self.args.cow.is_some()
    }

    /// The lines printed once `dev` is up (served by `pid`).
    pub fn describe(&self, dev: Dev, pid: u32) -> String {
        attach::describe(dev, &self.image.image, self.disk.as_ref(), self.writable(), pid, &self.parts)
    }

    pub fn record(&self, dev: Dev, pid: u32) -> Record {
        record_of(dev, self.image, &self.mode, pid)
    }
}

/// Runs `server` and, once it reports its setup went well (errno 0), prints what appeared. In
/// the foreground the caller's process serves, announcing from a side thread (the partition
/// scan needs the server serving); otherwise a background process does, logging to the
/// device's log, and reports through a pipe.
pub fn run_server(
    served: &Served,
    dev: Option<Dev>,
    ctl: &Path,
    server: impl FnOnce(&mut dyn FnMut(i32)) -> Result<()>,
) -> Result<Option<Dev>> {
    if served.args.foreground {
        let me = std::process::id();
        let announce = |errno: i32| {
            let Some(dev) = dev.filter(|_| errno == 0) else { return };
            let (text, parts) = (served.describe(dev, me), served.parts.clone());
            // Started inside the sandbox like every other thread.
            std::thread::spawn(move || {
                if attach::wait_for_nodes(dev, &parts, &mut || true) {
                    print!("{text}");
                }
            });
        };
        let mut announce = Some(announce);
        return server(&mut |errno| {
            if let Some(a) = announce.take() {
                a(errno)
            }
        })
        .map(|()| None);
    }
    // A thread alive at the fork could hold a lock (the allocator's, a cache's) that the child,
    // which has no such thread, would then wait on for ever: refuse rather than hang. Threads
    // that are ending are waited for (an HTTP client resolves a name on a short-lived thread).
    let mut threads = thread_count();
    for _ in 0..500 {
        if threads == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        threads = thread_count();
    }
    if threads > 1 {
        return Err(Error::Device(format!(
            "internal error: {threads} threads are running before the background server starts; \
             run with --foreground, and please report this"
        )));
    }
    let mut pipe = [0i32; 2];
    // SAFETY: pipe2 fills the array on success.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(Error::Device(format!("cannot create a pipe: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: no other thread exists (checked above: the cache and the read-aheads start none
    // from the thread that opened the image), so the child inherits a consistent process.
    match unsafe { libc::fork() } {
        -1 => Err(Error::Device(format!("cannot start the background server: {}", std::io::Error::last_os_error()))),
        0 => {
            // SAFETY: descriptors this process owns.
            unsafe { libc::close(pipe[0]) };
            become_daemon(dev);
            let mut report = |errno: i32| {
                // SAFETY: writes 4 bytes from a local to our end of the pipe, once.
                unsafe {
                    libc::write(pipe[1], (&errno as *const i32).cast(), 4);
                    libc::close(pipe[1]);
                }
            };
            let code = match server(&mut report) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("vdmount: {e}");
                    super::exit_code(&e)
                }
            };
            std::process::exit(code);
        }
        pid => {
            let mut setup_errno = -1i32;
            // SAFETY: reads at most 4 bytes into a local; our copy of the write end is closed
            // first so a dead child gives end-of-file.
            let got = unsafe {
                libc::close(pipe[1]);
                let got = libc::read(pipe[0], (&mut setup_errno as *mut i32).cast(), 4);
                libc::close(pipe[0]);
                got
            };
            if got != 4 {
                return Err(Error::Device(format!("{}: the background server died while setting up", ctl.display())));
            }
            if setup_errno != 0 {
                return Err(Error::device(
                    ctl,
                    "cannot set up the device",
                    std::io::Error::from_raw_os_error(setup_errno),
                ));
            }
            let Some(dev) = dev else { return Ok(None) };
            let mut alive = || {
                let mut status = 0;
                // SAFETY: waitpid on our own child.
                unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == 0 }
            };
            if !attach::wait_for_nodes(dev, &served.parts, &mut alive) {
                return Err(Error::Device(format!(
                    "{} or its partitions did not appear; see {}",
                    dev.path().display(),
                    record::log_path(dev).display()
                )));
            }
            if !served.args.quiet {
                print!("{}", served.describe(dev, pid as u32));
            }
            Ok(Some(dev))
        }
    }
}

/// What /run/vdmount keeps of this server: enough for `list`, `detach` and a reattach that
/// opens the image exactly as this server did.
fn record_of(dev: Dev, image: &ImageArgs, mode: &str, pid: u32) -> Record {
    Record {
        dev,
        image: absolute(&image.image),
        mode: mode.to_string(),
        pid,
        allow_dirs: image.allow_dir.iter().map(|d| absolute(d)).collect(),
        allow_any_path: image.allow_any_path,
    }
}

pub fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// A new server may take over only the image and mode the dead one served: the kernel checks
/// size and mode; the record says which image and overlay it was.
pub fn check_reattach(dev: Option<Dev>, image: &Path, mode: &str) -> Result<()> {
    let Some(rec) = dev.and_then(record::load) else { return Ok(()) };
    let path = rec.dev.path();
    if rec.mode == "cow" {
        return Err(Error::Device(format!(
            "{}: its server kept writes in an ephemeral overlay that died with it, so no new server \
             can serve that disk; unmount it and run: vdmount detach {}",
            path.display(),
            path.display()
        )));
    }
    if rec.mode != mode || absolute(image) != rec.image {
        return Err(Error::Device(format!(
            "{} was serving {} ({}); reattach with the same image and mode",
            path.display(),
            rec.image.display(),
            rec.mode
        )));
    }
    Ok(())
}

/// Detaches from the terminal: own session, stdio to /run/vdmount/abuseN.log (or /dev/null).
fn become_daemon(dev: Option<Dev>) {
    use std::os::fd::AsRawFd;
    let log = dev.map(record::open_log).and_then(|r| {
        r.map_err(|e| eprintln!("vdmount: warning: cannot open the server log in /run/vdmount: {e}")).ok()
    });
    // SAFETY: plain syscalls on descriptors this process owns.
    unsafe {
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        let out = log.as_ref().map_or(null, |f| f.as_raw_fd());
        libc::dup2(null, 0);
        libc::dup2(out, 1);
        libc::dup2(out, 2);
    }
    let _ = std::env::set_current_dir("/");
}

/// The sandbox (capabilities dropped, seccomp filter on every thread), unless the user turned
/// it off; a failure to apply it is reported.
/// `ctl_fd`: the control device the server's ioctls go to; `io_uring`: the server's requests
/// come through (restricted) io_uring rings, as ublk's do.
pub fn sandbox(args: &ServeArgs, ctl_fd: i32, io_uring: bool) {
    if !args.no_seccomp {
        super::sandbox::probe::install_if_asked();
        if let Err(e) = super::sandbox::restrict(ctl_fd, args.mlock, io_uring) {
            eprintln!("vdmount: warning: cannot apply the sandbox: {e}");
        }
    }
}

/// Threads of this process that run our code (1 when /proc cannot tell: nothing to refuse on).
/// io_uring's kernel workers (iou-wrk-*, iou-sqp-*) are listed among them but hold no lock of
/// ours, and fork does not copy them: the ublk control ring has one by then.
fn thread_count() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 1 };
    let ours = |t: &std::fs::DirEntry| {
        std::fs::read_to_string(t.path().join("comm")).map_or(true, |comm| !comm.starts_with("iou-"))
    };
    tasks.filter_map(|t| t.ok()).filter(ours).count().max(1)
}
