//! `vdmount IMAGE [CTLDEV]`: serve IMAGE on /dev/abuseN (or /dev/ublkbN) until SIGINT or
//! SIGTERM, read-only unless --cow. What both transports share is here: the backend, the
//! record, the background server, the sandbox; abuse.ko's setup is below, ublk's in serve_ublk.rs.

use super::record::{self, Record};
use super::transport::{Dev, Transport, TransportChoice};
use super::{attach, workers, ImageArgs};
use crate::abuse::device::{self, ControlDevice};
use crate::abuse::server;
use crate::abuse::uapi::*;
use crate::error::{Error, Result};
use crate::formats::DiskImage;
use crate::overlay::{Backend, CowOverlay, Qcow2Overlay, ReadOnly};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args, Default, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub image: Option<ImageArgs>,
    /// Control device to serve on (default: the first free /dev/abctlN); with ublk, only with
    /// --reattach (/dev/ublkcN).
    #[arg(value_name = "CTLDEV")]
    pub ctldev: Option<PathBuf>,
    /// The kernel transport: abuse.ko (our module), ublk (the kernel's own ublk_drv, for machines
    /// that cannot load abuse.ko), or auto: abuse.ko when /dev/abuse-control exists, else ublk.
    ///
    /// The first line printed names the transport used. Both serve the same images, modes, cache
    /// and sandbox; abuse.ko also lets the kernel read stored-as-is data straight from the image
    /// files (one copy instead of two).
    #[arg(long, value_enum, value_name = "KIND", default_value_t = TransportChoice::Auto)]
    pub transport: TransportChoice,
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
    /// Print nothing on success (`vdmount mount` reports itself).
    #[arg(skip)]
    pub quiet: bool,
}

pub fn run(args: &ServeArgs) -> Result<()> {
    attach(args).map(drop)
}

/// Serves as `args` say; the device, once it is up (background servers), for `vdmount mount`.
pub fn attach(args: &ServeArgs) -> Result<Option<Dev>> {
    if let Some(resolved) = reattach_from_record(args)? {
        return attach(&resolved);
    }
    let Some(image) = &args.image else {
        return Err(Error::Usage("no IMAGE given; see vdmount --help".into()));
    };
    if args.reattach && args.ctldev.is_none() {
        return Err(Error::Usage(
            "--reattach needs the device: vdmount --reattach /dev/abuseN, or IMAGE /dev/abctlN".into(),
        ));
    }
    // The image first: a bad image is the error to report, whatever the kernel has.
    let disk = image.open()?;
    let transport = match &args.ctldev {
        // A control device names its transport; anything else given is abuse.ko's (as before ublk).
        Some(p) => Dev::parse(&p.to_string_lossy()).map_or(Transport::Abuse, |d| d.transport),
        None => Transport::pick(args.transport)?,
    };
    let parts = attach::read_partitions(disk.as_ref());
    let mode = match &args.cow {
        None => "read-only".to_string(),
        Some(None) => "cow".to_string(),
        Some(Some(file)) => format!("cow={}", absolute(file).display()),
    };
    let backend: Box<dyn Backend> = match &args.cow {
        None => Box::new(ReadOnly(disk.clone())),
        Some(None) => Box::new(CowOverlay::new(disk.clone(), None)?),
        Some(Some(file)) => Box::new(open_overlay_file(file, &image.image, disk.clone())?),
    };
    let served = Served { args, image, disk: disk.clone(), parts, mode, backend };
    match transport {
        Transport::Abuse => serve_abuse(&served),
        Transport::Ublk => super::serve_ublk::run(&served),
    }
}

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

fn serve_abuse(served: &Served) -> Result<Option<Dev>> {
    let (args, image, backend) = (served.args, served.image, served.backend.as_ref());
    // The reservation (an open /dev/abuse-control) is dropped once the setup has returned.
    let (ctl, reservation) = match &args.ctldev {
        Some(p) => (p.clone(), None),
        None => device::find_free()
            .map(|(p, f)| (p, Some(f)))
            .map_err(|e| Error::device(Path::new(device::CONTROL_PATH), "cannot find a free device", e))?,
    };
    let dev = device::index_of(&ctl).map(Dev::abuse);
    if args.reattach {
        check_reattach(dev, &image.image, &served.mode)?;
    }
    let ctl_dev = ControlDevice::open(&ctl).map_err(|e| Error::device(&ctl, "cannot open", e))?;
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
        size: crate::request::device_size(backend),
        block_size: backend.block_size(),
        queue_depth: server::QUEUE_DEPTH,
        max_io_bytes: server::MAX_IO_BYTES,
        reconnect_timeout_ms: args.reconnect_timeout.map_or(0, |s| s.saturating_mul(1000)),
        features: ABUSE_FEAT_EXTENTS,
        ..Default::default()
    };
    workers::install_signal_handlers();
    if !args.quiet {
        println!("vdmount: serving through {}", Transport::Abuse.name());
    }
    // The server sets the device up itself (the kernel records the server's pid), then saves
    // its record, enters the sandbox and serves.
    let server = |report: &mut dyn FnMut(i32)| -> Result<()> {
        super::harden::harden(args.mlock);
        let setup_result = ctl_dev.setup(&setup);
        drop(reservation);
        report(setup_result.as_ref().map_or_else(|e| e.raw_os_error().unwrap_or(libc::EIO), |_| 0));
        setup_result.map_err(|e| Error::device(&ctl, "cannot set up the device", e))?;
        if let Some(dev) = dev {
            // The record stays: the sandbox forbids unlinking, and a device left waiting for a
            // new server needs it; `list`, `detach` or the next `save` replace it (see record.rs).
            record::save(&served.record(dev, std::process::id()));
        }
        sandbox(args, ctl_dev.as_raw_fd(), false);
        workers::serve_until_stopped(&ctl_dev, &ctl, backend, args.threads).and(backend.close())
    };
    run_server(served, dev, &ctl, server)
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

/// `vdmount --reattach DEV`: the image, mode and overlay come from what the dead server left in
/// /run/vdmount, so the user needs to remember nothing.
fn reattach_from_record(args: &ServeArgs) -> Result<Option<ServeArgs>> {
    let Some(given) = args.image.as_ref().filter(|_| args.reattach && args.ctldev.is_none()) else { return Ok(None) };
    let name = given.image.to_string_lossy();
    let Some(dev) = Dev::parse(&name).filter(|_| name.starts_with("/dev/")) else { return Ok(None) };
    let rec = record::load(dev).ok_or_else(|| {
        Error::Device(format!(
            "{}: no record of what it served in /run/vdmount; give it: vdmount --reattach IMAGE {}",
            dev.path().display(),
            dev.control().display()
        ))
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
    Ok(Some(ServeArgs { image: Some(image), ctldev: Some(dev.control()), cow, ..args.clone() }))
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
