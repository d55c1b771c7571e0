//! DMG (UDIF) reader tests. No Linux tool writes DMGs, so `common::dmg` writes them from a source
//! disk with a chosen mix of chunk kinds. Each image is checked against the source disk it was
//! made from AND an independent reader where one reads its kinds: `qemu-img convert -f dmg`
//! (zero, raw, ignore, zlib: Debian's qemu lacks its dmg-bz2 and dmg-lzfse modules) and
//! `dmg2img` (zero, raw, ignore, zlib, bzip2, ADC). LZFSE has no independent reader here: its
//! images are checked against the source data only (lzfse_rust encodes them in the builder).

mod common;

use common::dmg::{build, Kind, Plan};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: usize = 1 << 20;

/// SHA-256 of `dmg2img`'s raw output for `image`.
fn dmg2img_sha256(image: &Path) -> String {
    let dir = scratch();
    let out = dir.path().join("dmg2img.raw");
    run_ok(Command::new("dmg2img").arg("-s").arg("-i").arg(image).arg("-o").arg(&out));
    sha256_file(&out)
}

fn write_dmg(dir: &Path, name: &str, src: &[u8], plan: &Plan) -> PathBuf {
    let p = dir.join(name);
    let (bytes, layout) = build(src, plan);
    // The image holds what the plan asked for (so a pass is not a pass over raw chunks only).
    for k in plan.kinds.iter().chain(if plan.chunk_sectors <= 128 { &[Kind::Zero, Kind::Ignore][..] } else { &[] }) {
        assert!(layout.chunks.iter().any(|c| c.0 == *k), "{name}: no {k:?} chunk");
    }
    // ...and its compressed kinds really compress somewhere (the random data does not).
    for k in plan.kinds.iter().filter(|k| !matches!(k, Kind::Raw)) {
        let shrunk = layout.chunks.iter().any(|c| c.0 == *k && c.4 < c.2 * 512 / 2);
        assert!(shrunk, "{name}: no {k:?} chunk compresses to half");
    }
    std::fs::write(&p, bytes).unwrap();
    p
}

fn info(image: &Path) -> String {
    String::from_utf8(run_ok(vdmount().arg("info").arg(image)).stdout).unwrap()
}

/// A source disk: make_source_disk's data, text and zero runs, an odd number of sectors.
fn source(dir: &Path, size: usize, seed: u64) -> Vec<u8> {
    let p = dir.join("source.raw");
    make_source_disk(&p, size as u64, seed);
    std::fs::read(&p).unwrap()
}

#[test]
fn every_chunk_kind_against_the_source_and_an_independent_reader() {
    use Kind::*;
    let dir = scratch();
    let src = source(dir.path(), 6 * MIB + 7 * 512, 5);
    let want = sha256_hex(&src);
    let qemu_reads = |k: &[Kind]| k.iter().all(|k| matches!(k, Raw | Zlib));
    let dmg2img_reads = |k: &[Kind]| k.iter().all(|k| matches!(k, Raw | Zlib | Bzip2 | Adc));
    let mixes: &[&[Kind]] = &[&[Raw], &[Zlib], &[Bzip2], &[Adc], &[Lzfse], &[Raw, Zlib, Bzip2, Adc, Lzfse]];
    // hdiutil's 1 MiB chunks, 64 KiB chunks (zero and ignore chunks from the source's zero runs),
    // and odd small ones; one partition and three.
    for (chunk_sectors, splits) in [(2048, &[][..]), (128, &[1000, 4097][..]), (37, &[64][..])] {
        for kinds in mixes {
            let name =
                format!("{:?}-{chunk_sectors}-{}.dmg", kinds, splits.len() + 1).replace([' ', '[', ']', ','], "");
            let plan = Plan { chunk_sectors, kinds, splits, comments: chunk_sectors == 128, relative: false };
            let img = write_dmg(dir.path(), &name, &src, &plan);
            let got = vdmount_cat_sha256(&img, &[]).unwrap_or_else(|e| panic!("vdmount refused {name}: {e}"));
            assert_eq!(got, want, "{name}: vdmount cat differs from the source disk");
            if qemu_reads(kinds) {
                assert_eq!(qemu_raw_sha256(&img, Some("dmg")), want, "{name}: qemu-img differs from the source");
            }
            if dmg2img_reads(kinds) {
                assert_eq!(dmg2img_sha256(&img), want, "{name}: dmg2img differs from the source");
            }
            if *kinds == [Raw] {
                let (described, size) = described_bytes(&img);
                assert_eq!(described, size, "{name}: raw chunks not all described as extents");
            }
        }
    }
}

#[test]
fn chunk_offsets_relative_to_their_table() {
    // Each table's "data offset" is where its chunks start in the data fork: qemu adds it too.
    let dir = scratch();
    let src = source(dir.path(), 2 * MIB, 8);
    let kinds = [Kind::Zlib, Kind::Raw];
    let plan = Plan { chunk_sectors: 128, kinds: &kinds, splits: &[700, 2100], comments: false, relative: true };
    let img = write_dmg(dir.path(), "rel.dmg", &src, &plan);
    let want = sha256_hex(&src);
    assert_eq!(vdmount_cat_sha256(&img, &[]).unwrap(), want, "vdmount differs from the source");
    assert_eq!(qemu_raw_sha256(&img, Some("dmg")), want, "qemu-img differs from the source");
    // dmg2img 1.6.7 ignores the table's data offset (it fails on this image): qemu is the oracle.
}

#[test]
fn info_names_partitions_kinds_and_checksum() {
    let dir = scratch();
    let src = source(dir.path(), MIB, 6);
    let kinds = [Kind::Zlib, Kind::Raw];
    let img = write_dmg(
        dir.path(),
        "i.dmg",
        &src,
        &Plan { chunk_sectors: 128, kinds: &kinds, splits: &[512], comments: false, relative: false },
    );
    let text = info(&img);
    for want in
        ["dmg", "partition 0 (Apple_HFS : 1)", "partition 1", "zlib", "raw", "zero", "ignore", "CRC-32 (32 bits)"]
    {
        assert!(text.contains(want), "info lacks {want:?}:\n{text}");
    }
    assert!(!text.contains("bzip2"), "info lists a kind not in use:\n{text}");
}

#[test]
fn detection_format_option_and_cow() {
    let dir = scratch();
    let src = source(dir.path(), MIB, 7);
    let img = write_dmg(
        dir.path(),
        "d.dmg",
        &src,
        &Plan { chunk_sectors: 256, kinds: &[Kind::Zlib], splits: &[], comments: false, relative: false },
    );
    let want = sha256_hex(&src);
    assert_eq!(vdmount_cat_sha256(&img, &["--format", "dmg"]).unwrap(), want);
    // A raw disk is not a DMG; forcing dmg on it is refused, naming the file and the trailer.
    let raw = dir.path().join("plain.raw");
    std::fs::write(&raw, &src).unwrap();
    let err = cat_refusal(&raw, &["--format", "dmg"]);
    assert!(err.contains("no UDIF trailer"), "{err}");
    // A raw disk whose last sector starts "koly" but is no UDIF trailer stays raw.
    let mut koly_ish = src.clone();
    let n = koly_ish.len();
    koly_ish[n - 512..n - 508].copy_from_slice(b"koly");
    std::fs::write(&raw, &koly_ish).unwrap();
    assert_eq!(vdmount_cat_sha256(&raw, &[]).unwrap(), sha256_hex(&koly_ish));
    // Nor is one whose last sector is a DMG file's trailer (a .dmg at the end of a filesystem):
    // that trailer's property list offset does not point to XML in this file.
    let dmg_bytes = std::fs::read(&img).unwrap();
    let mut holds_dmg_tail = src.clone();
    holds_dmg_tail[n - 512..].copy_from_slice(&dmg_bytes[dmg_bytes.len() - 512..]);
    std::fs::write(&raw, &holds_dmg_tail).unwrap();
    assert_eq!(vdmount_cat_sha256(&raw, &[]).unwrap(), sha256_hex(&holds_dmg_tail));
    // --cow over a DMG: writes land in the overlay, the image is untouched.
    use std::sync::Arc;
    use vdmount::overlay::Backend;
    let before = sha256_file(&img);
    let disk = vdmount::formats::open(&img, &vdmount::formats::OpenOptions::new(vdmount::cache::Cache::new(16 << 20)))
        .unwrap();
    let cow = vdmount::overlay::ephemeral::CowOverlay::new(Arc::clone(&disk), Some(dir.path().to_path_buf())).unwrap();
    cow.write(&[0xab; 4096], 8192, false).unwrap();
    let mut all = vec![0u8; src.len()];
    cow.read(&mut all, 0).unwrap();
    let mut model = src.clone();
    model[8192..8192 + 4096].fill(0xab);
    assert!(all == model, "--cow over a DMG does not read back its write");
    assert_eq!(sha256_file(&img), before, "the DMG changed");
}

#[test]
fn third_party_dmg_images() {
    let read = check_third_party("dmg");
    assert!(!read.is_empty(), "no third-party DMG read");
}

/// `vdmount verify IMAGE`'s outcome: success, stdout, stderr.
fn verify(image: &Path) -> (bool, String, String) {
    let out = vdmount().arg("verify").arg(image).output().unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

#[test]
fn verify_checks_each_partition_crc_and_the_master_checksum() {
    // hdiutil's own sums (dfVFS's hfsplus_zlib.dmg): a CRC-32 per blkx table, all agreeing.
    let sample = repo().join("fixtures/third-party/dmg-dfvfs-hfsplus-zlib/hfsplus_zlib.dmg");
    let (ok, out, err) = verify(&sample);
    assert!(ok, "verify failed on hdiutil's image: {err}\n{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("CRC-32 of blkx") && l.ends_with(" ok")).count(), 7, "{out}");

    // The builder's sums are of the source disk's sectors.
    let dir = scratch();
    let src = source(dir.path(), 3 * MIB, 9);
    let plan = Plan {
        chunk_sectors: 64,
        kinds: &[Kind::Raw, Kind::Zlib],
        splits: &[2048, 4096],
        comments: false,
        relative: false,
    };
    let (bytes, layout) = build(&src, &plan);
    let good = dir.path().join("sums.dmg");
    std::fs::write(&good, &bytes).unwrap();
    let (ok, out, err) = verify(&good);
    assert!(ok, "verify failed: {err}\n{out}");
    assert_eq!(out.lines().filter(|l| l.ends_with(" ok")).count(), 3, "{out}");

    // One byte of a raw chunk in the second table changed: that table's sum fails, by name.
    let raw = layout.chunks.iter().find(|c| c.0 == Kind::Raw && (2048..4096).contains(&c.1)).unwrap();
    let mut flipped = bytes.clone();
    flipped[raw.3 + 100] ^= 0x40;
    let bad = dir.path().join("flipped.dmg");
    std::fs::write(&bad, &flipped).unwrap();
    let (ok, out, err) = verify(&bad);
    assert!(!ok, "a changed chunk verified: {out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("flipped.dmg") && err.contains("blkx \"partition 1") && err.contains("mismatch"), "{err}");
    assert_eq!(out.lines().filter(|l| l.ends_with("MISMATCH")).count(), 1, "{out}");

    // The trailer's master checksum no longer covers the tables' sums.
    let mut master = bytes.clone();
    master[layout.koly_offset + 360] ^= 1;
    let bad = dir.path().join("master.dmg");
    std::fs::write(&bad, &master).unwrap();
    let (ok, out, err) = verify(&bad);
    assert!(!ok && err.contains("master checksum") && err.contains("master.dmg"), "{err}\n{out}");
}
