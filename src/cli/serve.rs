//! `vdmount IMAGE [CTLDEV]`: serve IMAGE on /dev/abuseN until SIGINT or SIGTERM, read-only
//! unless --cow.

use super::record::{self, Record};
use super::{attach, workers, ImageArgs};
use crate::abuse::device::{self, ControlDevice};
use crate::abuse::server;
use crate::abuse::uapi::*;
use crate::error::{Error, Result};
use crate::formats::DiskImage;
use crate::overlay::{Backend, CowOverlay, Qcow2Overlay, ReadOnly};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args, Default, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub image: Option<ImageArgs>,
    /// Control device to serve on (default: the first free /dev/abctlN).
    #[arg(value_name = "CTLDEV")]
    pub ctldev: Option<PathBuf>,
    /// Accept writes: into an ephemeral overlay (an unlinked temporary file in $TMPDIR) gone when
    /// the server stops, or with --cow=FILE into FILE, a qcow2 overlay backed by IMAGE (created if
    /// missing, continued if it exists) that qemu-img and vdmount can open later. The image itself
    /// is never written.
    ///
    /// --cow: the ephemeral overlay is a nameless temporary file in $TMPDIR (mode 0600, made with
    /// O_TMPFILE, or given a random name and unlinked at once). Flushes and FUA writes are
    /// honoured; discard and write-zeroes make the range read as zeros.
    ///
    /// --cow=FILE: FILE is a qcow2 version 3 overlay whose backing file is IMAGE (its absolute
    /// path, with its format recorded): created if missing (mode 0600), continued if it exists
    /// (it must be an overlay of IMAGE, a regular file owned by the user running vdmount, and not
    /// a symbolic link: FILE is opened once, and checked on that open file). qemu-img info,
    /// convert, check and commit understand it, and vdmount FILE later shows the same disk. A
    /// flush or FUA write returns only once the data and metadata are on disk; after a power cut,
    /// qemu-img check finds at most leaked clusters (qemu-img check -r leaks reclaims them) and
    /// every flushed write is there. The device may be reattached to FILE after a server crash.
    #[arg(long, value_name = "FILE", num_args = 0..=1, require_equals = true)]
    pub cow: Option<Option<PathBuf>>,
    /// Take over CTLDEV from a server that died (kill -9, OOM): the new server must serve the
    /// same image and mode; requests the old one left unanswered are served by this one.
    ///
    /// The filesystem above sees no error. The size must be the same too, and the image the one
    /// the old server served; refused for an ephemeral --cow device, whose overlay died with its
    /// server. vdmount --reattach /dev/abuseN (no IMAGE) takes the image, mode and overlay
    /// from /run/vdmount/abuseN, which the dead server left.
    #[arg(long)]
    pub reattach: bool,
    /// Worker threads answering requests.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub threads: u32,
    /// Lock the server's memory (mlockall), so answering a request never waits for paging.
    #[arg(long)]
    pub mlock: bool,
    /// Do not restrict the server's system calls with seccomp, nor drop its capabilities, once
    /// it is set up.
    ///
    /// See SECURITY in the man page for what the sandbox allows.
    #[arg(long)]
    pub no_seccomp: bool,
    /// Stay in the foreground (default: return once the device and its partitions exist, and
    /// keep serving in the background, logging to /run/vdmount/abuseN.log).
    #[arg(long)]
    pub foreground: bool,
    /// Seconds the device waits for a new server if this one dies, before failing I/O with EIO
    /// (default: the module parameter reconnect_timeout_ms, 30 s).
    #[arg(long, value_name = "SECONDS")]
    pub reconnect_timeout: Option<u32>,
}

pub fn run(args: &ServeArgs) -> Result<()> {
    if let Some(resolved) = reattach_from_record(args)? {
        return run(&resolved);
    }
    let Some(image) = &args.image else {
        return Err(Error::Usage("no IMAGE given; see vdmount --help".into()));
    };
    if args.reattach && args.ctldev.is_none() {
        return Err(Error::Usage(
            "--reattach needs the device: vdmount --reattach /dev/abuseN, or IMAGE /dev/abctlN".into(),
        ));
    }
    let disk = image.open()?;
    let parts = attach::read_partitions(disk.as_ref());
    // The reservation (an open /dev/abuse-control) is dropped once the setup has returned.
    let (ctl, reservation) = match &args.ctldev {
        Some(p) => (p.clone(), None),
        None => device::find_free()
            .map(|(p, f)| (p, Some(f)))
            .map_err(|e| Error::device(Path::new(device::CONTROL_PATH), "cannot find a free device", e))?,
    };
    let index = device::index_of(&ctl);
    let mode = match &args.cow {
        None => "read-only".to_string(),
        Some(None) => "cow".to_string(),
        Some(Some(file)) => format!("cow={}", absolute(file).display()),
    };
    if args.reattach {
        check_reattach(index, &image.image, &mode)?;
    }
    let backend: Box<dyn Backend> = match &args.cow {
        None => Box::new(ReadOnly(disk.clone())),
        Some(None) => Box::new(CowOverlay::new(disk.clone(), None)?),
        Some(Some(file)) => Box::new(open_overlay_file(file, &image.image, disk.clone())?),
    };
    let writable = args.cow.is_some();
    let dev = ControlDevice::open(&ctl).map_err(|e| Error::device(&ctl, "cannot open", e))?;
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
        features: ABUSE_FEAT_EXTENTS,
        ..Default::default()
    };
    workers::install_signal_handlers();

    if args.foreground {
        super::harden::harden(args.mlock);
        dev.setup(&setup).map_err(|e| Error::device(&ctl, "cannot set up the device", e))?;
        drop(reservation);
        let me = std::process::id();
        if let Some(n) = index {
            record::save(&record_of(n, image, &mode, me));
        }
        sandbox(args, &dev);
        if let Some(n) = index {
            // The partition scan needs this process serving, so report from a side thread,
            // started inside the sandbox like every other thread.
            let (disk, parts, path) = (disk.clone(), parts.clone(), image.image.clone());
            std::thread::spawn(move || {
                if attach::wait_for_nodes(n, &parts, &mut || true) {
                    print!("{}", attach::describe(n, &path, disk.as_ref(), writable, me, &parts));
                }
            });
        }
        // The record stays: the sandbox forbids unlinking, and a device left waiting for a new
        // server needs it; `list`, `detach` or the next `save` replace it (see record.rs).
        return workers::serve_until_stopped(&dev, &ctl, backend.as_ref(), args.threads).and(backend.close());
    }

    // The background server sets the device up itself (the kernel records the server's pid)
    // and tells the foreground process how that went through a pipe.
    let mut pipe = [0i32; 2];
    // SAFETY: pipe2 fills the array on success.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(Error::Device(format!("cannot create a pipe: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: no other thread exists yet (the cache and readers start none), so the child
    // inherits a consistent process.
    match unsafe { libc::fork() } {
        -1 => Err(Error::Device(format!("cannot start the background server: {}", std::io::Error::last_os_error()))),
        0 => {
            // SAFETY: descriptors this process owns.
            unsafe { libc::close(pipe[0]) };
            become_daemon(index);
            super::harden::harden(args.mlock);
            let setup_errno = match dev.setup(&setup) {
                Ok(()) => 0i32,
                Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
            };
            drop(reservation);
            // SAFETY: writes 4 bytes from a local to our end of the pipe.
            unsafe {
                libc::write(pipe[1], (&setup_errno as *const i32).cast(), 4);
                libc::close(pipe[1]);
            }
            if setup_errno != 0 {
                std::process::exit(super::EXIT_DEVICE);
            }
            if let Some(n) = index {
                record::save(&record_of(n, image, &mode, std::process::id()));
            }
            sandbox(args, &dev);
            let code =
                match workers::serve_until_stopped(&dev, &ctl, backend.as_ref(), args.threads).and(backend.close()) {
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
            drop(reservation);
            if got != 4 {
                return Err(Error::Device(format!("{}: the background server died while setting up", ctl.display())));
            }
            if setup_errno != 0 {
                return Err(Error::device(
                    &ctl,
                    "cannot set up the device",
                    std::io::Error::from_raw_os_error(setup_errno),
                ));
            }
            let Some(n) = index else { return Ok(()) };
            let mut alive = || {
                let mut status = 0;
                // SAFETY: waitpid on our own child.
                unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == 0 }
            };
            if !attach::wait_for_nodes(n, &parts, &mut alive) {
                return Err(Error::Device(format!(
                    "/dev/abuse{n} or its partitions did not appear; see {}",
                    record::log_path(n).display()
                )));
            }
            print!("{}", attach::describe(n, &image.image, disk.as_ref(), writable, pid as u32, &parts));
            Ok(())
        }
    }
}

/// What /run/vdmount keeps of this server: enough for `list`, `detach` and a reattach that
/// opens the image exactly as this server did.
fn record_of(index: u32, image: &ImageArgs, mode: &str, pid: u32) -> Record {
    Record {
        index,
        image: absolute(&image.image),
        mode: mode.to_string(),
        pid,
        allow_dirs: image.allow_dir.iter().map(|d| absolute(d)).collect(),
        allow_any_path: image.allow_any_path,
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `vdmount --reattach DEV`: the image, mode and overlay come from what the dead server left in
/// /run/vdmount, so the user needs to remember nothing.
fn reattach_from_record(args: &ServeArgs) -> Result<Option<ServeArgs>> {
    let Some(given) = args.image.as_ref().filter(|_| args.reattach && args.ctldev.is_none()) else { return Ok(None) };
    let name = given.image.to_string_lossy();
    if !name.starts_with("/dev/abuse") && !name.starts_with("/dev/abctl") {
        return Ok(None);
    }
    let n = device::index_from_name(&name).ok_or_else(|| Error::Usage(format!("{name}: not an abuse device")))?;
    let rec = record::load(n).ok_or_else(|| {
        Error::Device(format!("/dev/abuse{n}: no record of what it served in /run/vdmount; give it: vdmount --reattach IMAGE /dev/abctl{n}"))
    })?;
    let mut image = given.clone();
    image.image = rec.image.clone();
    // The same confinement as the first server, so the chain opens (or is refused) the same way.
    image.allow_dir = rec.allow_dirs.clone();
    image.allow_any_path = rec.allow_any_path;
    let cow = match rec.mode.as_str() {
        "read-only" => None,
        "cow" => Some(None),
        m => Some(Some(PathBuf::from(m.strip_prefix("cow=").unwrap_or(m)))),
    };
    Ok(Some(ServeArgs {
        image: Some(image),
        ctldev: Some(PathBuf::from(format!("/dev/abctl{n}"))),
        cow,
        ..args.clone()
    }))
}

/// A new server may take over only the image and mode the dead one served: the kernel checks
/// size and mode; the record says which image and overlay it was.
fn check_reattach(index: Option<u32>, image: &Path, mode: &str) -> Result<()> {
    let Some(rec) = index.and_then(record::load) else { return Ok(()) };
    if rec.mode == "cow" {
        return Err(Error::Device(format!(
            "/dev/abuse{}: its server kept writes in an ephemeral overlay that died with it, so no new server \
             can serve that disk; unmount it and run: vdmount detach /dev/abuse{}",
            rec.index, rec.index
        )));
    }
    if rec.mode != mode || absolute(image) != rec.image {
        return Err(Error::Device(format!(
            "/dev/abuse{} was serving {} ({}); reattach with the same image and mode",
            rec.index,
            rec.image.display(),
            rec.mode
        )));
    }
    Ok(())
}

/// --cow=FILE: continue FILE if it exists (it must be an overlay of IMAGE), else create it.
/// FILE is opened once, never through a symlink, and everything is checked and read on that
/// descriptor: a name swapped in between cannot redirect the writes (see safe_open.rs).
fn open_overlay_file(file: &Path, image: &Path, disk: Arc<dyn DiskImage>) -> Result<Qcow2Overlay> {
    let Some(opened) = crate::overlay::safe_open::open_own_file(file, "qcow2 overlay (--cow=FILE)")? else {
        return Qcow2Overlay::create(file, disk.clone(), image, &disk.info().format);
    };
    // A relative name is relative to the overlay's folder, as qemu takes it.
    let backing = crate::overlay::qcow2::backing_file_name(&opened, file)?
        .map(|b| absolute(&crate::source::confine::resolve_beside(file, &b)));
    if backing.as_deref() != Some(absolute(image).as_path()) {
        return Err(Error::Usage(format!(
            "{}: is an overlay of {}, not of {}; give its own image, or another FILE",
            file.display(),
            backing.map_or("nothing".into(), |b| b.display().to_string()),
            image.display()
        )));
    }
    Qcow2Overlay::open_on(Box::new(opened), file, disk)
}

/// Detaches from the terminal: own session, stdio to /run/vdmount/abuseN.log (or /dev/null).
fn become_daemon(index: Option<u32>) {
    use std::os::fd::AsRawFd;
    let log = index.map(record::open_log).and_then(|r| {
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
fn sandbox(args: &ServeArgs, dev: &ControlDevice) {
    use std::os::fd::AsRawFd;
    if !args.no_seccomp {
        super::sandbox::probe::install_if_asked();
        if let Err(e) = super::sandbox::restrict(dev.as_raw_fd(), args.mlock) {
            eprintln!("vdmount: warning: cannot apply the sandbox: {e}");
        }
    }
}
