//! Block requests as a hostile or buggy kernel could send them — any op, offset, length, flags
//! and data address — answered by `vdmount::abuse::server::answer` over an in-memory backend and
//! over a copy-on-write overlay on a raw image. It must never panic; a request past the end of
//! the device must fail with an errno; a read the server would answer with extents must describe
//! exactly the bytes it reads.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::sync::Mutex;
use vdmount::abuse::server::{answer, describe_read};
use vdmount::request::Stats;
use vdmount::abuse::uapi::{AbuseExtent, AbuseRequest, ABUSE_EXTENT_ZERO};
use vdmount::error::Error;
use vdmount::error::Result;
use vdmount::formats::{Format, OpenOptions};
use vdmount::overlay::ephemeral::CowOverlay;
use vdmount::overlay::Backend;

/// Bytes in each answer slot and in the write area: small, so lengths often exceed them.
const SLOT: usize = 64 << 10;

#[derive(Arbitrary, Debug)]
struct Request {
    op: u16,
    flags: u16,
    offset: u64,
    length: u32,
    data: Data,
}

/// Where the write payload is said to be.
#[derive(Arbitrary, Debug)]
enum Data {
    /// At this offset inside the write area (taken modulo twice its size, so also past it).
    InArea(u32),
    /// Any address at all.
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Device size (the raw image's size, and the memory backend's), at most 1 MiB.
    size: u32,
    requests: Vec<Request>,
}

/// A backend holding the whole disk in memory, checking every range itself.
struct MemDisk(Mutex<Vec<u8>>);

impl MemDisk {
    fn range(&self, offset: u64, len: u64) -> Result<std::ops::Range<usize>> {
        let size = self.0.lock().unwrap().len() as u64;
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(offset as usize..end as usize),
            _ => Err(Error::from_errno(libc::EINVAL)),
        }
    }
}

impl Backend for MemDisk {
    fn size(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }
    fn block_size(&self) -> u32 {
        512
    }
    fn writable(&self) -> bool {
        true
    }
    fn read(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let r = self.range(offset, buf.len() as u64)?;
        buf.copy_from_slice(&self.0.lock().unwrap()[r]);
        Ok(())
    }
    fn write(&self, data: &[u8], offset: u64, _fua: bool) -> Result<()> {
        let r = self.range(offset, data.len() as u64)?;
        self.0.lock().unwrap()[r].copy_from_slice(data);
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.write_zeroes(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        let r = self.range(offset, len)?;
        self.0.lock().unwrap()[r].fill(0);
        Ok(())
    }
}

fn serve_all(backend: &dyn Backend, requests: &[Request], write_area: &[u8]) {
    let stats = Stats::default();
    let mut slot = vec![0u8; SLOT];
    let mut extents = vdmount::formats::Extents::new(256);
    let mut wire: Vec<AbuseExtent> = Vec::new();
    for r in requests {
        let data = match r.data {
            Data::InArea(at) => (write_area.as_ptr() as u64).wrapping_add(at as u64 % (2 * SLOT as u64)),
            Data::Raw(addr) => addr,
        };
        let req =
            AbuseRequest { offset: r.offset, length: r.length, op: r.op, flags: r.flags, data, ..Default::default() };
        let (result, addr) = answer(backend, &req, &mut slot, write_area, &stats);
        assert!(result <= 0, "answer gave a positive result {result}");
        if result == 0 && r.op == vdmount::abuse::uapi::ABUSE_OP_READ {
            assert_eq!(addr, slot.as_ptr() as u64, "a good read must point at its slot");
        }
        // Anything that reaches past the end of the device (the size rounded up to whole
        // blocks, as the kernel sees it) must fail.
        let bs = backend.block_size().max(1) as u64;
        let device_size = backend.size().div_ceil(bs) * bs;
        let past_end = r.offset.checked_add(r.length as u64).is_none_or(|end| end > device_size);
        let ranged = matches!(r.op, 0 | 1 | 3 | 4);
        if ranged && past_end {
            assert!(result < 0, "request {req:?} past the end of a {device_size}-byte device succeeded");
        }
        // A read answered with extents (as abuse.ko would read them) holds the same bytes.
        if let Some(n) = describe_read(backend, &req, &mut extents, &mut wire, &stats) {
            assert!(!past_end, "request {req:?} past the end was described");
            assert_eq!(n as usize, wire.len());
            let total: u64 = wire.iter().map(|e| e.length as u64).sum();
            assert_eq!(total, r.length as u64, "extents of {req:?} do not add up");
            if result == 0 {
                let mut at = 0usize;
                for e in &wire {
                    let want = &slot[at..at + e.length as usize];
                    if e.fd == ABUSE_EXTENT_ZERO {
                        assert!(want.iter().all(|&b| b == 0), "a zero extent of {req:?} holds data");
                    } else {
                        let mut got = vec![0u8; e.length as usize];
                        // SAFETY: the fd is the backend's open file, alive for this call.
                        let n =
                            unsafe { libc::pread(e.fd, got.as_mut_ptr().cast(), got.len(), e.offset as libc::off_t) };
                        assert_eq!(n, got.len() as isize, "extent of {req:?} is not inside its file");
                        assert!(got == want, "extents of {req:?} differ from the read");
                    }
                    at += e.length as usize;
                }
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let size = (input.size % (1 << 20)) as usize;
    let requests = &input.requests[..input.requests.len().min(64)];
    let write_area: Vec<u8> = (0..SLOT).map(|i| i as u8).collect();

    let mem = MemDisk(Mutex::new(vec![0u8; size]));
    serve_all(&mem, requests, &write_area);

    // The same requests over a --cow overlay on a raw image of the same size.
    let image: Vec<u8> = (0..size).map(|i| (i / 512) as u8).collect();
    let path = vdmount_fuzz::write_input("raw", &image);
    let mut opts = OpenOptions::new(vdmount::cache::Cache::new(1 << 20));
    opts.format = Some(Format::Raw);
    let base = vdmount::formats::open(&path, &opts).expect("a raw image always opens");
    let cow = CowOverlay::new(base, Some(vdmount_fuzz::scratch_dir().to_path_buf())).expect("overlay");
    serve_all(&cow, requests, &write_area);
});
