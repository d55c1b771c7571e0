//! Hostile cases: one bad request fails that request, not the server.

use super::harness::*;

/// A backend whose reads fail in one range, like an image with one corrupt table.
struct FailsInRange {
    bad: std::ops::Range<u64>,
}

impl vdmount::overlay::Backend for FailsInRange {
    fn size(&self) -> u64 {
        1 << 20
    }
    fn block_size(&self) -> u32 {
        512
    }
    fn writable(&self) -> bool {
        false
    }
    fn read(&self, buf: &mut [u8], offset: u64) -> vdmount::error::Result<()> {
        if offset < self.bad.end && offset + buf.len() as u64 > self.bad.start {
            return Err(vdmount::error::Error::corrupt(
                Path::new("bad.qcow2"),
                format!("L2 table at {offset} is corrupt"),
            ));
        }
        buf.fill(0xab);
        Ok(())
    }
}

#[test]
fn a_failed_read_fails_one_request_and_the_next_one_works() {
    use vdmount::abuse::server::answer;
    use vdmount::abuse::uapi::{AbuseRequest, ABUSE_OP_READ};
    use vdmount::request::Stats;
    let backend = FailsInRange { bad: 8192..12288 };
    let stats = Stats::default();
    let mut slot = vec![0u8; 65536];
    let read = |offset: u64, length: u32| AbuseRequest { offset, length, op: ABUSE_OP_READ, ..Default::default() };

    let (result, data) = answer(&backend, &read(8192, 4096), &mut slot, &[], &stats);
    assert_eq!(result, -libc::EIO, "a corrupt structure fails the request with EIO");
    assert_eq!(data, 0);
    let (result, data) = answer(&backend, &read(16384, 4096), &mut slot, &[], &stats);
    assert_eq!(result, 0, "the next good read works");
    assert_eq!(data, slot.as_ptr() as u64);
    assert!(slot[..4096].iter().all(|b| *b == 0xab));
    // Past the end of the device, and a length that overflows the offset: errors, not panics.
    assert!(answer(&backend, &read(1 << 20, 512), &mut slot, &[], &stats).0 < 0);
    assert!(answer(&backend, &read(u64::MAX - 100, 4096), &mut slot, &[], &stats).0 < 0);
    assert_eq!(stats.errors.load(Ordering::Relaxed), 3);
    // Many failures later the server still answers.
    for _ in 0..1000 {
        answer(&backend, &read(8192, 512), &mut slot, &[], &stats);
    }
    assert_eq!(answer(&backend, &read(0, 512), &mut slot, &[], &stats).0, 0);
}

/// Requests past the end of the device, or whose end overflows, over a `--cow` overlay: before
/// answer() checked ranges, a read at 2^64-100 overflowed `offset + len` in the overlay (a panic
/// in debug builds, a silent empty read in release) and a write-zeroes past the end grew the
/// overlay file without bound.
#[test]
fn requests_past_the_end_fail_over_a_cow_overlay() {
    use vdmount::abuse::server::answer;
    use vdmount::abuse::uapi::*;
    use vdmount::request::Stats;
    let dir = scratch();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, vec![7u8; 1 << 20]).unwrap();
    let opts = vdmount::formats::OpenOptions::new(vdmount::cache::Cache::new(1 << 20));
    let base = vdmount::formats::open(&raw, &opts).unwrap();
    let cow = vdmount::overlay::ephemeral::CowOverlay::new(base, Some(dir.path().to_path_buf())).unwrap();
    let stats = Stats::default();
    let mut slot = vec![0u8; 65536];
    let area = vec![1u8; 65536];
    let req = |op: u16, offset: u64, length: u32| AbuseRequest {
        offset,
        length,
        op,
        data: area.as_ptr() as u64,
        ..Default::default()
    };
    for (op, offset, length) in [
        (ABUSE_OP_READ, u64::MAX - 100, 4096),
        (ABUSE_OP_READ, 1 << 20, 512),
        (ABUSE_OP_READ, (1 << 20) - 512, 1024),
        (ABUSE_OP_WRITE, u64::MAX - 100, 4096),
        (ABUSE_OP_WRITE, 1 << 40, 4096),
        (ABUSE_OP_WRITE_ZEROES, 1 << 40, u32::MAX),
        (ABUSE_OP_DISCARD, u64::MAX - 10, 4096),
    ] {
        let (result, _) = answer(&cow, &req(op, offset, length), &mut slot, &area, &stats);
        assert!(result < 0, "op {op} at {offset} ({length} bytes) past the end of a 1 MiB device gave {result}");
    }
    // In range, the overlay still works.
    assert_eq!(answer(&cow, &req(ABUSE_OP_WRITE, 4096, 4096), &mut slot, &area, &stats).0, 0);
    assert_eq!(answer(&cow, &req(ABUSE_OP_READ, 4096, 4096), &mut slot, &area, &stats).0, 0);
    assert!(slot[..4096].iter().all(|b| *b == 1));
    assert_eq!(answer(&cow, &req(ABUSE_OP_READ, 0, 4096), &mut slot, &area, &stats).0, 0);
    assert!(slot[..4096].iter().all(|b| *b == 7));
}
