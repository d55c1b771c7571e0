//! A ublk device's life as its server sees it: add it (or take over one whose server died),
//! run one thread per queue, start it, and at the end stop and delete it.

use super::ctrl::Control;
use super::queue::{serve_queue, QueueShape};
use super::uapi::*;
use crate::overlay::Backend;
use crate::request::{device_size, Stats};
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Requests in flight per queue.
pub const QUEUE_DEPTH: u16 = 64;
/// Largest request the server accepts (the kernel splits bigger ones), as for abuse.ko.
pub const MAX_IO_BYTES: u32 = 512 * 1024;

pub fn block_device(id: u32) -> PathBuf {
    PathBuf::from(format!("/dev/ublkb{id}"))
}

pub fn char_device(id: u32) -> PathBuf {
    PathBuf::from(format!("/dev/ublkc{id}"))
}

/// Adds a device for `backend` with `queues` queues; its id. The device waits for a server
/// (`serve`) before /dev/ublkbN appears. Requests a dead server held are sent again to the
/// next one (USER_RECOVERY with reissue), so a restarted server is invisible above.
pub fn add(ctrl: &Control, backend: &dyn Backend, queues: u16) -> io::Result<u32> {
    let mut info = DevInfo {
        nr_hw_queues: queues,
        queue_depth: QUEUE_DEPTH,
        max_io_buf_bytes: MAX_IO_BYTES,
        dev_id: u32::MAX,
        flags: F_USER_RECOVERY | F_USER_RECOVERY_REISSUE | F_CMD_IOCTL_ENCODE,
        ..Default::default()
    };
    ctrl.add(&mut info)?;
    let id = info.dev_id;
    let shift = backend.block_size().trailing_zeros() as u8;
    let writable = backend.writable();
    let mut params = Params {
        types: PARAM_TYPE_BASIC | if writable { PARAM_TYPE_DISCARD } else { 0 },
        basic: ParamBasic {
            attrs: if writable { ATTR_VOLATILE_CACHE | ATTR_FUA } else { ATTR_READ_ONLY },
            logical_bs_shift: shift,
            physical_bs_shift: shift,
            io_opt_shift: shift,
            io_min_shift: shift,
            max_sectors: MAX_IO_BYTES >> 9,
            dev_sectors: device_size(backend) >> 9,
            ..Default::default()
        },
        discard: ParamDiscard {
            discard_granularity: backend.block_size(),
            max_discard_sectors: u32::MAX >> 9,
            max_write_zeroes_sectors: u32::MAX >> 9,
            max_discard_segments: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    if let Err(e) = ctrl.set_params(id, &mut params) {
        let _ = ctrl.delete(id);
        return Err(e);
    }
    Ok(id)
}

/// How a server ends: told to stop (the device is stopped and deleted), or the device went
/// away under it (stopped by `vdmount detach`).
pub enum Ending {
    Stopped,
    Gone,
}

/// Serves device `id` until `stop_now` says so (checked every 100 ms) or the device goes away.
/// `recover`: take over from a server that died (the device must be waiting for one).
/// `started` is told once the device serves (or why it could not start).
pub fn serve(
    ctrl: &Control,
    id: u32,
    recover: bool,
    backend: &dyn Backend,
    stats: &Stats,
    started: &mut dyn FnMut(&io::Result<()>),
    stop_now: &mut dyn FnMut() -> bool,
) -> io::Result<Ending> {
    let info = ctrl.info(id)?;
    if recover {
        start_recovery(ctrl, id)?;
    }
    let cdev = open_char_device(id)?;
    let shape = QueueShape { depth: info.queue_depth, max_io: info.max_io_buf_bytes as usize };
    std::thread::scope(|s| {
        let queues: Vec<_> = (0..info.nr_hw_queues)
            .map(|q| {
                let cdev = &cdev;
                s.spawn(move || serve_queue(cdev, q, shape, backend, stats))
            })
            .collect();
        let start = if recover { ctrl.end_recovery(id) } else { ctrl.start(id) };
        started(&start);
        let mut ending = Ending::Gone;
        if start.is_ok() {
            while !queues.iter().all(|q| q.is_finished()) {
                if stop_now() {
                    ending = Ending::Stopped;
                    ctrl.stop(id)?;
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        } else {
            // The queues wait for requests that will not come: stopping ends their fetches.
            let _ = ctrl.stop(id);
        }
        for q in queues {
            q.join().unwrap_or_else(|_| Err(io::Error::other("a queue thread panicked")))?;
        }
        start.map(|()| ending)
    })
    .and_then(|ending| {
        drop(cdev);
        if let Ending::Stopped = ending {
            ctrl.delete(id)?;
        }
        Ok(ending)
    })
}

/// The kernel notices a server's death within seconds; until then the takeover is refused
/// with EBUSY.
fn start_recovery(ctrl: &Control, id: u32) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ctrl.start_recovery(id) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            r => return r,
        }
    }
}

/// /dev/ublkcN appears when the device is added (devtmpfs at once, udev a little later).
fn open_char_device(id: u32) -> io::Result<File> {
    let path = char_device(id);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::fs::OpenOptions::new().read(true).write(true).open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            r => return r,
        }
    }
}

/// Whether the kernel has ublk (the control device exists).
pub fn available() -> bool {
    std::path::Path::new(super::ctrl::CONTROL_PATH).exists()
}

/// The device's state for `list`: live, quiesced (waiting for a server), dead (not started).
pub fn state_name(state: u16) -> &'static str {
    match state {
        S_DEV_LIVE => "serving",
        S_DEV_QUIESCED => "waiting",
        S_DEV_DEAD => "stopped",
        _ => "unknown",
    }
}
