//! The service loop: fetch a batch of block requests from abuse.ko, answer each from the
//! backend, and hand the answers back in the same call that fetches the next batch, so a busy
//! server makes about one system call per batch. Several threads can run it on one device.

use super::device::ControlDevice;
use super::uapi::*;
use crate::error::Error;
use crate::formats::{Extent, Extents};
use crate::overlay::Backend;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Requests fetched per call.
pub const BATCH: usize = 16;
/// Largest request the server accepts (the kernel splits bigger ones).
pub const MAX_IO_BYTES: u32 = 512 * 1024;
/// Requests in flight at once on the device.
pub const QUEUE_DEPTH: u32 = 64;

/// Counters for the summary printed at exit (and the tests that check each op arrives).
#[derive(Default)]
pub struct Stats {
    pub calls: AtomicU64,
    pub ops: [AtomicU64; 5],
    /// Writes that carried ABUSE_REQ_FUA.
    pub fua: AtomicU64,
    /// Reads answered with extents (the kernel read the image file itself).
    pub described: AtomicU64,
    pub errors: AtomicU64,
    log_limit: std::sync::Mutex<LogLimit>,
}

/// Failed requests are logged at most LOG_BURST times per LOG_WINDOW, then counted; the count
/// is reported when the next window opens. One corrupt structure under a busy reader would
/// otherwise flood the log.
#[derive(Default)]
struct LogLimit {
    window_start: Option<std::time::Instant>,
    logged: u32,
    suppressed: u64,
}
const LOG_BURST: u32 = 10;
const LOG_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

impl Stats {
    fn log_failure(&self, message: impl FnOnce() -> String) {
        let mut l = self.log_limit.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if l.window_start.is_none_or(|t| now.duration_since(t) >= LOG_WINDOW) {
            if l.suppressed > 0 {
                eprintln!("vdmount: {} more failed requests were not logged", l.suppressed);
            }
            *l = LogLimit { window_start: Some(now), logged: 0, suppressed: 0 };
        }
        if l.logged < LOG_BURST {
            l.logged += 1;
            eprintln!("vdmount: {}", message());
        } else {
            l.suppressed += 1;
        }
    }
}

impl Stats {
    pub fn summary(&self) -> String {
        let o: Vec<u64> = self.ops.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total: u64 = o.iter().sum();
        let calls = self.calls.load(Ordering::Relaxed);
        format!(
            "{total} requests (read {} of which {} as extents, write {} of which fua {}, flush {}, discard {}, write-zeroes {}), {} failed, {calls} ABUSE_XFER calls ({:.2} per request)",
            o[0], self.described.load(Ordering::Relaxed), o[1], self.fua.load(Ordering::Relaxed), o[2], o[3], o[4],
            self.errors.load(Ordering::Relaxed),
            if total > 0 { calls as f64 / total as f64 } else { 0.0 }
        )
    }
}

/// Serves requests on `dev` from `backend` until `stop` is set and a signal interrupts the wait.
pub fn serve(dev: &ControlDevice, backend: &dyn Backend, stop: &AtomicBool, stats: &Stats) -> io::Result<()> {
    let mut requests = vec![AbuseRequest::default(); BATCH];
    let mut completions: Vec<AbuseCompletion> = Vec::with_capacity(BATCH);
    // One slot of MAX_IO_BYTES per request for read data; one area for write payloads.
    let mut read_area = vec![0u8; BATCH * MAX_IO_BYTES as usize];
    let mut write_area = vec![0u8; BATCH * MAX_IO_BYTES as usize];
    // One extent list per request for reads the kernel reads itself, and its wire form.
    let mut extents: Vec<Extents> = (0..BATCH).map(|_| Extents::new(ABUSE_MAX_EXTENTS as usize)).collect();
    let mut wire: Vec<Vec<AbuseExtent>> = (0..BATCH).map(|_| Vec::with_capacity(ABUSE_MAX_EXTENTS as usize)).collect();
    // Reads are answered with extents only if the module granted that at setup.
    let extents_granted = dev.features() & ABUSE_FEAT_EXTENTS != 0;

    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping && completions.is_empty() {
            return Ok(());
        }
        let mut x = AbuseXfer {
            completions: completions.as_ptr() as u64,
            n_completions: completions.len() as u32,
            requests: requests.as_mut_ptr() as u64,
            max_requests: if stopping { 0 } else { BATCH as u32 },
            data: write_area.as_mut_ptr() as u64,
            data_len: write_area.len() as u64,
            flags: ABUSE_XFER_WAIT,
            ..Default::default()
        };
        let r = dev.xfer(&mut x);
        stats.calls.fetch_add(1, Ordering::Relaxed);
        // Whatever else happened, the kernel took the first n_completed answers.
        completions.drain(..(x.n_completed as usize).min(completions.len()));
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for (i, req) in requests[..x.n_requests as usize].iter().enumerate() {
            let described =
                if extents_granted { describe_read(backend, req, &mut extents[i], &mut wire[i], stats) } else { None };
            if let Some(n) = described {
                let (flags, data) = (ABUSE_CPL_EXTENTS, wire[i].as_ptr() as u64);
                completions.push(AbuseCompletion {
                    tag: req.tag,
                    gen: req.gen,
                    flags,
                    n_extents: n,
                    data,
                    ..Default::default()
                });
                continue;
            }
            let slot = &mut read_area[i * MAX_IO_BYTES as usize..(i + 1) * MAX_IO_BYTES as usize];
            let (result, data) = answer(backend, req, slot, &write_area, stats);
            completions.push(AbuseCompletion { tag: req.tag, gen: req.gen, result, data, ..Default::default() });
        }
    }
}

/// For a read the backend can describe as extents of its files: fills `wire` with them for the
/// kernel and returns how many. None for anything else (then `answer` answers, and counts it).
pub fn describe_read(
    backend: &dyn Backend,
    req: &AbuseRequest,
    extents: &mut Extents,
    wire: &mut Vec<AbuseExtent>,
    stats: &Stats,
) -> Option<u16> {
    if req.op != ABUSE_OP_READ || req.length == 0 || !in_range(backend, req) {
        return None;
    }
    extents.clear();
    // A failed lookup is left to `answer`, which reports it.
    if !backend.map_read(req.offset, req.length.into(), extents).ok()? || extents.total() != u64::from(req.length) {
        return None;
    }
    wire.clear();
    for e in extents.as_slice() {
        // Every extent is inside the request, so its length fits the wire's u32.
        wire.push(match *e {
            Extent::Data { fd, offset, len } => AbuseExtent { offset, length: len as u32, fd },
            Extent::Zero { len } => AbuseExtent { offset: 0, length: len as u32, fd: ABUSE_EXTENT_ZERO },
        });
    }
    stats.ops[ABUSE_OP_READ as usize].fetch_add(1, Ordering::Relaxed);
    stats.described.fetch_add(1, Ordering::Relaxed);
    Some(wire.len() as u16)
}

/// The kernel never sends a request past the end of the device; a buggy or hostile one fails
/// instead of reading zeros, growing the overlay, or overflowing an offset in the backend.
fn in_range(backend: &dyn Backend, req: &AbuseRequest) -> bool {
    // The device is the virtual size rounded up to whole blocks (its tail reads as zeros).
    let bs = backend.block_size().max(1) as u64;
    let device_size = backend.size().div_ceil(bs) * bs;
    req.offset.checked_add(req.length as u64).is_some_and(|end| end <= device_size)
}

/// The result (0 or -errno) and read-data address for one request (public for the fuzz target).
pub fn answer(
    backend: &dyn Backend,
    req: &AbuseRequest,
    slot: &mut [u8],
    write_area: &[u8],
    stats: &Stats,
) -> (i32, u64) {
    let len = req.length as usize;
    if let Some(c) = stats.ops.get(req.op as usize) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    if req.op == ABUSE_OP_WRITE && req.flags & ABUSE_REQ_FUA != 0 {
        stats.fua.fetch_add(1, Ordering::Relaxed);
    }
    let ranged = matches!(req.op, ABUSE_OP_READ | ABUSE_OP_WRITE | ABUSE_OP_DISCARD | ABUSE_OP_WRITE_ZEROES);
    let result = match req.op {
        _ if ranged && !in_range(backend, req) => Err(Error::from_errno(libc::EINVAL)),
        ABUSE_OP_READ if len <= slot.len() => backend.read(&mut slot[..len], req.offset),
        ABUSE_OP_WRITE => match write_payload(write_area, req) {
            Some(data) => backend.write(data, req.offset, req.flags & ABUSE_REQ_FUA != 0),
            None => Err(Error::from_errno(libc::EINVAL)),
        },
        ABUSE_OP_FLUSH => backend.flush(),
        ABUSE_OP_DISCARD => backend.discard(req.offset, req.length as u64),
        ABUSE_OP_WRITE_ZEROES => backend.write_zeroes(req.offset, req.length as u64),
        _ => Err(Error::from_errno(libc::EINVAL)),
    };
    match result {
        Ok(()) if req.op == ABUSE_OP_READ => (0, slot.as_ptr() as u64),
        Ok(()) => (0, 0),
        Err(e) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            // One bad structure fails one request; say so, but don't flood the log.
            stats.log_failure(|| format!("request op {} at offset {} ({len} bytes) failed: {e}", req.op, req.offset));
            (-e.errno(), 0)
        }
    }
}

/// The payload the kernel copied into the write area for `req`, if its address is inside it.
pub fn write_payload<'a>(area: &'a [u8], req: &AbuseRequest) -> Option<&'a [u8]> {
    let start = req.data.checked_sub(area.as_ptr() as u64)? as usize;
    area.get(start..start.checked_add(req.length as usize)?)
}
