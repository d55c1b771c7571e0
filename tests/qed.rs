//! QED reader tests. Images are made with qemu-img/qemu-io at test time and `vdmount cat` is
//! compared with `qemu-img convert -f qed -O raw` (the oracle); `vdmount_cat_sha256` also reads
//! each disk through the extents path. Refusals must name the file and say what is wrong.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes (all in the first 2 MiB) that leave data, zero clusters (`write -z`), partly written clusters and holes.
const WRITES: &[&str] = &["write -P 0x5a 100k 20k", "write -z 1M 256k", "write -P 0xa5 1900k 3k", "write -z 1500k 4k"];

/// `vdmount cat` of `image` equals qemu's conversion, and the whole disk is described as extents.
fn assert_reads_like_qemu(image: &Path) {
    let want = qemu_raw_sha256(image, Some("qed"));
    let got = vdmount_cat_sha256(image, &[]).unwrap_or_else(|e| panic!("vdmount refused {}: {e}", image.display()));
    assert_eq!(got, want, "vdmount cat and qemu-img convert differ for {}", image.display());
    let (described, size) = described_bytes(image);
    assert_eq!(described, size, "{}: not all of the disk described as extents", image.display());
}

fn info(image: &Path) -> String {
    String::from_utf8(run_ok(vdmount().arg("info").arg(image)).stdout).unwrap()
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn le64_at(path: &Path, offset: usize) -> u64 {
    let data = std::fs::read(path).unwrap();
    u64::from_le_bytes(data[offset..offset + 8].try_into().unwrap())
}

/// A child QED image `name` over `backing` (format `fmt`), `size` long, with `WRITES`.
fn child(dir: &Path, name: &str, backing: &str, fmt: &str, size: &str) -> PathBuf {
    let p = dir.join(name);
    qemu_img(&["create", "-q", "-f", "qed", "-b", backing, "-F", fmt, s(&p), size]);
    qemu_io("qed", &p, WRITES);
    p
}

/// L2 entries equal to 1 (QED_ZERO_CLUSTER) in `image`.
fn zero_cluster_entries(image: &Path) -> usize {
    let data = std::fs::read(image).unwrap();
    let le32 = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
    let entry = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().unwrap());
    let entries = le32(4) * le32(8) / 8;
    let l1 = entry(40) as usize;
    (0..entries)
        .map(|i| entry(l1 + 8 * i) as usize)
        .filter(|&l2| l2 != 0)
        .map(|l2| (0..entries).filter(|j| entry(l2 + 8 * j) == 1).count())
        .sum()
}

#[test]
fn qemu_made_images_at_several_cluster_and_table_sizes() {
    let dir = scratch();
    // An odd size (qemu rounds QED sizes up to whole sectors) with data, text and zero runs.
    let src = dir.path().join("src.raw");
    make_source_disk(&src, 4 * MIB + 1000, 3);
    for cluster in [4 * KIB, 64 * KIB, MIB] {
        for table in [2, 4, 16] {
            let img = dir.path().join(format!("c{cluster}-t{table}.qed"));
            let opts = format!("cluster_size={cluster},table_size={table}");
            qemu_img(&["convert", "-f", "raw", "-O", "qed", "-o", &opts, s(&src), s(&img)]);
            assert_reads_like_qemu(&img);
            qemu_io("qed", &img, WRITES);
            assert_reads_like_qemu(&img);
        }
    }
    // Created empty, then written: holes read as zeros.
    let img = dir.path().join("sparse.qed");
    qemu_img(&["create", "-q", "-f", "qed", "-o", "cluster_size=4096", s(&img), "5242887"]);
    qemu_io("qed", &img, WRITES);
    assert_reads_like_qemu(&img);
}

#[test]
fn info_shows_format_cluster_and_table_size() {
    let dir = scratch();
    let img = dir.path().join("disk.qed");
    qemu_img(&["create", "-q", "-f", "qed", "-o", "cluster_size=16384,table_size=8", s(&img), "3M"]);
    let text = info(&img);
    for want in ["format: qed", "cluster size: 16384", "table size: 8 clusters", "virtual size: 3.0 MiB"] {
        assert!(text.contains(want), "info lacks {want:?}:\n{text}");
    }
}

/// qemu's own table offset check refuses every table of one cluster (it cannot open the images
/// it creates with table_size=1); vdmount reads them.
#[test]
fn table_size_one_reads() {
    let dir = scratch();
    let img = dir.path().join("t1.qed");
    // qemu-img creates the file, then fails to open it for writing: an empty 2 MiB disk.
    let _ = Command::new("qemu-img").args(["create", "-q", "-f", "qed", "-o", "table_size=1", s(&img), "2M"]).output();
    assert_eq!(vdmount_cat_sha256(&img, &[]).unwrap(), sha256_hex(vec![0u8; 2 << 20]));
    assert!(info(&img).contains("table size: 1 clusters"));
}

#[test]
fn backing_files_of_every_format() {
    let dir = scratch();
    let d = dir.path();
    let base = d.join("base.raw");
    make_source_disk(&base, 3 * MIB, 5);
    for fmt in ["qcow2", "vmdk", "qed"] {
        qemu_img(&["convert", "-f", "raw", "-O", fmt, s(&base), s(&d.join(format!("base.{fmt}")))]);
    }
    for fmt in ["raw", "qcow2", "vmdk", "qed"] {
        // Shorter than, as long as and longer than its backing file.
        for size in ["2M", "3M", "5M"] {
            let img = child(d, &format!("on-{fmt}-{size}.qed"), &format!("base.{fmt}"), fmt, size);
            assert_reads_like_qemu(&img);
        }
    }
    // `write -z` over a backing file leaves zero-cluster entries (1), not data.
    assert!(zero_cluster_entries(&d.join("on-raw-3M.qed")) > 0, "no zero clusters to test");
    let text = info(&d.join("on-qcow2-3M.qed"));
    assert!(text.contains("backing file: base.qcow2") && text.contains("format: qcow2"), "{text}");
    // A QED over a QED over a raw file.
    let img = child(d, "top.qed", "on-raw-5M.qed", "qed", "6M");
    assert_reads_like_qemu(&img);
}

/// `-F raw` sets QED_F_BACKING_FORMAT_NO_PROBE: a qcow2 backing file is then read as raw bytes.
#[test]
fn backing_format_raw_is_not_probed() {
    let dir = scratch();
    let d = dir.path();
    let raw = d.join("src.raw");
    make_source_disk(&raw, 2 * MIB, 6);
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", s(&raw), s(&d.join("base.qcow2"))]);
    let img = child(d, "raw-over-qcow2.qed", "base.qcow2", "raw", "4M");
    assert_reads_like_qemu(&img);
    let text = info(&img);
    assert!(text.contains("backing_raw") && text.contains("raw (not probed)"), "{text}");
    assert!(text.contains("format: raw"), "the backing file was probed:\n{text}");
}

#[test]
fn backing_file_outside_the_folder_needs_allow_dir() {
    let dir = scratch();
    let (top, out) = (dir.path().join("top"), dir.path().join("out"));
    std::fs::create_dir_all(&top).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let base = out.join("base.raw");
    make_source_disk(&base, MIB, 7);
    let img = child(&top, "child.qed", "../out/base.raw", "raw", "2M");
    let err = cat_refusal(&img, &[]);
    assert!(err.contains("../out/base.raw") && err.contains("outside"), "{err}");
    assert!(
        err.contains(s(&base)) && err.contains("--allow-dir"),
        "does not say where it leads or what allows it: {err}"
    );
    let want = qemu_raw_sha256(&img, Some("qed"));
    assert_eq!(vdmount_cat_sha256(&img, &["--allow-dir", s(&out)]).unwrap(), want);
}

#[test]
fn backing_file_that_is_the_image_itself_is_a_loop() {
    let dir = scratch();
    let img = dir.path().join("self.qed");
    qemu_img(&["create", "-q", "-f", "qed", "-u", "-b", "self.qed", "-F", "qed", s(&img), "1M"]);
    let err = cat_refusal(&img, &[]);
    assert!(err.contains("loop"), "{err}");
}

#[test]
fn unknown_feature_bit_is_refused_by_number() {
    let dir = scratch();
    let img = dir.path().join("future.qed");
    qemu_img(&["create", "-q", "-f", "qed", s(&img), "1M"]);
    patch(&img, 16, &(1u64 << 9).to_le_bytes());
    let err = cat_refusal(&img, &[]);
    assert!(err.contains("feature bit") && err.contains('9'), "{err}");
}

/// An L2 entry pointing past the file's end: qemu fails the read (EINVAL); vdmount refuses it
/// with the disk offset, and reads the rest of the disk.
#[test]
fn data_cluster_past_the_end_is_refused() {
    let dir = scratch();
    let img = dir.path().join("bad-l2.qed");
    qemu_img(&["create", "-q", "-f", "qed", "-o", "cluster_size=4096", s(&img), "1M"]);
    qemu_io("qed", &img, &["write -P 0x11 0 4k"]);
    let l1 = le64_at(&img, 40);
    let l2 = le64_at(&img, l1 as usize);
    patch(&img, l2, &(1u64 << 40).to_le_bytes());
    let err = cat_refusal(&img, &[]);
    assert!(err.contains("disk offset 0") && err.contains("past"), "{err}");
}

/// QED_F_NEED_CHECK (not closed cleanly): qemu reads such an image read-only without a check,
/// and so does vdmount; info says so.
#[test]
fn need_check_image_reads_as_it_is() {
    let dir = scratch();
    let img = dir.path().join("dirty.qed");
    qemu_img(&["create", "-q", "-f", "qed", "-o", "cluster_size=4096", s(&img), "2M"]);
    qemu_io("qed", &img, WRITES);
    patch(&img, 16, &2u64.to_le_bytes());
    assert_reads_like_qemu(&img);
    let text = info(&img);
    assert!(text.contains("need_check") && text.contains("not closed cleanly"), "{text}");
}

/// `--cow=FILE` over a QED disk: the qcow2 overlay records "qed" as its backing format, and
/// qemu reads the overlay (and its QED base) as vdmount does.
#[test]
fn qcow2_overlay_over_a_qed_base() {
    use vdmount::cache::Cache;
    use vdmount::formats::{self, OpenOptions};
    use vdmount::overlay::qcow2::Qcow2Overlay;
    use vdmount::overlay::Backend;
    let dir = scratch();
    let base = dir.path().join("base.qed");
    qemu_img(&["create", "-q", "-f", "qed", "-o", "cluster_size=4096", s(&base), "3M"]);
    qemu_io("qed", &base, WRITES);
    let file = dir.path().join("overlay.qcow2");
    let image = formats::open(&base, &OpenOptions::new(Cache::new(16 << 20))).unwrap();
    let overlay = Qcow2Overlay::create(&file, image, &base, "qed").unwrap();
    overlay.write(&[0x77; 5000], 90 * KIB, false).unwrap();
    overlay.flush().unwrap();
    drop(overlay);
    let info = String::from_utf8(run_ok(Command::new("qemu-img").args(["info", "-U", s(&file)])).stdout).unwrap();
    assert!(info.contains("backing file format: qed"), "{info}");
    assert_eq!(vdmount_cat_sha256(&file, &[]).unwrap(), qemu_raw_sha256(&file, Some("qcow2")));
}
