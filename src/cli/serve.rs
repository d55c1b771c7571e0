//! `vdmount IMAGE [CTLDEV]`: serve IMAGE on /dev/abuseN (or /dev/ublkbN) until SIGINT or
//! SIGTERM, read-only unless --cow. Here: the image and its backend, the transport chosen, a
//! reattach from the record, and abuse.ko's setup; ublk's is in serve_ublk.rs, and what every
//! server does (foreground or background, record, sandbox) in launch.rs.

use super::launch::{absolute, check_reattach, run_server, sandbox, Served};
use super::record;
use super::serve_args::ServeArgs;
use super::transport::{Dev, Transport};
use super::{attach, workers};
use crate::abuse::device::{self, ControlDevice};
use crate::abuse::server;
use crate::abuse::uapi::*;
use crate::error::{Error, Result};
use crate::formats::DiskImage;
use crate::overlay::{Backend, CowOverlay, Qcow2Overlay, ReadOnly};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

fn serve_abuse(served: &Served) -> Result<Option<Dev>> {
    let (args, image, backend) = (served.args, served.image, served.backend.as_ref());
    // The reservation (an open /dev/abuse-control) is dropped once the setup has returned.
    let (ctl, reservation) = match &args.ctldev {
        Some(p) => (p.clone(), None),
        None => device::find_free().map(|(p, f)| (p, Some(f))).map_err(no_free_device)?,
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
    // One hardware queue per thread, where the module has them (an older one refuses the field).
    let queues = ctl_dev.module_features() & ABUSE_FEAT_QUEUES != 0;
    let setup = AbuseSetup {
        version: ABUSE_ABI_VERSION,
        flags,
        size: crate::request::device_size(backend),
        block_size: backend.block_size(),
        queue_depth: server::QUEUE_DEPTH,
        max_io_bytes: server::MAX_IO_BYTES,
        reconnect_timeout_ms: args.reconnect_timeout.map_or(0, |s| s.saturating_mul(1000)),
        features: ABUSE_FEAT_EXTENTS | if queues { ABUSE_FEAT_QUEUES } else { 0 },
        nr_queues: if queues { args.threads.min(ABUSE_MAX_QUEUES) } else { 0 },
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

/// GET_FREE failed: with ENODEV, say whether the module could have made one.
fn no_free_device(e: std::io::Error) -> Error {
    let path = Path::new(device::CONTROL_PATH);
    if e.raw_os_error() != Some(libc::ENODEV) {
        return Error::device(path, "cannot find a free device", e);
    }
    Error::Device(if device::creates_on_demand() {
        format!("{}: no free device, and every index of the minor space is taken: detach one", path.display())
    } else {
        format!(
            "{}: every /dev/abuseN is in use, and this abuse.ko creates none on demand (it predates \
             ABUSE_CTL_ADD): detach one, or reload it with a larger max_abuse",
            path.display()
        )
    })
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
