//! The ephemeral `--cow` overlay against a model: the base with the same writes, discards and
//! write-zeroes applied in memory. The base file itself must not change.

mod common;
use common::rng::Rng;
use common::*;
use std::sync::Arc;
use vdmount::cache::Cache;
use vdmount::formats::{open, OpenOptions};
use vdmount::overlay::ephemeral::CowOverlay;
use vdmount::overlay::Backend;

#[test]
fn overlay_matches_model_and_base_is_untouched() {
    let dir = scratch();
    let base = dir.path().join("base.raw");
    make_source_disk(&base, 8 << 20, 11);
    let before = sha256_file(&base);
    let disk = open(&base, &OpenOptions::new(Cache::new(16 << 20))).unwrap();
    let mut model = std::fs::read(&base).unwrap();
    let cow = CowOverlay::new(Arc::clone(&disk), Some(dir.path().to_path_buf())).unwrap();

    let mut rng = Rng(0x1234_5678);
    let mut next = |m: u64| rng.below(m);
    for round in 0..300 {
        let len = 1 + next(200_000);
        let off = next(model.len() as u64 - len);
        let (o, l) = (off as usize, len as usize);
        match round % 4 {
            0 | 1 => {
                let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(round as u8)).collect();
                cow.write(&data, off, round % 8 == 0).unwrap();
                model[o..o + l].copy_from_slice(&data);
            }
            2 => {
                cow.discard(off, len).unwrap();
                model[o..o + l].fill(0);
            }
            _ => {
                cow.write_zeroes(off, len).unwrap();
                model[o..o + l].fill(0);
            }
        }
    }
    cow.flush().unwrap();
    // Whole-disk and unaligned reads both equal the model.
    let mut all = vec![0u8; model.len()];
    cow.read(&mut all, 0).unwrap();
    assert!(all == model, "overlay view differs from the model");
    for _ in 0..200 {
        let len = 1 + next(70_000) as usize;
        let off = next((model.len() - len) as u64) as usize;
        let mut buf = vec![0u8; len];
        cow.read(&mut buf, off as u64).unwrap();
        assert!(buf == model[off..off + len], "read at {off}+{len} differs");
    }
    // Reads the server answers with extents (overlay and base file ranges, zeros), read back
    // the way abuse.ko does, also equal the model.
    let mut extents = vdmount::formats::Extents::new(256);
    for _ in 0..200 {
        let len = 1 + next(70_000) as usize;
        let off = next((model.len() - len) as u64) as usize;
        extents.clear();
        assert!(cow.map_read(off as u64, len as u64, &mut extents).unwrap(), "a raw base can always be described");
        assert!(read_extents(extents.as_slice()) == model[off..off + len], "extents at {off}+{len} differ");
    }
    assert_eq!(sha256_file(&base), before, "the base image changed");
    // The overlay file was unlinked at creation: nothing is left in the folder but the base.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("base.raw")]);
}

/// A discard past everything written so far (a hole beyond the overlay's data) reads as zeros.
#[test]
fn discard_beyond_written_data_reads_zeros() {
    let dir = scratch();
    let base = dir.path().join("base.raw");
    make_source_disk(&base, 4 << 20, 5);
    let disk = open(&base, &OpenOptions::new(Cache::new(16 << 20))).unwrap();
    let cow = CowOverlay::new(disk, Some(dir.path().to_path_buf())).unwrap();
    cow.discard(3 << 20, 1 << 20).unwrap();
    let mut buf = vec![0xffu8; 1 << 20];
    cow.read(&mut buf, 3 << 20).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "discarded tail does not read as zeros");
}

/// Issue 14: names planted in the folder (the old predictable `vdmount-cow-PID`, as a symlink
/// to a file elsewhere and as a file) neither block the overlay nor receive its writes.
#[test]
fn planted_names_neither_block_nor_receive_writes() {
    let dir = scratch();
    let elsewhere = scratch();
    let base = elsewhere.path().join("base.raw");
    make_source_disk(&base, 1 << 20, 6);
    let target = elsewhere.path().join("precious");
    std::fs::write(&target, b"do not touch").unwrap();
    let pid = std::process::id();
    std::os::unix::fs::symlink(&target, dir.path().join(format!("vdmount-cow-{pid}"))).unwrap();
    std::fs::write(dir.path().join(format!("vdmount-cow-{}", pid + 1)), b"planted").unwrap();
    let disk = open(&base, &OpenOptions::new(Cache::new(16 << 20))).unwrap();
    let cow = CowOverlay::new(disk, Some(dir.path().to_path_buf())).unwrap();
    cow.write(&[0xab; 8192], 4096, true).unwrap();
    let mut buf = [0u8; 8192];
    cow.read(&mut buf, 4096).unwrap();
    assert!(buf.iter().all(|&b| b == 0xab));
    assert_eq!(std::fs::read(&target).unwrap(), b"do not touch");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "the overlay left a name behind");
}
