//! One block request in the terms both transports share (abuse.ko and the kernel's ublk), how
//! the backend answers it, and the counters a server prints when it stops. Each transport's loop
//! only fetches requests and hands back answers; what a request does to the disk is here.

use crate::error::Error;
use crate::overlay::Backend;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the kernel asked for, with the data it carries or the buffer to fill.
pub enum Op<'a> {
    Read(&'a mut [u8]),
    /// The payload, and whether it must be durable on completion (FUA).
    Write(&'a [u8], bool),
    Flush,
    Discard(u64),
    WriteZeroes(u64),
}

impl Op<'_> {
    /// The index of this op in `Stats::ops` (the order of `OP_NAMES`).
    fn index(&self) -> usize {
        match self {
            Op::Read(_) => 0,
            Op::Write(..) => 1,
            Op::Flush => 2,
            Op::Discard(_) => 3,
            Op::WriteZeroes(_) => 4,
        }
    }

    /// Bytes of the device the op covers (none for a flush).
    fn len(&self) -> Option<u64> {
        match self {
            Op::Read(b) => Some(b.len() as u64),
            Op::Write(b, _) => Some(b.len() as u64),
            Op::Flush => None,
            Op::Discard(n) | Op::WriteZeroes(n) => Some(*n),
        }
    }
}

const OP_NAMES: [&str; 5] = ["read", "write", "flush", "discard", "write-zeroes"];

/// Answers `op` at `offset` from `backend`: Ok, or the errno to fail the request with (counted,
/// and logged at a limited rate).
pub fn perform(backend: &dyn Backend, op: Op<'_>, offset: u64, stats: &Stats) -> std::result::Result<(), i32> {
    let index = op.index();
    let len = op.len();
    stats.ops[index].fetch_add(1, Ordering::Relaxed);
    if matches!(op, Op::Write(_, true)) {
        stats.fua.fetch_add(1, Ordering::Relaxed);
    }
    let result = match op {
        _ if len.is_some_and(|n| !in_range(backend, offset, n)) => Err(Error::from_errno(libc::EINVAL)),
        Op::Read(buf) => backend.read(buf, offset),
        Op::Write(data, fua) => backend.write(data, offset, fua),
        Op::Flush => backend.flush(),
        Op::Discard(n) => backend.discard(offset, n),
        Op::WriteZeroes(n) => backend.write_zeroes(offset, n),
    };
    result.map_err(|e| stats.failed(&e, OP_NAMES[index], offset, len.unwrap_or(0)))
}

/// The kernel never sends a request past the end of the device; a buggy or hostile one fails
/// instead of reading zeros, growing the overlay, or overflowing an offset in the backend.
pub fn in_range(backend: &dyn Backend, offset: u64, len: u64) -> bool {
    // The device is the virtual size rounded up to whole blocks (its tail reads as zeros).
    offset.checked_add(len).is_some_and(|end| end <= device_size(backend))
}

/// The size the device shows: the backend's, rounded up to whole blocks.
pub fn device_size(backend: &dyn Backend) -> u64 {
    let bs = backend.block_size().max(1) as u64;
    backend.size().div_ceil(bs) * bs
}

/// Counters for the summary printed at exit (and the tests that check each op arrives).
#[derive(Default)]
pub struct Stats {
    /// Calls into the kernel (ABUSE_XFER, or io_uring_enter for ublk).
    pub calls: AtomicU64,
    /// Requests per op, in the order of `OP_NAMES`.
    pub ops: [AtomicU64; 5],
    /// Writes that carried FUA.
    pub fua: AtomicU64,
    /// Reads answered with extents (the kernel read the image file itself).
    pub described: AtomicU64,
    pub errors: AtomicU64,
    log_limit: Mutex<LogLimit>,
}

/// Failed requests are logged at most LOG_BURST times per LOG_WINDOW, then counted; the count
/// is reported when the next window opens. One corrupt structure under a busy reader would
/// otherwise flood the log.
#[derive(Default)]
struct LogLimit {
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}
const LOG_BURST: u32 = 10;
const LOG_WINDOW: Duration = Duration::from_secs(10);

impl Stats {
    /// Counts and logs a failed request; returns the errno to answer it with.
    fn failed(&self, e: &Error, op: &str, offset: u64, len: u64) -> i32 {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut l = self.log_limit.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if l.window_start.is_none_or(|t| now.duration_since(t) >= LOG_WINDOW) {
            if l.suppressed > 0 {
                eprintln!("vdmount: {} more failed requests were not logged", l.suppressed);
            }
            *l = LogLimit { window_start: Some(now), logged: 0, suppressed: 0 };
        }
        if l.logged < LOG_BURST {
            l.logged += 1;
            eprintln!("vdmount: request {op} at offset {offset} ({len} bytes) failed: {e}");
        } else {
            l.suppressed += 1;
        }
        e.errno()
    }

    /// One line for the log when serving ends; `calls` names what a call into the kernel is.
    pub fn summary(&self, calls: &str) -> String {
        let o: Vec<u64> = self.ops.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total: u64 = o.iter().sum();
        let n = self.calls.load(Ordering::Relaxed);
        format!(
            "{total} requests (read {} of which {} as extents, write {} of which fua {}, flush {}, discard {}, write-zeroes {}), {} failed, {n} {calls} calls ({:.2} per request)",
            o[0], self.described.load(Ordering::Relaxed), o[1], self.fua.load(Ordering::Relaxed), o[2], o[3], o[4],
            self.errors.load(Ordering::Relaxed),
            if total > 0 { n as f64 / total as f64 } else { 0.0 }
        )
    }
}
