//! Parallels reader tests. Expanding images are made with qemu-img/qemu-io at test time and
//! `vdmount cat` is compared with `qemu-img convert -f parallels -O raw` (the oracle); v1 images
//! are v2 images patched per the specification and checked against the data they were made from.
//! Bundles (`NAME.hdd/` with DiskDescriptor.xml) are built here from qemu-made images; their
//! oracle is the data they were built from: the base image's source disk, with each snapshot's
//! writes applied through qcow2 overlays made by qemu-img. `vdmount_cat_sha256` also reads each
//! disk through the extents path.

mod common;

use common::*;
use std::path::{Path, PathBuf};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes that leave data, partly written clusters and holes (all in the first 6 MiB).
const WRITES: &[&str] = &["write -P 0x5a 100k 20k", "write -P 0xa5 1900k 3k", "write -P 0x33 5M 70k"];
/// A later snapshot's writes, over some of the same clusters.
const WRITES2: &[&str] = &["write -P 0x77 110k 1k", "write -P 0x44 3M 1M", "write -z 5M 4k"];

fn assert_reads_like_qemu(image: &Path) {
    let want = qemu_raw_sha256(image, Some("parallels"));
    assert_reads(image, &[], &want);
}

/// `vdmount cat [args] image` has SHA-256 `want`, and the whole disk is described as extents.
fn assert_reads(image: &Path, args: &[&str], want: &str) {
    let got = vdmount_cat_sha256(image, args).unwrap_or_else(|e| panic!("vdmount refused {}: {e}", image.display()));
    assert_eq!(got, want, "{} {args:?}: vdmount cat differs from the oracle", image.display());
    if args.is_empty() {
        let (described, size) = described_bytes(image);
        assert_eq!(described, size, "{}: not all of the disk described as extents", image.display());
    }
}

fn info(image: &Path, args: &[&str]) -> String {
    String::from_utf8(run_ok(vdmount().arg("info").args(args).arg(image)).stdout).unwrap()
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Rewrites the v2 image at `path` as v1 ("WithoutFreeSpace", BAT entries in sectors).
fn make_v1(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    b[0..16].copy_from_slice(b"WithoutFreeSpace");
    let tracks = le32(&b, 28);
    for i in 0..le32(&b, 32) as usize {
        let at = 64 + 4 * i;
        let v = le32(&b, at) * tracks;
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn qemu_made_images_at_several_cluster_sizes() {
    let dir = scratch();
    let src = dir.path().join("src.raw");
    make_source_disk(&src, 6 * MIB + 1024, 3);
    for cluster in [4 * KIB, 64 * KIB, MIB] {
        let img = dir.path().join(format!("c{cluster}.prl"));
        let opts = format!("cluster_size={cluster}");
        qemu_img(&["convert", "-f", "raw", "-O", "parallels", "-o", &opts, s(&src), s(&img)]);
        assert_reads_like_qemu(&img);
        qemu_io("parallels", &img, WRITES);
        assert_reads_like_qemu(&img);
    }
    // Created empty, then written: holes read as zeros.
    let img = dir.path().join("sparse.prl");
    qemu_img(&["create", "-q", "-f", "parallels", "-o", "cluster_size=16k", s(&img), "7M"]);
    qemu_io("parallels", &img, WRITES);
    assert_reads_like_qemu(&img);
    let text = info(&img, &[]);
    for want in ["format: parallels", "cluster size: 16384", "WithouFreSpacExt", "virtual size: 7.0 MiB"] {
        assert!(text.contains(want), "info lacks {want:?}:\n{text}");
    }
}

/// qemu writes only v2; a v1 image is the same image with sector-unit BAT entries. Its oracle is
/// the data it was converted from (and qemu's reading of the v1 image agrees).
#[test]
fn v1_images_read_like_their_source() {
    let dir = scratch();
    let src = dir.path().join("src.raw");
    make_source_disk(&src, 3 * MIB + 512, 4);
    let want = sha256_file(&src);
    for cluster in [4 * KIB, MIB] {
        let img = dir.path().join(format!("v1-{cluster}.prl"));
        let opts = format!("cluster_size={cluster}");
        qemu_img(&["convert", "-f", "raw", "-O", "parallels", "-o", &opts, s(&src), s(&img)]);
        make_v1(&img);
        assert_reads(&img, &[], &want);
        assert_eq!(qemu_raw_sha256(&img, Some("parallels")), want);
        assert!(info(&img, &[]).contains("WithoutFreeSpace (BAT entries in sectors)"));
    }
}

/// An image left open by a writer (in_use set) reads as it is, and info says so; a format
/// extension cluster (ext_off) is not data and is not read as such.
#[test]
fn dirty_flag_and_format_extension() {
    let dir = scratch();
    let src = dir.path().join("src.raw");
    make_source_disk(&src, 2 * MIB, 5);
    let img = dir.path().join("d.prl");
    qemu_img(&["convert", "-f", "raw", "-O", "parallels", "-o", "cluster_size=64k", s(&src), s(&img)]);
    let want = sha256_file(&src);
    let mut b = std::fs::read(&img).unwrap();
    b[44..48].copy_from_slice(&0x746F_6E59u32.to_le_bytes());
    // A format extension cluster after the data: its magic, then "End of features".
    let ext = b.len() as u64;
    b.extend_from_slice(&0xAB23_4CEF_23DC_EA87u64.to_le_bytes());
    b.resize(ext as usize + 65536, 0);
    b[56..64].copy_from_slice(&(ext / 512).to_le_bytes());
    std::fs::write(&img, &b).unwrap();
    assert_reads(&img, &[], &want);
    let text = info(&img, &[]);
    assert!(text.contains("dirty") && text.contains("not closed cleanly"), "{text}");
    assert!(text.contains(&format!("format extension: at offset {ext}")), "{text}");
    // An ext_off that points nowhere useful is reported, not followed.
    b[56..64].copy_from_slice(&(1u64 << 50).to_le_bytes());
    std::fs::write(&img, &b).unwrap();
    assert_reads(&img, &[], &want);
    assert!(info(&img, &[]).contains("holds no format extension"));
}

const ROOT: &str = "{0b2d3c4e-1111-4a5b-8c9d-000000000001}";
const MID: &str = "{0b2d3c4e-2222-4a5b-8c9d-000000000002}";
const TOP: &str = "{5fbaabe3-6958-40ff-92a7-860e329aab41}";
const NULL: &str = "{00000000-0000-0000-0000-000000000000}";

/// DiskDescriptor.xml for one storage of `sectors` with `images` (GUID, Type, File), and
/// snapshots (GUID, parent GUID).
fn descriptor(sectors: u64, images: &[(&str, &str, &str)], shots: &[(&str, &str)]) -> String {
    let mut x = format!(
        "<?xml version='1.0' encoding='UTF-8'?>\n<Parallels_disk_image Version=\"1.0\">\n  <Disk_Parameters>\n    \
         <Disk_size>{sectors}</Disk_size>\n    <Cylinders>{}</Cylinders>\n    <PhysicalSectorSize>512</PhysicalSectorSize>\n    \
         <Heads>16</Heads>\n    <Sectors>32</Sectors>\n    <Padding>0</Padding>\n    <Encryption>\n      \
         <Engine>{NULL}</Engine>\n      <Data></Data>\n    </Encryption>\n    <UID>{{6a1e2f3d-0000-0000-0000-00000000beef}}</UID>\n    \
         <Name>disk</Name>\n    <Miscellaneous>\n      <CompatLevel>level2</CompatLevel>\n      <Bootable>1</Bootable>\n    \
         </Miscellaneous>\n  </Disk_Parameters>\n  <StorageData>\n    <Storage>\n      <Start>0</Start>\n      \
         <End>{sectors}</End>\n      <Blocksize>2048</Blocksize>\n",
        sectors / 16 / 32
    );
    for (guid, kind, file) in images {
        x += &format!("      <Image>\n        <GUID>{guid}</GUID>\n        <Type>{kind}</Type>\n        <File>{file}</File>\n      </Image>\n");
    }
    x += "    </Storage>\n  </StorageData>\n  <Snapshots>\n";
    for (guid, parent) in shots {
        x += &format!("    <Shot>\n      <GUID>{guid}</GUID>\n      <ParentGUID>{parent}</ParentGUID>\n    </Shot>\n");
    }
    x + "  </Snapshots>\n</Parallels_disk_image>\n"
}

/// `opts` (comma-separated key=value) with every key under `prefix`.
fn nest(prefix: &str, opts: &str) -> String {
    opts.split(',').map(|kv| format!("{prefix}{kv}")).collect::<Vec<_>>().join(",")
}

struct Bundle {
    _dir: tempfile::TempDir,
    hdd: PathBuf,
    /// Expected SHA-256 of the root snapshot, the middle one and the current state.
    root: String,
    mid: String,
    top: String,
}

/// `disk.hdd/` with three images: ROOT (the source disk, of `root_type`), MID (WRITES) and TOP
/// (WRITES2), each snapshot a child of the one before. The oracle for each is the source disk
/// with the same writes applied through qcow2 overlays.
fn bundle(root_type: &str) -> Bundle {
    let dir = scratch();
    let d = dir.path();
    let hdd = d.join("disk.hdd");
    std::fs::create_dir(&hdd).unwrap();
    let size = 6 * MIB;
    let src = d.join("src.raw");
    make_source_disk(&src, size, 7);
    let root_file = format!("disk.hdd.0.{ROOT}.hds");
    let mid_file = format!("disk.hdd.0.{MID}.hds");
    let top_file = format!("disk.hdd.0.{TOP}.hds");
    if root_type == "Plain" {
        std::fs::copy(&src, hdd.join(&root_file)).unwrap();
    } else {
        qemu_img(&["convert", "-f", "raw", "-O", "parallels", s(&src), s(&hdd.join(&root_file))]);
    }
    // Each snapshot image written by qemu over its parents, as Parallels writes them: a cluster
    // first written in a snapshot is filled from the parents.
    let root_fmt = if root_type == "Plain" { "raw" } else { "parallels" };
    let root_opts = format!("driver={root_fmt},file.filename={}", s(&hdd.join(&root_file)));
    let mid_opts = format!("driver=parallels,file.filename={}", s(&hdd.join(&mid_file)));
    let top_opts = format!("driver=parallels,file.filename={}", s(&hdd.join(&top_file)));
    let mid_chain = format!("{mid_opts},{}", nest("backing.", &root_opts));
    let top_chain = format!("{top_opts},{}", nest("backing.", &mid_chain));
    for (file, chain, writes) in [(&mid_file, &mid_chain, WRITES), (&top_file, &top_chain, WRITES2)] {
        qemu_img(&["create", "-q", "-f", "parallels", s(&hdd.join(file)), &size.to_string()]);
        let mut cmd = std::process::Command::new("qemu-io");
        cmd.arg("--image-opts");
        for w in writes {
            cmd.args(["-c", w]);
        }
        let out = run_ok(cmd.arg(chain));
        assert!(!String::from_utf8_lossy(&out.stdout).contains("failed"), "qemu-io {writes:?} on {file}");
    }
    // The oracle: the source under two qcow2 overlays with the same writes.
    let (ov1, ov2) = (d.join("ov1.qcow2"), d.join("ov2.qcow2"));
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", s(&src), "-F", "raw", s(&ov1)]);
    qemu_io("qcow2", &ov1, WRITES);
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", s(&ov1), "-F", "qcow2", s(&ov2)]);
    qemu_io("qcow2", &ov2, WRITES2);
    let images =
        [(ROOT, root_type, root_file.as_str()), (MID, "Compressed", &mid_file), (TOP, "Compressed", &top_file)];
    let xml = descriptor(size / 512, &images, &[(ROOT, NULL), (MID, ROOT), (TOP, MID)]);
    std::fs::write(hdd.join("DiskDescriptor.xml"), xml).unwrap();
    Bundle {
        root: sha256_file(&src),
        mid: qemu_raw_sha256(&ov1, None),
        top: qemu_raw_sha256(&ov2, None),
        hdd,
        _dir: dir,
    }
}

#[test]
fn bundle_with_two_snapshots() {
    for root_type in ["Compressed", "Plain"] {
        let b = bundle(root_type);
        assert_ne!(b.mid, b.top);
        let xml = b.hdd.join("DiskDescriptor.xml");
        // The folder and the descriptor open the same disk: the current state.
        assert_reads(&b.hdd, &[], &b.top);
        assert_reads(&xml, &[], &b.top);
        assert_reads(&b.hdd, &["--format", "parallels"], &b.top);
        // Older snapshots, by GUID (braces and case do not matter).
        assert_reads(&b.hdd, &["--snapshot", MID], &b.mid);
        let bare = ROOT.trim_matches(|c| c == '{' || c == '}').to_uppercase();
        assert_reads(&b.hdd, &["--snapshot", &bare], &b.root);
        let text = info(&b.hdd, &[]);
        for want in ["format: parallels", "the current state", &format!("{TOP} -> {MID} -> {ROOT}"), "bundle"] {
            assert!(text.contains(want), "info lacks {want:?}:\n{text}");
        }
        let text = info(&b.hdd, &["--snapshot", MID]);
        assert!(text.contains("an older snapshot"), "{text}");
        let e = cat_refusal(&xml, &["--snapshot", "{12345678-0000-0000-0000-000000000000}"]);
        assert!(e.contains("no such snapshot"), "{e}");
    }
}

/// Without a TopGUID or the predefined top GUID, the current state is the only leaf.
#[test]
fn bundle_top_without_the_predefined_guid() {
    let b = bundle("Compressed");
    let xml = b.hdd.join("DiskDescriptor.xml");
    let leaf = "{9d000000-0000-0000-0000-00000000000f}";
    let text = std::fs::read_to_string(&xml).unwrap().replace(TOP, leaf);
    std::fs::write(&xml, &text).unwrap();
    let top_file = format!("disk.hdd.0.{TOP}.hds");
    std::fs::rename(b.hdd.join(&top_file), b.hdd.join(top_file.replace(TOP, leaf))).unwrap();
    assert_reads(&xml, &[], &b.top);
    // Two leaves: which one is current cannot be told.
    let two = text.replace(&format!("<ParentGUID>{MID}</ParentGUID>"), &format!("<ParentGUID>{ROOT}</ParentGUID>"));
    std::fs::write(&xml, two).unwrap();
    assert!(cat_refusal(&xml, &[]).contains("which snapshot is current"));
}

/// Files named by the descriptor are confined to the bundle folder; missing files, loops among
/// snapshot parents and hostile XML are refused naming the descriptor.
#[test]
fn bundle_refusals() {
    let b = bundle("Compressed");
    let xml = b.hdd.join("DiskDescriptor.xml");
    let good = std::fs::read_to_string(&xml).unwrap();
    let outside = b.hdd.parent().unwrap().join("outside.hds");
    let top_file = format!("disk.hdd.0.{TOP}.hds");
    std::fs::copy(b.hdd.join(&top_file), &outside).unwrap();

    std::fs::write(&xml, good.replace(&top_file, "../outside.hds")).unwrap();
    let e = cat_refusal(&xml, &[]);
    assert!(e.contains("outside") && e.contains("--allow-dir"), "{e}");
    assert_reads(&xml, &["--allow-dir", s(b.hdd.parent().unwrap())], &b.top);
    std::fs::write(&xml, good.replace(&top_file, s(&outside))).unwrap();
    assert!(cat_refusal(&xml, &[]).contains("outside"));
    assert_reads(&xml, &["--allow-any-path"], &b.top);

    for (label, text, needle) in [
        ("missing file", good.replace(&top_file, "gone.hds"), "gone.hds"),
        ("loop", good.replace(&format!("<ParentGUID>{NULL}"), &format!("<ParentGUID>{TOP}")), "loop"),
        (
            "no image for a snapshot",
            good.replace(&format!("<GUID>{MID}</GUID>\n        <Type>"), "<GUID>{1}</GUID><Type>"),
            "no image",
        ),
        ("not XML", good.replace("</Parallels_disk_image>", ""), "XML"),
        ("huge disk", good.replace("<Disk_size>12288", "<Disk_size>99999999999999999"), "limit"),
        ("storage past the disk", good.replace("<End>12288", "<End>12289"), "not a range"),
        (
            "encrypted",
            good.replace(&format!("<Engine>{NULL}"), "<Engine>{11111111-0000-0000-0000-000000000000}"),
            "encrypted",
        ),
        ("a .hds that is not Parallels", good.replace(&top_file, "../src.raw"), "signature"),
    ] {
        std::fs::write(&xml, &text).unwrap();
        let args: &[&str] = if label.contains("not Parallels") { &["--allow-any-path"] } else { &[] };
        let e = vdmount_cat_sha256(&xml, args).expect_err(label);
        assert!(e.contains(needle), "{label}: {e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{label}: not one line: {e}");
    }
    // info shows the chain anyway, and which image could not be opened.
    std::fs::write(&xml, good.replace(&top_file, "gone.hds")).unwrap();
    let out = vdmount().arg("info").arg(&xml).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("format: parallels"), "{text}");
    assert!(text.contains("not opened") && text.contains("gone.hds"), "{text}");
    // A snapshot image opened alone has no parent: its unallocated clusters read as zeros, as
    // qemu reads it.
    assert_reads_like_qemu(&b.hdd.join(&top_file));
    assert!(cat_refusal(&b.hdd.join(&top_file), &["--snapshot", MID]).contains("no snapshots"));
}

/// BAT entries that point outside the data area are refused when read, naming the image.
#[test]
fn bad_bat_entries_are_refused() {
    let dir = scratch();
    let img = dir.path().join("bad.prl");
    qemu_img(&["create", "-q", "-f", "parallels", "-o", "cluster_size=4k", s(&img), "1M"]);
    qemu_io("parallels", &img, &["write -P 1 0 8k"]);
    let good = std::fs::read(&img).unwrap();
    // Entry 1 far past the end of the file (entries count clusters in v2).
    let mut b = good.clone();
    b[68..72].copy_from_slice(&(1u32 << 20).to_le_bytes());
    std::fs::write(&img, &b).unwrap();
    assert!(cat_refusal(&img, &[]).contains("past the end of the file"));
    // Data said to start at 8 KiB: entry 0 (cluster 1, at 4 KiB) points before it.
    let mut b = good.clone();
    b[48..52].copy_from_slice(&16u32.to_le_bytes());
    std::fs::write(&img, &b).unwrap();
    assert!(cat_refusal(&img, &[]).contains("before the data area"));
}

/// Bundles written by Parallels Desktop (fixtures/third-party/parallels-*): one v1 expanding
/// image, one plain image, and a split disk of six storages.
#[test]
fn third_party_parallels_images() {
    let read = check_third_party("parallels");
    assert_eq!(read.len(), 3, "third-party Parallels images read: {read:?}");
}
