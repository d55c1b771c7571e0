//! The service loop: fetch a batch of block requests from abuse.ko, answer each from the
//! `DiskImage`, and hand the answers back in the same call that fetches the next batch, so a
//! busy server makes about one system call per batch.

use super::device::ControlDevice;
use super::uapi::*;
use crate::formats::DiskImage;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Requests fetched per call.
pub const BATCH: usize = 16;
/// Largest request the server accepts (the kernel splits bigger ones).
pub const MAX_IO_BYTES: u32 = 512 * 1024;
/// Requests in flight at once on the device.
pub const QUEUE_DEPTH: u32 = 64;

/// Serves requests on `dev` from `disk` until `stop` is set (and a signal interrupts the wait).
pub fn serve(dev: &ControlDevice, disk: &Arc<dyn DiskImage>, stop: &AtomicBool) -> io::Result<()> {
    let mut requests = vec![AbuseRequest::default(); BATCH];
    let mut completions: Vec<AbuseCompletion> = Vec::with_capacity(BATCH);
    // One slot of MAX_IO_BYTES per request for read data; a separate area for write payloads.
    let mut read_area = vec![0u8; BATCH * MAX_IO_BYTES as usize];
    let mut write_area = vec![0u8; MAX_IO_BYTES as usize];
    let mut errors_logged = 0u32;

    loop {
        let mut x = AbuseXfer {
            completions: completions.as_ptr() as u64,
            n_completions: completions.len() as u32,
            requests: requests.as_mut_ptr() as u64,
            max_requests: if stop.load(Ordering::Relaxed) { 0 } else { BATCH as u32 },
            data: write_area.as_mut_ptr() as u64,
            data_len: write_area.len() as u64,
            flags: ABUSE_XFER_WAIT,
            ..Default::default()
        };
        let r = dev.xfer(&mut x);
        // Whatever else happened, the kernel took the first n_completed answers.
        completions.drain(..x.n_completed as usize);
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                if stop.load(Ordering::Relaxed) && completions.is_empty() {
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e),
        }
        if stop.load(Ordering::Relaxed) && completions.is_empty() && x.n_requests == 0 {
            return Ok(());
        }
        for (i, req) in requests[..x.n_requests as usize].iter().enumerate() {
            let slot = &mut read_area[i * MAX_IO_BYTES as usize..(i + 1) * MAX_IO_BYTES as usize];
            let (result, data) = answer(disk.as_ref(), req, slot, &mut errors_logged);
            completions.push(AbuseCompletion { tag: req.tag, gen: req.gen, result, reserved: 0, data });
        }
    }
}

/// The result (0 or -errno) and read-data address for one request.
fn answer(disk: &dyn DiskImage, req: &AbuseRequest, slot: &mut [u8], errors_logged: &mut u32) -> (i32, u64) {
    match req.op {
        ABUSE_OP_READ => {
            let len = req.length as usize;
            if len > slot.len() {
                return (-libc::EINVAL, 0);
            }
            match disk.read_at(&mut slot[..len], req.offset) {
                Ok(()) => (0, slot.as_ptr() as u64),
                Err(e) => {
                    // One bad structure fails one request; say so, but don't flood the log.
                    if *errors_logged < 20 {
                        eprintln!("vdmount: read of {len} bytes at offset {} failed: {e}", req.offset);
                        *errors_logged += 1;
                    }
                    (-e.errno(), 0)
                }
            }
        }
        ABUSE_OP_FLUSH => (0, 0),
        ABUSE_OP_WRITE => (-libc::EROFS, 0),
        _ => (-libc::EOPNOTSUPP, 0),
    }
}
