//! The read-ahead layer (src/readahead/) against the oracles: compressed images (qcow2 zlib and
//! zstd, streamOptimized VMDK, E01) and an uncompressed qcow2, read by several sequential
//! streams and random readers at once, every byte equal to `qemu-img convert -O raw` (ewfexport
//! for E01); a corrupted grain's error reaching exactly the reads that cover it; no prefetch
//! past the end of a disk whose size is no multiple of the window.

mod common;
use common::rng::Rng;

use common::{make_source_disk, qemu_img, run_ok, scratch};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use vdmount::cache::Cache;
use vdmount::error::Result;
use vdmount::formats::{open, DiskImage, Extents, ImageInfo, OpenOptions};
use vdmount::limits::{READAHEAD_PIECE_BYTES, READAHEAD_WINDOW_BYTES};
use vdmount::readahead::ReadAhead;

/// No multiple of the window or of a piece (but of a sector, as every format needs).
const SIZE: u64 = 37 * (1 << 20) + 3 * 512;

fn source(dir: &Path) -> PathBuf {
    let src = dir.join("src.raw");
    make_source_disk(&src, SIZE, 21);
    src
}

/// The oracle's bytes: qemu-img convert -O raw.
fn qemu_raw(image: &Path) -> Vec<u8> {
    let out = image.with_extension("oracle.raw");
    qemu_img(&["convert", "-U", "-O", "raw", image.to_str().unwrap(), out.to_str().unwrap()]);
    std::fs::read(out).unwrap()
}

/// The oracle for E01: ewfexport -f raw.
fn ewfexport_raw(first: &Path) -> Vec<u8> {
    let out = first.with_extension("oracle");
    run_ok(Command::new("ewfexport").args(["-u", "-q", "-f", "raw", "-t"]).arg(&out).arg(first));
    std::fs::read(out.with_extension("oracle.raw")).unwrap()
}

fn opened(image: &Path) -> Arc<dyn DiskImage> {
    open(image, &OpenOptions::new(Cache::new(64 << 20))).unwrap_or_else(|e| panic!("{}: {e}", image.display()))
}

/// What the disk holds at [offset, offset + len): the oracle, zeros past its end.
fn want(oracle: &[u8], offset: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let start = (offset as usize).min(oracle.len());
    let end = (offset as usize + len).min(oracle.len());
    v[..end - start].copy_from_slice(&oracle[start..end]);
    v
}

/// Request sizes of a sequential stream, in turn: the server's largest, a page cache's,
/// odd multiples of a sector that straddle pieces and clusters.
const SEQ_SIZES: [usize; 5] = [512 << 10, 128 << 10, 66048, 1 << 20, 4096];

/// Four sequential streams over the whole disk (starting at different places) and two random
/// readers, all at once on their own threads, each read checked against the oracle, with
/// `bad` the byte range whose reads must fail (all others must succeed).
fn read_all_ways(disk: &Arc<dyn DiskImage>, oracle: &[u8], bad: Option<(u64, u64)>) {
    let size = disk.virtual_size();
    let failures = AtomicU64::new(0);
    // One read: it must fail if it covers the bad bytes, else give the oracle's.
    let check = |who: &str, offset: u64, len: usize| {
        let mut buf = vec![0xa5u8; len];
        let r = disk.read_at(&mut buf, offset);
        if bad.is_some_and(|(b0, b1)| offset < b1 && offset + len as u64 > b0) {
            assert!(r.is_err(), "{who}: read of {len} at {offset} covers the bad bytes but succeeded");
            failures.fetch_add(1, Ordering::Relaxed);
        } else {
            r.unwrap_or_else(|e| panic!("{who}: read of {len} at {offset}: {e}"));
            assert!(buf == want(oracle, offset, len), "{who}: read of {len} at {offset} differs");
        }
    };
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let check = &check;
            s.spawn(move || {
                // Streams start at 0, a quarter, half and three quarters in, and wrap round.
                let start = size / 4 * t / 512 * 512;
                let mut done = 0u64;
                let mut i = t as usize;
                while done < size {
                    let offset = (start + done) % size;
                    let len = (SEQ_SIZES[i % SEQ_SIZES.len()] as u64).min(size - offset).min(size - done) as usize;
                    i += 1;
                    check(&format!("stream {t}"), offset, len);
                    done += len as u64;
                }
            });
        }
        for t in 0..2u64 {
            let check = &check;
            s.spawn(move || {
                let mut rng = Rng(0x9e37_79b9 + t);
                for _ in 0..400 {
                    // Anywhere, a little past the end included; 512 B to 256 KiB.
                    let offset = rng.next() % (size + (1 << 20)) / 512 * 512;
                    let len = (1 + rng.next() % 512) as usize * 512;
                    check("random", offset, len);
                }
            });
        }
    });
    if bad.is_some() {
        assert!(failures.load(Ordering::Relaxed) >= 4, "every stream crosses the bad bytes once");
    }
}

fn check_image(image: &Path, oracle: &[u8], compressed: bool) {
    assert_eq!(oracle.len() as u64, SIZE, "{}: oracle size", image.display());
    // 8 decoding threads: more than the 6 readers here, or readers alone would count as
    // keeping every core busy and nothing would be prefetched.
    let ra = Arc::new(ReadAhead::with_threads(opened(image), 8));
    let disk: Arc<dyn DiskImage> = ra.clone();
    read_all_ways(&disk, oracle, None);
    let (decoded, taken) = ra.stats();
    if compressed {
        // Four streams over 37 MiB each: some of what they read was decoded ahead and taken
        // from the pool (how much depends on how a loaded machine schedules the threads, so
        // only "some" is asserted; bench/compressed.sh measures how much).
        assert!(decoded > 0 && taken > 0, "{}: {decoded} bytes decoded ahead, {taken} taken", image.display());
    } else {
        // All of it described as extents: nothing to decode, nothing prefetched.
        assert_eq!((decoded, taken), (0, 0), "{}: an uncompressed image was prefetched", image.display());
    }
}

#[test]
fn compressed_images_read_by_streams_and_random_readers_match_the_oracle() {
    let dir = scratch();
    let d = dir.path();
    let src = source(d);
    let s = src.to_str().unwrap();
    let image = |name: &str| d.join(name).to_str().unwrap().to_string();
    qemu_img(&["convert", "-c", "-f", "raw", "-O", "qcow2", s, &image("zlib.qcow2")]);
    qemu_img(&["convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "compression_type=zstd", s, &image("zstd.qcow2")]);
    qemu_img(&["convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", s, &image("stream.vmdk")]);
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", s, &image("plain.qcow2")]);
    for name in ["zlib.qcow2", "zstd.qcow2", "stream.vmdk"] {
        let path = d.join(name);
        check_image(&path, &qemu_raw(&path), true);
    }
    let plain = d.join("plain.qcow2");
    check_image(&plain, &qemu_raw(&plain), false);
    run_ok(Command::new("ewfacquire").args(["-u", "-q", "-c", "deflate:best", "-t"]).arg(d.join("ev")).arg(&src));
    let e01 = d.join("ev.E01");
    check_image(&e01, &ewfexport_raw(&e01), true);
}

#[test]
fn random_reads_alone_start_no_prefetch() {
    let dir = scratch();
    let d = dir.path();
    let src = source(d);
    let img = d.join("zlib.qcow2");
    qemu_img(&["convert", "-c", "-f", "raw", "-O", "qcow2", src.to_str().unwrap(), img.to_str().unwrap()]);
    let oracle = qemu_raw(&img);
    let ra = Arc::new(ReadAhead::with_threads(opened(&img), 8));
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (ra, oracle) = (ra.clone(), &oracle);
            s.spawn(move || {
                let mut rng = Rng(77 + t);
                for _ in 0..2000 {
                    let offset = rng.next() % SIZE / 4096 * 4096;
                    let mut buf = vec![0u8; 4096];
                    ra.read_at(&mut buf, offset).unwrap();
                    assert!(buf == want(oracle, offset, 4096), "read at {offset} differs");
                }
            });
        }
    });
    assert_eq!(ra.stats(), (0, 0), "random reads started a prefetch");
}

/// A streamOptimized VMDK's grains, in file order: (virtual offset, file offset of the
/// compressed bytes, their length), found by walking the markers (VMware's "Virtual Disk
/// Format 5.0", stream-optimized sparse extents): independent of vdmount's reader.
fn grains(file: &[u8]) -> Vec<(u64, usize, usize)> {
    let u64_at = |o: usize| u64::from_le_bytes(file[o..o + 8].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(file[o..o + 4].try_into().unwrap()) as usize;
    assert_eq!(&file[..4], b"KDMV");
    let mut pos = u64_at(64) as usize * 512; // overHead: where the grains start
    let mut out = Vec::new();
    while pos + 16 <= file.len() {
        let (val, size) = (u64_at(pos), u32_at(pos + 8));
        if size > 0 {
            out.push((val * 512, pos + 12, size));
            pos = (pos + 12 + size).div_ceil(512) * 512;
        } else if u32_at(pos + 12) == 0 {
            break; // end of stream
        } else {
            pos += 512 + val as usize * 512; // a grain table, directory or footer, and its sectors
        }
    }
    out
}

#[test]
fn a_corrupted_grain_fails_exactly_the_reads_covering_it() {
    let dir = scratch();
    let d = dir.path();
    let src = source(d);
    let img = d.join("stream.vmdk");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        src.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    let oracle = qemu_raw(&img);
    let mut file = std::fs::read(&img).unwrap();
    let list = grains(&file);
    // One grain per 64 KiB that is not all zeros (make_source_disk: 3 blocks in 5).
    let nonzero = (0..SIZE.div_ceil(65536)).filter(|i| i % 5 != 2 && i % 5 != 4).count();
    assert_eq!(list.len(), nonzero, "grains found");
    // A grain in the middle of a window (not at a piece's edge), its compressed bytes flipped.
    let (virt, at, len) = *list.iter().find(|g| g.0 >= 20 << 20 && g.0 % READAHEAD_PIECE_BYTES == 5 * 65536).unwrap();
    for b in &mut file[at + len / 3..at + len / 3 + 16] {
        *b ^= 0xff;
    }
    let bad_img = d.join("bad.vmdk");
    std::fs::write(&bad_img, &file).unwrap();
    // qemu fails that grain too, and reads its neighbours.
    let qemu_read = |off: u64| {
        let out = Command::new("qemu-io")
            .args(["-r", "-f", "vmdk", "-c", &format!("read {off} 65536")])
            .arg(&bad_img)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("read ") || text.contains("failed"), "qemu-io said: {text}");
        !text.contains("failed")
    };
    assert!(
        !qemu_read(virt) && qemu_read(virt - 65536) && qemu_read(virt + 65536),
        "qemu-io disagrees on the bad grain"
    );
    let ra = Arc::new(ReadAhead::with_threads(opened(&bad_img), 8));
    let disk: Arc<dyn DiskImage> = ra.clone();
    read_all_ways(&disk, &oracle, Some((virt, virt + 65536)));
    assert!(ra.stats().1 > 0, "the streams were not served from the read-ahead");
}

/// Bytes the pool decoded, once it decoded any (or after 20 s): pieces queued ahead of a stream
/// that has ended are still decoded, but on a loaded machine perhaps only after the stream ends.
fn decoded_eventually(ra: &ReadAhead) -> u64 {
    let start = std::time::Instant::now();
    while ra.stats().0 == 0 && start.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    ra.stats().0
}

/// Records the furthest byte any read asked the image for.
struct Furthest(Arc<dyn DiskImage>, AtomicU64);
impl DiskImage for Furthest {
    fn virtual_size(&self) -> u64 {
        self.0.virtual_size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.1.fetch_max(offset + buf.len() as u64, Ordering::Relaxed);
        self.0.read_at(buf, offset)
    }
    fn map(&self, offset: u64, len: u64, out: &mut Extents) -> Result<bool> {
        self.0.map(offset, len, out)
    }
    fn info(&self) -> ImageInfo {
        self.0.info()
    }
}

#[test]
fn no_prefetch_past_the_end() {
    const { assert!(!SIZE.is_multiple_of(READAHEAD_WINDOW_BYTES) && !SIZE.is_multiple_of(READAHEAD_PIECE_BYTES)) };
    let dir = scratch();
    let d = dir.path();
    let src = source(d);
    let img = d.join("zstd.qcow2");
    qemu_img(&[
        "convert",
        "-c",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        "compression_type=zstd",
        src.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    let oracle = qemu_raw(&img);
    let furthest = Arc::new(Furthest(opened(&img), AtomicU64::new(0)));
    let ra = Arc::new(ReadAhead::new(furthest.clone()));
    // One stream to the very end, in requests that do not divide the size.
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut offset = 0u64;
            while offset < SIZE {
                let len = (3 * 65536).min(SIZE - offset) as usize;
                let mut buf = vec![0u8; len];
                ra.read_at(&mut buf, offset).unwrap();
                assert!(buf == want(&oracle, offset, len), "read at {offset} differs");
                offset += len as u64;
            }
        });
    });
    assert!(decoded_eventually(&ra) > 0, "nothing was prefetched");
    assert_eq!(furthest.1.load(Ordering::Relaxed), SIZE, "a read went past the end of the disk");
}

/// Before a server forks, only the thread that opened the image reads (the partition table):
/// no decoding thread may start then, or it would vanish in the forked child.
#[test]
fn the_opening_thread_alone_starts_no_thread() {
    let dir = scratch();
    let d = dir.path();
    let src = source(d);
    let img = d.join("zlib.qcow2");
    qemu_img(&["convert", "-c", "-f", "raw", "-O", "qcow2", src.to_str().unwrap(), img.to_str().unwrap()]);
    let oracle = qemu_raw(&img);
    let ra = ReadAhead::with_threads(opened(&img), 8);
    let read_stream = |from: u64| {
        for i in 0..32u64 {
            let offset = from + i * 131072;
            let mut buf = vec![0u8; 131072];
            ra.read_at(&mut buf, offset).unwrap();
            assert!(buf == want(&oracle, offset, buf.len()), "read at {offset} differs");
        }
    };
    read_stream(0);
    assert_eq!(ra.stats(), (0, 0), "the opening thread started a prefetch");
    std::thread::scope(|s| {
        s.spawn(|| read_stream(8 << 20));
    });
    assert!(decoded_eventually(&ra) > 0, "another thread's sequential reads started no prefetch");
}
