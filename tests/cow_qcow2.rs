//! `--cow=FILE`: the persistent qcow2 overlay (src/cow_qcow2.rs), checked against qemu-img
//! (check, convert, info, commit) and against an in-memory model of the disk (the base's bytes
//! with the same writes applied).

mod common;
use common::rng::Rng;

use common::*;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use vdmount::cache::Cache;
use vdmount::formats::{self, DiskImage, OpenOptions};
use vdmount::overlay::qcow2::{OverlayFile, Qcow2Overlay};
use vdmount::overlay::Backend;

const CLUSTER: u64 = 65536;

fn open_image(path: &Path) -> Arc<dyn DiskImage> {
    formats::open(path, &OpenOptions::new(Cache::new(64 << 20))).unwrap()
}

/// One guest request.
#[derive(Clone, Debug)]
enum Op {
    Write(u64, Vec<u8>),
    Zero(u64, u64),
    Discard(u64, u64),
    Flush,
}

impl Op {
    fn apply(&self, disk: &dyn Backend, model: &mut [u8]) {
        match self {
            Op::Write(off, data) => {
                disk.write(data, *off, false).unwrap();
                model[*off as usize..*off as usize + data.len()].copy_from_slice(data);
            }
            Op::Zero(off, len) | Op::Discard(off, len) => {
                if matches!(self, Op::Zero(..)) {
                    disk.write_zeroes(*off, *len).unwrap();
                } else {
                    disk.discard(*off, *len).unwrap();
                }
                model[*off as usize..(*off + *len) as usize].fill(0);
            }
            Op::Flush => disk.flush().unwrap(),
        }
    }

    /// The guest bytes this request may change.
    fn range(&self) -> Option<(u64, u64)> {
        match self {
            Op::Write(off, data) => Some((*off, *off + data.len() as u64)),
            Op::Zero(off, len) | Op::Discard(off, len) => Some((*off, *off + *len)),
            Op::Flush => None,
        }
    }
}

/// A hand-picked sequence covering every write path, then `random` random requests.
fn ops(size: u64, seed: u64, random: usize) -> Vec<Op> {
    let mut r = Rng(seed | 1);
    let mb = 1 << 20;
    let mut v = vec![
        Op::Write(0, r.bytes(4096)),                       // sub-cluster, copy-on-write from base
        Op::Write(3 * CLUSTER + 7, r.bytes(100)),          // unaligned
        Op::Write(5 * CLUSTER, r.bytes(CLUSTER as usize)), // one whole cluster
        Op::Write(7 * CLUSTER + 1000, r.bytes(200_000)),   // spanning clusters
        Op::Write(2 * mb + 512, r.bytes(mb as usize)),     // big
        Op::Write(2 * mb + 300_000, r.bytes(mb as usize)), // overwrites the previous one
        Op::Flush,
        Op::Zero(20 * CLUSTER + 5000, 3 * CLUSTER), // partial clusters at both ends
        Op::Discard(4 * mb, mb),                    // whole unallocated clusters
        Op::Write(4 * mb + CLUSTER + 10, r.bytes(1000)), // into a zeroed unallocated cluster
        Op::Discard(2 * mb, 4 * CLUSTER),           // whole allocated clusters
        Op::Write(2 * mb + CLUSTER + 100, r.bytes(5000)), // reuses a zeroed allocation
        Op::Write(2 * mb + 2 * CLUSTER, r.bytes(CLUSTER as usize)), // the same, whole cluster
        Op::Zero(size - 70_000, 70_000),            // up to the end of the disk
        Op::Write(size - 512, r.bytes(512)),        // last sector
        Op::Flush,
    ];
    for _ in 0..random {
        let off = r.below(size - 1);
        let len = (1 + r.below(300_000)).min(size - off);
        v.push(match r.below(10) {
            0 => Op::Zero(off, len),
            1 => Op::Discard(off, len),
            2 => Op::Flush,
            _ => Op::Write(off, r.bytes(len as usize)),
        });
    }
    v
}

/// `qemu-img check` exit code (0 clean, 2 corruption, 3 leaks only) and its output.
fn qemu_check(path: &Path) -> (i32, String) {
    let out = Command::new("qemu-img").args(["check", "-U"]).arg(path).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn assert_clean(path: &Path) {
    let (code, text) = qemu_check(path);
    assert_eq!(code, 0, "qemu-img check {}:\n{text}", path.display());
}

/// The whole disk read through the Backend, in pieces that cross cluster boundaries. Each
/// piece is also described as extents (as the server answers abuse.ko) and read back: the
/// bytes must be the same, and with a raw or qcow2 base every piece can be described.
fn read_all(disk: &dyn Backend) -> Vec<u8> {
    let size = disk.size();
    let mut out = vec![0u8; size as usize];
    let mut extents = vdmount::formats::Extents::new(256);
    let mut pos = 0u64;
    let mut n = 1000u64;
    while pos < size {
        let len = n.min(size - pos);
        let piece = &mut out[pos as usize..(pos + len) as usize];
        disk.read(piece, pos).unwrap();
        extents.clear();
        assert!(disk.map_read(pos, len, &mut extents).unwrap(), "piece at {pos}+{len} not described");
        assert!(read_extents(extents.as_slice()) == *piece, "extents at {pos}+{len} differ from the read");
        pos += len;
        n = if n > 2 << 20 { 1000 } else { n * 3 + 17 };
    }
    out
}

/// Everything that must hold of a closed overlay whose disk should equal `model`.
fn check_overlay(file: &Path, base: &Path, base_format: &str, model: &[u8]) {
    assert_clean(file);
    assert_eq!(qemu_raw_sha256(file, Some("qcow2")), sha256_hex(model), "qemu-img convert of {}", file.display());
    assert_eq!(vdmount_cat_sha256(file, &[]).unwrap(), sha256_hex(model), "vdmount cat of {}", file.display());
    let out = run_ok(Command::new("qemu-img").args(["info", "-U", "--output=json"]).arg(file));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let canonical = std::fs::canonicalize(base).unwrap();
    assert_eq!(info["backing-filename"].as_str(), canonical.to_str(), "{info}");
    assert_eq!(info["backing-filename-format"].as_str(), Some(base_format), "{info}");
    assert_eq!(info["format"].as_str(), Some("qcow2"));
    assert_eq!(info["virtual-size"].as_u64(), Some(model.len() as u64));
}

/// A base image of `format` ("raw" or "qcow2") in `dir`, and its bytes.
fn make_base(dir: &Path, format: &str, size: u64, seed: u64) -> (PathBuf, Vec<u8>) {
    let raw = dir.join("source.raw");
    make_source_disk(&raw, size, seed);
    let bytes = std::fs::read(&raw).unwrap();
    if format == "raw" {
        return (raw, bytes);
    }
    let image = dir.join("base.qcow2");
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", raw.to_str().unwrap(), image.to_str().unwrap()]);
    std::fs::remove_file(&raw).unwrap();
    (image, bytes)
}

/// Create, write, check; reopen, write more, check again. The base never changes.
fn overlay_round_trip(base_format: &str) {
    let dir = scratch();
    let size = (12 << 20) + 1536;
    let (base, mut model) = make_base(dir.path(), base_format, size, 7);
    let base_sha = sha256_file(&base);
    let file = dir.path().join("overlay.qcow2");

    let overlay = Qcow2Overlay::create(&file, open_image(&base), &base, base_format).unwrap();
    assert_eq!(overlay.size(), size);
    for op in ops(size, 11, 60) {
        op.apply(&overlay, &mut model);
    }
    assert!(read_all(&overlay) == model, "reads through the Backend differ from the model");
    drop(overlay);
    check_overlay(&file, &base, base_format, &model);

    // A second session appends to the same file.
    let overlay = Qcow2Overlay::open(&file, open_image(&base)).unwrap();
    assert!(read_all(&overlay) == model, "the reopened overlay reads differently");
    for op in ops(size, 12, 60) {
        op.apply(&overlay, &mut model);
    }
    assert!(read_all(&overlay) == model, "reads after reopening differ from the model");
    drop(overlay);
    check_overlay(&file, &base, base_format, &model);
    assert_eq!(sha256_file(&base), base_sha, "the base image changed");

    // Opening the overlay as an image (backing chain and all) shows the same disk.
    let reopened = open_image(&file);
    let mut all = vec![0u8; size as usize];
    reopened.read_at(&mut all, 0).unwrap();
    assert!(all == model);
}

#[test]
fn overlay_over_raw_base_matches_model_and_qemu() {
    overlay_round_trip("raw");
}

#[test]
fn overlay_over_qcow2_base_matches_model_and_qemu() {
    overlay_round_trip("qcow2");
}

#[test]
fn qemu_img_commit_writes_the_overlay_into_the_base() {
    let dir = scratch();
    let size = 8 << 20;
    let (base, mut model) = make_base(dir.path(), "raw", size, 3);
    let file = dir.path().join("overlay.qcow2");
    let overlay = Qcow2Overlay::create(&file, open_image(&base), &base, "raw").unwrap();
    for op in ops(size, 5, 40) {
        op.apply(&overlay, &mut model);
    }
    drop(overlay);
    qemu_img(&["commit", file.to_str().unwrap()]);
    assert_eq!(sha256_file(&base), sha256_hex(&model), "the committed base differs from the model");
}

#[test]
fn refusals_name_the_file() {
    let dir = scratch();
    let (base, _) = make_base(dir.path(), "raw", 1 << 20, 1);
    let file = dir.path().join("exists.qcow2");
    std::fs::write(&file, b"x").unwrap();
    let err = Qcow2Overlay::create(&file, open_image(&base), &base, "raw").err().unwrap().to_string();
    assert!(err.contains("exists.qcow2") && err.contains("must not exist"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"x", "an existing file was touched");

    let err = Qcow2Overlay::create(&dir.path().join("new.qcow2"), open_image(&base), &base, "floppy")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("new.qcow2") && err.contains("floppy"), "{err}");
    assert!(!dir.path().join("new.qcow2").exists());

    // Overlays that are not ours to append to.
    let small = dir.path().join("small-clusters.qcow2");
    qemu_img(&["create", "-f", "qcow2", "-o", "cluster_size=4096", small.to_str().unwrap(), "1M"]);
    let err = Qcow2Overlay::open(&small, open_image(&base)).err().unwrap().to_string();
    assert!(err.contains("small-clusters.qcow2") && err.contains("cluster size"), "{err}");

    let snap = dir.path().join("snapshots.qcow2");
    qemu_img(&["create", "-f", "qcow2", snap.to_str().unwrap(), "1M"]);
    qemu_img(&["snapshot", "-c", "one", snap.to_str().unwrap()]);
    let err = Qcow2Overlay::open(&snap, open_image(&base)).err().unwrap().to_string();
    assert!(err.contains("snapshots.qcow2") && err.contains("snapshots"), "{err}");

    let compressed = dir.path().join("compressed.qcow2");
    qemu_img(&["convert", "-c", "-f", "raw", "-O", "qcow2", base.to_str().unwrap(), compressed.to_str().unwrap()]);
    let overlay = Qcow2Overlay::open(&compressed, open_image(&base)).unwrap();
    let mut buf = vec![0u8; 4096];
    let err = overlay.read(&mut buf, 0).err().unwrap().to_string();
    assert!(err.contains("compressed.qcow2") && err.contains("compressed cluster"), "{err}");
}

/// A file that records every change made to it, for the power-cut test.
#[derive(Clone, Debug)]
enum FileOp {
    Write(u64, Vec<u8>),
    SetLen(u64),
    Sync,
}

struct Recording {
    file: File,
    log: Arc<Mutex<Vec<FileOp>>>,
}

impl OverlayFile for Recording {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.log.lock().unwrap().push(FileOp::Write(offset, data.to_vec()));
        self.file.write_all_at(data, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.log.lock().unwrap().push(FileOp::SetLen(len));
        self.file.set_len(len)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn sync(&self) -> io::Result<()> {
        self.log.lock().unwrap().push(FileOp::Sync);
        self.file.sync_data()
    }
}

/// The file as a power cut after `cut` logged operations could leave it: everything before the
/// last sync is there; of the operations after it, those `keep` says.
fn replay(log: &[FileOp], cut: usize, keep: &mut dyn FnMut() -> bool, path: &Path) {
    let last_sync = log[..cut].iter().rposition(|op| matches!(op, FileOp::Sync)).map_or(0, |i| i + 1);
    let f = File::create(path).unwrap();
    for (i, op) in log[..cut].iter().enumerate() {
        if i >= last_sync && !keep() {
            continue;
        }
        match op {
            FileOp::Write(off, data) => f.write_all_at(data, *off).unwrap(),
            FileOp::SetLen(len) => f.set_len(*len).unwrap(),
            FileOp::Sync => {}
        }
    }
}

/// The disk as a completed guest flush left it.
struct FlushPoint {
    /// Log length when the flush returned.
    log_len: usize,
    model: Vec<u8>,
    /// Guest byte ranges requests changed after it (a cut may leave them old, new or, for
    /// unflushed writes to new clusters, zero).
    touched_after: Vec<(u64, u64)>,
}

#[test]
fn power_cut_at_any_point_keeps_flushed_writes_and_consistent_metadata() {
    let dir = scratch();
    let size = 8 << 20;
    let (base, base_bytes) = make_base(dir.path(), "raw", size, 9);
    let file_path = dir.path().join("overlay.qcow2");
    let log = Arc::new(Mutex::new(Vec::new()));
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&file_path).unwrap();
    let recording = Recording { file, log: log.clone() };
    let overlay = Qcow2Overlay::create_on(Box::new(recording), &file_path, open_image(&base), &base, "raw").unwrap();

    let mut model = base_bytes.clone();
    let mut flushed =
        vec![FlushPoint { log_len: log.lock().unwrap().len(), model: model.clone(), touched_after: Vec::new() }];
    // First the cases where a cut between data and metadata could expose wrong bytes: copy of
    // base data into a new cluster, and reuse of allocations kept by a discard. Every log
    // position of this part is a cut; the random rest is cut at 16 places.
    let mb = 1 << 20;
    let mut r = Rng(5);
    let mut sequence = vec![
        Op::Write(mb, r.bytes(4 * CLUSTER as usize)),
        Op::Write(6 * mb + 100, r.bytes(3000)),
        Op::Flush,
        Op::Discard(mb, 4 * CLUSTER),
        Op::Flush,
        Op::Write(mb + 500, r.bytes(2000)),
        Op::Write(mb + CLUSTER, r.bytes(CLUSTER as usize)),
        Op::Write(mb + 2 * CLUSTER + 60_000, r.bytes(5000)),
        Op::Write(7 * mb + 4000, r.bytes(200_000)),
        Op::Flush,
    ];
    let special = sequence.len();
    sequence.extend(ops(size, 21, 80));
    sequence.push(Op::Flush);
    for op in &sequence {
        op.apply(&overlay, &mut model);
        if let Some(r) = op.range() {
            flushed.last_mut().unwrap().touched_after.push(r);
        }
        if matches!(op, Op::Flush) {
            flushed.push(FlushPoint {
                log_len: log.lock().unwrap().len(),
                model: model.clone(),
                touched_after: Vec::new(),
            });
        }
    }
    let log = log.lock().unwrap().clone();
    drop(overlay);

    let mut rng = Rng(77);
    let cut_file = dir.path().join("cut.qcow2");
    let raw = dir.path().join("cut.raw");
    // Each cut as an exact prefix of the log, then with a random subset of the writes after the
    // last sync (the disk may reorder those).
    let special_end = flushed[3].log_len;
    let cuts =
        (flushed[0].log_len..=special_end).chain((1..=16).map(|i| special_end + (log.len() - special_end) * i / 16));
    let mut checked = 0;
    for (cut, reorder) in cuts.flat_map(|c| [(c, false), (c, true)]) {
        replay(&log, cut, &mut || !reorder || rng.below(2) == 0, &cut_file);
        let (code, text) = qemu_check(&cut_file);
        assert!(
            code == 0 || code == 3,
            "cut at {cut}/{} (reordered: {reorder}): qemu-img check exit {code}:\n{text}",
            log.len()
        );
        let last = flushed.iter().rev().find(|f| f.log_len <= cut).unwrap();
        let (expected, touched) = (&last.model, &last.touched_after);
        run_ok(Command::new("qemu-img").args(["convert", "-U", "-f", "qcow2", "-O", "raw"]).arg(&cut_file).arg(&raw));
        let got = std::fs::read(&raw).unwrap();
        assert_eq!(got.len(), expected.len());
        // Every 512-byte sector no request touched since the last completed flush is intact.
        let mut sector = 0u64;
        while sector < size {
            let end = sector + 512;
            if !touched.iter().any(|&(a, b)| a < end && sector < b) {
                let (s, e) = (sector as usize, end as usize);
                assert!(
                    got[s..e] == expected[s..e],
                    "cut at {cut} (reordered: {reorder}): sector {} lost a flushed write",
                    sector / 512
                );
            }
            sector = end;
        }
        // Our own reader agrees with qemu on what the cut file holds.
        let reopened = Qcow2Overlay::open(&cut_file, open_image(&base)).unwrap();
        assert!(read_all(&reopened) == got, "cut at {cut}: vdmount and qemu-img read the cut overlay differently");
        drop(reopened);
        checked += 1;
    }
    assert!(checked >= 2 * (16 + 20), "only {checked} cuts");
    assert!(matches!(sequence[special - 1], Op::Flush));
}

#[test]
fn refcount_block_is_added_when_the_file_passes_2_gib() {
    let dir = scratch();
    let size = 8 << 20;
    let (base, mut model) = make_base(dir.path(), "raw", size, 4);
    let file = dir.path().join("overlay.qcow2");
    let overlay = Qcow2Overlay::create(&file, open_image(&base), &base, "raw").unwrap();
    Op::Write(100, vec![5; 1000]).apply(&overlay, &mut model);
    drop(overlay);
    // Grow the file (sparse, unreferenced, refcount 0) to just below 2 GiB: the next clusters
    // need refcount block 1.
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len((2 << 30) - 3 * CLUSTER).unwrap();
    drop(f);
    let overlay = Qcow2Overlay::open(&file, open_image(&base)).unwrap();
    for op in ops(size, 8, 20) {
        op.apply(&overlay, &mut model);
    }
    assert!(read_all(&overlay) == model);
    drop(overlay);
    assert!(std::fs::metadata(&file).unwrap().len() > 2 << 30, "the test did not cross 2 GiB");
    assert_clean(&file);
    assert_eq!(qemu_raw_sha256(&file, Some("qcow2")), sha256_hex(&model));
}

#[test]
fn concurrent_writers_keep_metadata_consistent() {
    let dir = scratch();
    let size = 16 << 20;
    let (base, mut model) = make_base(dir.path(), "raw", size, 6);
    let file = dir.path().join("overlay.qcow2");
    let overlay = Arc::new(Qcow2Overlay::create(&file, open_image(&base), &base, "raw").unwrap());
    // Each thread owns a 3,000,000-byte region (not cluster-aligned, so neighbours share the
    // clusters at the edges) and also writes into a shared 4 MiB region whose result is not
    // compared.
    let shared = 12u64 << 20;
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let overlay = overlay.clone();
            std::thread::spawn(move || {
                let mut r = Rng(t * 1000 + 1);
                let region = t * 3_000_000;
                let mut mine = Vec::new();
                for i in 0..60 {
                    let len = 1 + r.below(100_000);
                    let off = region + r.below(3_000_000 - len);
                    let data = r.bytes(len as usize);
                    overlay.write(&data, off, i % 7 == 0).unwrap();
                    mine.push((off, data));
                    let off = shared + r.below((4 << 20) - 200_000);
                    let n = 1 + r.below(200_000) as usize;
                    match i % 5 {
                        0 => overlay.write_zeroes(off, r.below(200_000)).unwrap(),
                        1 => overlay.flush().unwrap(),
                        _ => overlay.write(&r.bytes(n), off, false).unwrap(),
                    }
                }
                mine
            })
        })
        .collect();
    for t in threads {
        for (off, data) in t.join().unwrap() {
            model[off as usize..off as usize + data.len()].copy_from_slice(&data);
        }
    }
    let got = read_all(overlay.as_ref());
    assert!(got[..shared as usize] == model[..shared as usize], "disjoint writes were lost");
    drop(overlay);
    assert_clean(&file);
    let raw = dir.path().join("out.raw");
    run_ok(Command::new("qemu-img").args(["convert", "-f", "qcow2", "-O", "raw"]).arg(&file).arg(&raw));
    let qemu = std::fs::read(&raw).unwrap();
    assert!(qemu == got, "qemu-img reads the overlay differently from the Backend");
}

#[test]
fn appends_to_an_overlay_made_by_qemu_img_create() {
    let dir = scratch();
    let size = 8 << 20;
    let (base, mut model) = make_base(dir.path(), "raw", size, 2);
    let file = dir.path().join("made-by-qemu.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", base.to_str().unwrap(), "-F", "raw", file.to_str().unwrap()]);
    let overlay = Qcow2Overlay::open(&file, open_image(&base)).unwrap();
    for op in ops(size, 3, 30) {
        op.apply(&overlay, &mut model);
    }
    drop(overlay);
    assert_clean(&file);
    assert_eq!(qemu_raw_sha256(&file, Some("qcow2")), sha256_hex(&model));
}

/// Issue 14: `create` and `open` never go through a symlink at the overlay's name, `create`
/// makes it 0600, and `open` takes only the user's own regular file.
#[test]
fn overlay_file_is_never_a_symlink_and_is_private() {
    use std::os::unix::fs::MetadataExt;
    let dir = scratch();
    let base = dir.path().join("base.raw");
    make_source_disk(&base, 1 << 20, 4);
    let file = dir.path().join("ovl.qcow2");
    drop(Qcow2Overlay::create(&file, open_image(&base), &base, "raw").unwrap());
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
    let link = dir.path().join("link.qcow2");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let err = Qcow2Overlay::open(&link, open_image(&base)).err().unwrap().to_string();
    assert!(err.contains("symbolic link"), "{err}");
    let dangling = dir.path().join("dangling.qcow2");
    std::os::unix::fs::symlink(dir.path().join("through-link.qcow2"), &dangling).unwrap();
    assert!(Qcow2Overlay::create(&dangling, open_image(&base), &base, "raw").is_err());
    assert!(!dir.path().join("through-link.qcow2").exists(), "created through a dangling symlink");
    assert!(std::fs::symlink_metadata(&dangling).unwrap().file_type().is_symlink(), "the planted symlink was removed");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
        let err = Qcow2Overlay::open(&file, open_image(&base)).err().unwrap().to_string();
        assert!(err.contains("owned by uid 65534"), "{err}");
    }
}
