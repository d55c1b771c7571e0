//! qcow2 and qcow (v1) reader tests. Each reading test makes its images with qemu-img/qemu-io
//! at test time and compares `vdmount cat` with `qemu-img convert -O raw` (the oracle).
//! Refusal tests check exit status, that the message names the file and says what is wrong.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

/// A deterministic raw source disk of `mib` MiB in `dir`.
fn source(dir: &Path, name: &str, mib: u64, seed: u64) -> PathBuf {
    let p = dir.join(name);
    make_source_disk(&p, mib * MIB, seed);
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `vdmount cat` of `image` must equal `qemu-img convert -O raw` of it.
fn assert_reads_like_qemu(image: &Path) {
    let want = qemu_raw_sha256(image, None);
    let got = vdmount_cat_sha256(image, &[]).unwrap_or_else(|e| panic!("vdmount refused {}: {e}", image.display()));
    assert_eq!(got, want, "vdmount cat and qemu-img convert differ for {}", image.display());
}

fn vdmount_info(image: &Path, args: &[&str]) -> String {
    let out = run_ok(vdmount().arg("info").args(args).arg(image));
    String::from_utf8(out.stdout).unwrap()
}

/// Whether qemu-img map reports compressed clusters in `image`.
fn has_compressed_clusters(image: &Path) -> bool {
    let out = run_ok(Command::new("qemu-img").args(["map", "--output=json"]).arg(image));
    String::from_utf8_lossy(&out.stdout).contains("\"compressed\": true")
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn header_u64(path: &Path, offset: usize) -> u64 {
    let data = std::fs::read(path).unwrap();
    u64::from_be_bytes(data[offset..offset + 8].try_into().unwrap())
}

#[test]
fn v2_and_v3_every_cluster_size() {
    let dir = scratch();
    let src = source(dir.path(), "src.raw", 4, 1);
    for compat in ["0.10", "1.1"] {
        for cluster in ["512", "4k", "64k", "2M"] {
            let img = dir.path().join(format!("c{compat}-{cluster}.qcow2"));
            qemu_img(&[
                "convert",
                "-O",
                "qcow2",
                "-o",
                &format!("compat={compat},cluster_size={cluster}"),
                s(&src),
                s(&img),
            ]);
            assert_reads_like_qemu(&img);
            assert_eq!(vdmount_cat_sha256(&img, &[]).unwrap(), sha256_file(&src), "{}", img.display());
        }
    }
    let info = vdmount_info(&dir.path().join("c0.10-4k.qcow2"), &[]);
    assert!(info.contains("version: 2") && info.contains("cluster size: 4096"), "{info}");
}

#[test]
fn sparse_image_with_unallocated_clusters() {
    let dir = scratch();
    let img = dir.path().join("sparse.qcow2");
    qemu_img(&["create", "-f", "qcow2", s(&img), "5M"]);
    qemu_io("qcow2", &img, &["write -P 0x61 0 3k", "write -P 0x62 1M 200k", "write -P 0x63 4600k 7k"]);
    assert_reads_like_qemu(&img);
}

#[test]
fn compressed_zlib_and_zstd() {
    let dir = scratch();
    let src = source(dir.path(), "src.raw", 4, 2);
    for (ctype, cluster) in [("zlib", "64k"), ("zstd", "64k"), ("zlib", "512"), ("zstd", "2M")] {
        let img = dir.path().join(format!("{ctype}-{cluster}.qcow2"));
        qemu_img(&[
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            &format!("compression_type={ctype},cluster_size={cluster}"),
            s(&src),
            s(&img),
        ]);
        assert!(has_compressed_clusters(&img), "{} holds no compressed cluster", img.display());
        assert_reads_like_qemu(&img);
        let info = vdmount_info(&img, &[]);
        assert!(info.contains(&format!("compression type: {ctype}")), "{info}");
    }
}

#[test]
fn writes_over_a_compressed_image() {
    let dir = scratch();
    let src = source(dir.path(), "src.raw", 4, 3);
    for ctype in ["zlib", "zstd"] {
        let img = dir.path().join(format!("mixed-{ctype}.qcow2"));
        qemu_img(&["convert", "-c", "-O", "qcow2", "-o", &format!("compression_type={ctype}"), s(&src), s(&img)]);
        // Whole clusters, and partial ones that make qemu decompress, patch and rewrite a cluster.
        qemu_io("qcow2", &img, &["write -P 0xab 1M 64k", "write -P 0xcd 100k 3k", "write -P 0xef 3000k 70k"]);
        assert_reads_like_qemu(&img);
    }
}

#[test]
fn zero_clusters() {
    let dir = scratch();
    let src = source(dir.path(), "src.raw", 4, 4);
    let img = dir.path().join("zeros.qcow2");
    qemu_img(&["convert", "-O", "qcow2", s(&src), s(&img)]);
    qemu_io("qcow2", &img, &["write -z 0 128k", "write -z -u 1M 64k"]);
    assert_reads_like_qemu(&img);

    // Zero clusters in an overlay must hide the backing file's data.
    let top = dir.path().join("zeros-top.qcow2");
    qemu_img(&["create", "-f", "qcow2", "-b", "src.raw", "-F", "raw", s(&top), "4M"]);
    qemu_io("qcow2", &top, &["write -z 64k 256k", "write -P 0x44 2M 4k"]);
    assert_reads_like_qemu(&top);
    assert_ne!(vdmount_cat_sha256(&top, &[]).unwrap(), sha256_file(&src));
}

#[test]
fn extended_l2_subclusters() {
    let dir = scratch();
    source(dir.path(), "base.raw", 4, 5);
    for (cluster, backing) in [("64k", true), ("64k", false), ("32k", true)] {
        let img = dir.path().join(format!("l2ext-{cluster}-{backing}.qcow2"));
        let mut args = vec!["create", "-f", "qcow2", "-o"];
        let opts = format!("extended_l2=on,cluster_size={cluster}");
        args.push(&opts);
        if backing {
            args.extend(["-b", "base.raw", "-F", "raw"]);
        }
        args.extend([s(&img), "4M"]);
        qemu_img(&args);
        // Partial subcluster writes, zeroed subclusters, and untouched subclusters next to them.
        qemu_io(
            "qcow2",
            &img,
            &["write -P 0x11 5k 3k", "write -z 70k 2k", "write -P 0x22 130k 1k", "write -P 0x33 1M 100k"],
        );
        assert_reads_like_qemu(&img);
        assert!(vdmount_info(&img, &[]).contains("extended_l2"));
    }
}

#[test]
fn external_data_file() {
    let dir = scratch();
    for (name, opts) in [("df", "data_file=df.data"), ("dfraw", "data_file=dfraw.data,data_file_raw=on")] {
        let img = dir.path().join(format!("{name}.qcow2"));
        // qemu resolves the data file name against its working directory: create from the folder.
        run_ok(
            Command::new("qemu-img")
                .args(["create", "-f", "qcow2", "-o", opts, &format!("{name}.qcow2"), "4M"])
                .current_dir(dir.path()),
        );
        qemu_io("qcow2", &img, &["write -P 0x5a 0 1M", "write -P 0x6b 2M 64k", "write -z 128k 64k"]);
        // The test runs vdmount from the crate folder: the data file must be found beside the image.
        assert_reads_like_qemu(&img);
        assert!(vdmount_info(&img, &[]).contains("external_data_file"));
    }
    std::fs::remove_file(dir.path().join("df.data")).unwrap();
    let err = cat_refusal(&dir.path().join("df.qcow2"), &[]);
    assert!(err.contains("df.data") && err.contains("external data file"), "{err}");
}

#[test]
fn chain_of_qcow2_over_vmdk_shorter_than_top() {
    let dir = scratch();
    let base_raw = source(dir.path(), "base.raw", 2, 6);
    let base = dir.path().join("base.vmdk");
    qemu_img(&["convert", "-O", "vmdk", s(&base_raw), s(&base)]);
    let mid = dir.path().join("mid.qcow2");
    qemu_img(&["create", "-f", "qcow2", "-b", "base.vmdk", "-F", "vmdk", s(&mid), "4M"]);
    qemu_io("qcow2", &mid, &["write -P 0x22 1M 512k", "write -P 0x23 3M 64k"]);
    let top = dir.path().join("top.qcow2");
    qemu_img(&["create", "-f", "qcow2", "-o", "cluster_size=4k", "-b", "mid.qcow2", "-F", "qcow2", s(&top), "6M"]);
    qemu_io("qcow2", &top, &["write -P 0x33 1536k 64k", "write -P 0x44 5M 4k", "write -z 0 4k"]);
    assert_reads_like_qemu(&top);
    let info = vdmount_info(&top, &[]);
    assert!(info.contains("format: qcow2") && info.contains("format: vmdk") && info.contains("base.vmdk"), "{info}");
}

#[test]
fn chain_over_a_shorter_raw_base() {
    let dir = scratch();
    source(dir.path(), "base.raw", 3, 7);
    let top = dir.path().join("top.qcow2");
    qemu_img(&["create", "-f", "qcow2", "-o", "compat=0.10", "-b", "base.raw", "-F", "raw", s(&top), "5M"]);
    qemu_io("qcow2", &top, &["write -P 0x77 2M 1536k"]);
    assert_reads_like_qemu(&top);
}

#[test]
fn backing_without_format_is_detected_by_magic() {
    let dir = scratch();
    let src = source(dir.path(), "src.raw", 2, 8);
    let base = dir.path().join("base.qcow2");
    qemu_img(&["convert", "-O", "qcow2", s(&src), s(&base)]);
    let top = dir.path().join("top.qcow2");
    qemu_img(&["create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", s(&top), "2M"]);
    qemu_io("qcow2", &top, &["write -P 0x99 64k 64k"]);
    // Turn the backing format extension into an unknown one (readers skip those): the same
    // chain, with the format left to detection.
    let data = std::fs::read(&top).unwrap();
    let at = data.windows(4).position(|w| w == [0xe2, 0x79, 0x2a, 0xca]).expect("backing format extension");
    patch(&top, at as u64, &[0x12, 0x34, 0x56, 0x78]);
    assert!(!vdmount_info(&top, &[]).contains("backing format"));
    assert_reads_like_qemu(&top);
}

#[test]
fn internal_snapshot() {
    let dir = scratch();
    let src = source(dir.path(), "src.raw", 4, 9);
    let img = dir.path().join("snap.qcow2");
    qemu_img(&["convert", "-O", "qcow2", s(&src), s(&img)]);
    qemu_img(&["snapshot", "-c", "snap1", s(&img)]);
    qemu_io("qcow2", &img, &["write -P 0xee 0 1M", "write -z 2M 512k", "write -P 0xdd 3M 3k"]);

    let oracle = dir.path().join("snap1.raw");
    run_ok(Command::new("qemu-img").args([
        "convert",
        "-U",
        "-l",
        "snapshot.name=snap1",
        "-O",
        "raw",
        s(&img),
        s(&oracle),
    ]));
    let want = sha256_file(&oracle);
    assert_eq!(want, sha256_file(&src), "qemu's view of the snapshot is the source");
    assert_eq!(vdmount_cat_sha256(&img, &["--snapshot", "snap1"]).unwrap(), want);
    assert_eq!(vdmount_cat_sha256(&img, &["--snapshot", "1"]).unwrap(), want, "by id");
    assert_reads_like_qemu(&img);

    let info = vdmount_info(&img, &[]);
    assert!(info.contains("snapshots: 1") && info.contains("name 'snap1'"), "{info}");
    let err = cat_refusal(&img, &["--snapshot", "nope"]);
    assert!(err.contains("nope") && err.contains("snap1"), "{err}");
}

#[test]
fn third_party_qcow2_images() {
    let read = check_third_party("qcow2");
    eprintln!("third-party qcow2 images read: {read:?}");
    assert!(read.len() >= 5, "{read:?}");
}

#[test]
fn qcow_version_1() {
    let dir = scratch();
    let src = source(dir.path(), "src.raw", 3, 10);
    let plain = dir.path().join("v1.qcow");
    qemu_img(&["convert", "-O", "qcow", s(&src), s(&plain)]);
    assert_reads_like_qemu(&plain);
    assert!(vdmount_info(&plain, &[]).contains("format: qcow\n"));

    // qemu-img 10.0.2 `convert -c -O qcow` fails (exit 1, no message) once a cluster compresses;
    // qemu-io `write -c` still writes compressed qcow clusters.
    let compressed = dir.path().join("v1c.qcow");
    qemu_img(&["create", "-f", "qcow", s(&compressed), "3M"]);
    qemu_io(
        "qcow",
        &compressed,
        &["write -c -P 0x41 0 4k", "write -c -P 0x42 8k 4k", "write -P 0x43 12k 4k", "write -c -P 0x44 1M 4k"],
    );
    assert!(has_compressed_clusters(&compressed), "no compressed cluster");
    assert_reads_like_qemu(&compressed);

    let top = dir.path().join("v1top.qcow");
    qemu_img(&["create", "-f", "qcow", "-b", "src.raw", "-F", "raw", s(&top), "4M"]);
    qemu_io("qcow", &top, &["write -P 0x31 512k 8k", "write -P 0x32 3500k 100k"]);
    assert_reads_like_qemu(&top);
}

// ---- refusals ----

/// A small qcow2 made from a source disk, for patching.
fn victim(dir: &Path, name: &str) -> PathBuf {
    let src = source(dir, "victim-src.raw", 4, 11);
    let img = dir.join(name);
    qemu_img(&["convert", "-O", "qcow2", s(&src), s(&img)]);
    img
}

#[test]
fn refuses_unknown_incompatible_bit() {
    let dir = scratch();
    let img = victim(dir.path(), "unknown-bit.qcow2");
    // Incompatible features: big-endian u64 at 72; bit 5 is in its last byte.
    patch(&img, 79, &[0x20]);
    let err = cat_refusal(&img, &[]);
    assert!(err.contains("bit 5") && err.contains("incompatible"), "{err}");

    // With the feature name table naming the bit, the message carries the name.
    let named = victim(dir.path(), "named-bit.qcow2");
    let data = std::fs::read(&named).unwrap();
    let entry = data.windows(13).position(|w| w == b"\x00\x04extended L2").expect("feature name table entry");
    patch(&named, entry as u64 + 1, &[5]);
    patch(&named, 79, &[0x20]);
    let err = cat_refusal(&named, &[]);
    assert!(err.contains("bit 5 (extended L2"), "{err}");
}

#[test]
fn refuses_corrupt_bit_with_repair_advice() {
    let dir = scratch();
    let img = victim(dir.path(), "corrupt-bit.qcow2");
    patch(&img, 79, &[0x02]);
    let err = cat_refusal(&img, &[]);
    assert!(err.contains("corrupt") && err.contains("qemu-img check -r all") && err.contains("copy"), "{err}");
}

#[test]
fn dirty_bit_is_fine_for_reading() {
    let dir = scratch();
    let img = victim(dir.path(), "dirty.qcow2");
    patch(&img, 79, &[0x01]);
    let got = vdmount_cat_sha256(&img, &[]).unwrap();
    assert_eq!(got, sha256_file(&dir.path().join("victim-src.raw")));
    assert!(vdmount_info(&img, &[]).contains("dirty"));
}

#[test]
fn refuses_encrypted_images() {
    let dir = scratch();
    let img = dir.path().join("luks.qcow2");
    qemu_img(&[
        "create",
        "--object",
        "secret,id=sec0,data=abc",
        "-f",
        "qcow2",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=sec0",
        s(&img),
        "1M",
    ]);
    let err = cat_refusal(&img, &[]);
    assert!(err.contains("encrypted") && err.contains("LUKS"), "{err}");

    // crypt_method 1 (AES-CBC), which qemu-img no longer creates: patched into a plain image.
    let aes = victim(dir.path(), "aes.qcow2");
    patch(&aes, 32, &[0, 0, 0, 1]);
    let err = cat_refusal(&aes, &[]);
    assert!(err.contains("encrypted") && err.contains("AES"), "{err}");
}

#[test]
fn refuses_truncated_l1_table() {
    let dir = scratch();
    let img = victim(dir.path(), "truncated.qcow2");
    let l1 = header_u64(&img, 40);
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len(l1 + 4).unwrap();
    let err = cat_refusal(&img, &[]);
    assert!(err.contains("L1 table") && err.contains("past the end"), "{err}");
}

#[test]
fn refuses_l1_offset_past_eof() {
    let dir = scratch();
    let img = victim(dir.path(), "l1-far.qcow2");
    patch(&img, 40, &(1u64 << 40).to_be_bytes());
    let err = cat_refusal(&img, &[]);
    assert!(err.contains("L1 table") && err.contains("past the end"), "{err}");
}

#[test]
fn refuses_absurd_header_fields() {
    let dir = scratch();
    let bits = victim(dir.path(), "cluster-bits.qcow2");
    patch(&bits, 20, &40u32.to_be_bytes());
    let err = cat_refusal(&bits, &[]);
    assert!(err.contains("cluster_bits is 40"), "{err}");

    let l1 = victim(dir.path(), "l1-size.qcow2");
    patch(&l1, 36, &u32::MAX.to_be_bytes());
    let err = cat_refusal(&l1, &[]);
    assert!(err.contains("L1 table") && err.contains("limit"), "{err}");

    let size = victim(dir.path(), "virtual-size.qcow2");
    patch(&size, 24, &u64::MAX.to_be_bytes());
    let err = cat_refusal(&size, &[]);
    assert!(err.contains("virtual size") && err.contains("limit"), "{err}");

    // A virtual size larger than the L1 table covers.
    let small_l1 = victim(dir.path(), "l1-small.qcow2");
    patch(&small_l1, 24, &(1u64 << 40).to_be_bytes());
    let err = cat_refusal(&small_l1, &[]);
    assert!(err.contains("L1 table has"), "{err}");
}

#[test]
fn refuses_backing_loops() {
    let dir = scratch();
    let a = dir.path().join("a.qcow2");
    let b = dir.path().join("b.qcow2");
    qemu_img(&["create", "-f", "qcow2", s(&b), "1M"]);
    qemu_img(&["create", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", s(&a), "1M"]);
    qemu_img(&["rebase", "-u", "-b", "a.qcow2", "-F", "qcow2", s(&b)]);
    let err = cat_refusal(&a, &[]);
    assert!(err.contains("loops") && err.contains("a.qcow2 -> ") && err.contains("b.qcow2 -> "), "{err}");

    let selfish = dir.path().join("self.qcow2");
    qemu_img(&["create", "-f", "qcow2", s(&selfish), "1M"]);
    qemu_img(&["rebase", "-u", "-b", "self.qcow2", "-F", "qcow2", s(&selfish)]);
    let err = cat_refusal(&selfish, &[]);
    assert!(err.contains("loops"), "{err}");
}

#[test]
fn refuses_chains_deeper_than_the_limit() {
    let dir = scratch();
    source(dir.path(), "l0.img", 1, 12);
    // 64 overlays over the raw base: 65 layers, one more than the limit.
    for i in 1..=64 {
        let fmt = if i == 1 { "raw" } else { "qcow2" };
        let below = if i == 1 { "l0.img".to_string() } else { format!("l{}.qcow2", i - 1) };
        let img = dir.path().join(format!("l{i}.qcow2"));
        qemu_img(&["create", "-f", "qcow2", "-u", "-b", &below, "-F", fmt, s(&img), "1M"]);
    }
    let err = cat_refusal(&dir.path().join("l64.qcow2"), &[]);
    assert!(err.contains("more than 64 images deep") && !err.trim_end().contains('\n'), "{err}");
    // One layer fewer is fine.
    assert_reads_like_qemu(&dir.path().join("l63.qcow2"));
}

/// Host offset and stored length of the first compressed cluster of a qcow2 image with 64 KiB
/// clusters (found by walking L1[0]'s L2 table, only to know where to damage the image).
fn first_compressed_cluster(image: &Path) -> (u64, usize) {
    let data = std::fs::read(image).unwrap();
    let be = |at: usize| u64::from_be_bytes(data[at..at + 8].try_into().unwrap());
    assert_eq!(data[23], 16, "64 KiB clusters expected");
    let l2 = (be(be(40) as usize) & 0x00ff_ffff_ffff_fe00) as usize;
    let entry = (0..8192).map(|i| be(l2 + i * 8)).find(|e| e & (1 << 62) != 0).expect("a compressed cluster");
    let host = entry & ((1 << 54) - 1);
    let sectors = ((entry >> 54) & 0xff) + 1;
    (host, (sectors * 512 - (host & 511)) as usize)
}

#[test]
fn refuses_damaged_compressed_clusters() {
    use std::io::Write;
    let dir = scratch();
    let src = source(dir.path(), "src.raw", 2, 13);
    for ctype in ["zlib", "zstd"] {
        // Garbage where the compressed data should be.
        let img = dir.path().join(format!("garbage-{ctype}.qcow2"));
        qemu_img(&["convert", "-c", "-O", "qcow2", "-o", &format!("compression_type={ctype}"), s(&src), s(&img)]);
        let (host, len) = first_compressed_cluster(&img);
        patch(&img, host, &vec![0xa5; len]);
        let err = cat_refusal(&img, &[]);
        assert!(err.contains("compressed cluster") && err.contains(&host.to_string()), "{err}");

        // A valid stream that inflates to two clusters: a bomb, refused rather than truncated.
        let img = dir.path().join(format!("overlong-{ctype}.qcow2"));
        qemu_img(&["convert", "-c", "-O", "qcow2", "-o", &format!("compression_type={ctype}"), s(&src), s(&img)]);
        let (host, len) = first_compressed_cluster(&img);
        let zeros = vec![0u8; 128 * 1024];
        let bomb = if ctype == "zstd" {
            zstd::bulk::compress(&zeros, 3).unwrap()
        } else {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(&zeros).unwrap();
            e.finish().unwrap()
        };
        assert!(bomb.len() <= len, "the bomb ({} bytes) does not fit in {len} bytes", bomb.len());
        patch(&img, host, &bomb);
        let err = cat_refusal(&img, &[]);
        assert!(err.contains("more than one cluster"), "{err}");
    }
}
