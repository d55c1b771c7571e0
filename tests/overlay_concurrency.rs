//! Both overlays under 8 threads writing and reading at once through the `Backend` trait, as the
//! server's workers call it. Thread t owns the 4 KiB blocks whose number is t modulo 8, so every
//! 64 KiB qcow2 cluster is shared by all eight and allocating writes race for the same clusters.
//! Each thread keeps a model of its own blocks (the base's bytes with its writes applied) and
//! checks every read of them at once: what a write acknowledged must read back whatever the
//! neighbours do. At the end the whole disk equals the merged model, and for the qcow2 overlay
//! so does qemu-img's reading of the file (and `qemu-img check` finds it clean).

mod common;
use common::rng::Rng;

use common::*;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use vdmount::cache::Cache;
use vdmount::formats::{self, DiskImage, OpenOptions};
use vdmount::overlay::ephemeral::CowOverlay;
use vdmount::overlay::qcow2::Qcow2Overlay;
use vdmount::overlay::Backend;

const THREADS: u64 = 8;
const BLOCK: u64 = 4096;
const SIZE: u64 = 8 << 20;
const ROUNDS: usize = 400;

fn open_image(path: &Path) -> Arc<dyn DiskImage> {
    formats::open(path, &OpenOptions::new(Cache::new(16 << 20))).unwrap()
}

/// Runs the 8 threads on `disk` over a base whose bytes are `base`; returns the merged model.
fn hammer(disk: Arc<dyn Backend>, base: &[u8]) -> Vec<u8> {
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let disk = Arc::clone(&disk);
            let mut model = base.to_vec();
            std::thread::spawn(move || {
                let mut r = Rng(0x9E37_79B9 * (t + 1));
                let blocks = SIZE / BLOCK / THREADS;
                for round in 0..ROUNDS {
                    // One of my blocks, and a piece of it (sector-aligned most of the time, as
                    // the kernel sends; any byte range sometimes).
                    let block = r.below(blocks) * THREADS + t;
                    let (start, len) = match round % 4 {
                        0 => (0, BLOCK),
                        1 => {
                            let s = r.below(8) * 512;
                            (s, 512 * (1 + r.below((BLOCK - s) / 512)))
                        }
                        _ => {
                            let s = r.below(BLOCK - 1);
                            (s, 1 + r.below(BLOCK - s))
                        }
                    };
                    let off = block * BLOCK + start;
                    if round % 9 == 4 {
                        disk.write_zeroes(off, len).unwrap();
                        model[off as usize..(off + len) as usize].fill(0);
                    } else {
                        let data: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
                        disk.write(&data, off, round % 13 == 0).unwrap();
                        model[off as usize..(off + len) as usize].copy_from_slice(&data);
                    }
                    if round % 17 == 0 {
                        disk.flush().unwrap();
                    }
                    // A read across clusters, checked on my blocks only.
                    let rlen = BLOCK * (1 + r.below(40));
                    let roff = r.below(SIZE - rlen) / 512 * 512;
                    let mut buf = vec![0u8; rlen as usize];
                    disk.read(&mut buf, roff).unwrap();
                    let mut b = roff.div_ceil(BLOCK);
                    while (b + 1) * BLOCK <= roff + rlen {
                        if b % THREADS == t {
                            let at = (b * BLOCK - roff) as usize;
                            let want = &model[(b * BLOCK) as usize..((b + 1) * BLOCK) as usize];
                            assert!(
                                &buf[at..at + BLOCK as usize] == want,
                                "thread {t}, round {round}: block {b} reads differently from what was written"
                            );
                        }
                        b += 1;
                    }
                }
                model
            })
        })
        .collect();
    let models: Vec<Vec<u8>> = threads.into_iter().map(|h| h.join().unwrap()).collect();
    let mut merged = base.to_vec();
    for (b, chunk) in merged.chunks_mut(BLOCK as usize).enumerate() {
        let owner = &models[b % THREADS as usize];
        chunk.copy_from_slice(&owner[b * BLOCK as usize..(b + 1) * BLOCK as usize]);
    }
    let mut all = vec![0u8; SIZE as usize];
    disk.read(&mut all, 0).unwrap();
    assert!(all == merged, "the whole disk differs from the merged model");
    merged
}

#[test]
fn ephemeral_overlay_under_8_writers_and_readers_matches_the_model() {
    let dir = scratch();
    let base = dir.path().join("base.raw");
    make_source_disk(&base, SIZE, 21);
    let bytes = std::fs::read(&base).unwrap();
    let before = sha256_file(&base);
    let cow = CowOverlay::new(open_image(&base), Some(dir.path().to_path_buf())).unwrap();
    hammer(Arc::new(cow), &bytes);
    assert_eq!(sha256_file(&base), before, "the base changed");
}

#[test]
fn qcow2_overlay_under_8_writers_and_readers_matches_the_model_and_qemu() {
    let dir = scratch();
    let base = dir.path().join("base.raw");
    make_source_disk(&base, SIZE, 22);
    let bytes = std::fs::read(&base).unwrap();
    let before = sha256_file(&base);
    let file = dir.path().join("overlay.qcow2");
    let overlay = Qcow2Overlay::create(&file, open_image(&base), &base, "raw").unwrap();
    let disk: Arc<dyn Backend> = Arc::new(overlay);
    let model = hammer(Arc::clone(&disk), &bytes);
    disk.close().unwrap();
    drop(disk);
    assert_eq!(sha256_file(&base), before, "the base changed");
    let out = Command::new("qemu-img").args(["check", "-U"]).arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-img check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = dir.path().join("out.raw");
    run_ok(Command::new("qemu-img").args(["convert", "-f", "qcow2", "-O", "raw"]).arg(&file).arg(&raw));
    assert!(std::fs::read(&raw).unwrap() == model, "qemu-img reads the overlay differently from the model");
}
