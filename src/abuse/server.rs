//! The service loop: fetch a batch of block requests from abuse.ko, answer each from the
//! backend, and hand the answers back in the same call that fetches the next batch, so a busy
//! server makes about one system call per batch. Several threads can run it on one device, each
//! on its own hardware queue where the device has several.

use super::device::ControlDevice;
use super::uapi::*;
use crate::formats::{Extent, Extents};
use crate::overlay::Backend;
use crate::request::{in_range, perform, Op, Stats};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

/// Requests fetched per call.
pub const BATCH: usize = 16;
/// Largest request the server accepts (the kernel splits bigger ones).
pub const MAX_IO_BYTES: u32 = 512 * 1024;
/// Requests in flight at once on the device.
pub const QUEUE_DEPTH: u32 = 64;

/// Serves the requests of hardware queue `queue` of `dev` from `backend` until `stop` is set and
/// a signal interrupts the wait.
pub fn serve(
    dev: &ControlDevice,
    queue: u32,
    backend: &dyn Backend,
    stop: &AtomicBool,
    stats: &Stats,
) -> io::Result<()> {
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
            queue,
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
    if req.op != ABUSE_OP_READ || req.length == 0 || !in_range(backend, req.offset, req.length.into()) {
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
    stats.ops[0].fetch_add(1, Ordering::Relaxed);
    stats.described.fetch_add(1, Ordering::Relaxed);
    Some(wire.len() as u16)
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
    let read_at = slot.as_ptr() as u64;
    let op = match req.op {
        ABUSE_OP_READ => slot.get_mut(..len).map(Op::Read),
        ABUSE_OP_WRITE => write_payload(write_area, req).map(|d| Op::Write(d, req.flags & ABUSE_REQ_FUA != 0)),
        ABUSE_OP_FLUSH => Some(Op::Flush),
        ABUSE_OP_DISCARD => Some(Op::Discard(len as u64)),
        ABUSE_OP_WRITE_ZEROES => Some(Op::WriteZeroes(len as u64)),
        _ => None,
    };
    let Some(op) = op else {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        return (-libc::EINVAL, 0);
    };
    let is_read = matches!(op, Op::Read(_));
    match perform(backend, op, req.offset, stats) {
        Ok(()) if is_read => (0, read_at),
        Ok(()) => (0, 0),
        Err(errno) => (-errno, 0),
    }
}

/// The payload the kernel copied into the write area for `req`, if its address is inside it.
pub fn write_payload<'a>(area: &'a [u8], req: &AbuseRequest) -> Option<&'a [u8]> {
    let start = req.data.checked_sub(area.as_ptr() as u64)? as usize;
    area.get(start..start.checked_add(req.length as usize)?)
}
