//! EWF2 (.Ex01) reader tests. No tool here writes EWF2, so sets are made at test time by
//! tests/ewf2/make_ex01.py from a source disk, in every compression, with and without pattern
//! fill, in several chunk sizes and with small segments so sets span several files. The oracle
//! is the source disk the builder read: `vdmount cat` must equal it (through read_at and through
//! extents). Deflate and stored sets are also read by libewf (pyewf, from PyPI's libewf-python,
//! which reads EWF2; Debian's ewf-tools 20140813 does not), a second, independent reader.

mod common;
#[path = "ewf2/mod.rs"]
mod ex01;

use common::*;
use ex01::*;
use std::path::Path;
use std::process::Command;

const MIB: u64 = 1 << 20;

/// A source disk of `size` bytes: random data with all-zero stretches (for pattern fill) and a
/// repeated text (compressible).
fn source_disk(path: &Path, size: u64, seed: u64) {
    make_source_disk(path, size, seed);
    let mut d = std::fs::read(path).unwrap();
    let n = d.len();
    d[n / 4..n / 4 + 300_000].fill(0);
    let text = b"vdmount ewf2 test data ";
    for (i, b) in d[n / 2..n / 2 + 200_000].iter_mut().enumerate() {
        *b = text[i % text.len()];
    }
    std::fs::write(path, d).unwrap();
}

fn stdout_of(cmd: &mut Command) -> String {
    String::from_utf8(run_ok(cmd).stdout).unwrap()
}

fn hash_tool(tool: &str, path: &Path) -> String {
    stdout_of(Command::new(tool).arg(path)).split_whitespace().next().unwrap().to_string()
}

/// The second oracle: SHA-256 of the media as libewf (pyewf) reads the set.
fn pyewf_sha256(first: &Path) -> String {
    let script = "import sys, hashlib, pyewf\n\
        h = pyewf.handle(); h.open(pyewf.glob(sys.argv[1])); size = h.get_media_size(); s = hashlib.sha256()\n\
        while size > 0:\n    b = h.read(min(size, 1 << 20)); s.update(b); size -= len(b)\n\
        print(s.hexdigest())";
    stdout_of(Command::new("python3").args(["-c", script]).arg(first)).trim().to_string()
}

/// `vdmount verify` must fail with one line naming the image; returns that line.
fn verify_refusal(image: &Path) -> String {
    let out = vdmount().arg("verify").arg(image).output().unwrap();
    assert!(!out.status.success(), "verify passed on {}", image.display());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(image.file_name().unwrap().to_str().unwrap()), "does not name the image: {err}");
    err
}

fn remove_set(layout: &Layout) {
    for s in &layout.segments {
        std::fs::remove_file(s).unwrap();
    }
}

#[test]
fn every_compression_chunk_size_and_pattern_fill() {
    let dir = scratch();
    let d = dir.path();
    let src = d.join("src.raw");
    source_disk(&src, 3 * MIB + 5 * 512, 7);
    let want = sha256_file(&src);
    let mut i = 0;
    for compression in ["none", "deflate", "bzip2"] {
        for pattern in [false, true] {
            let spc = ["16", "64", "128"][i % 3];
            let entries = ["40", "16384", "7"][i % 3];
            i += 1;
            let name = format!("{compression}-{pattern}-{spc}");
            let mut args = vec!["--compression", compression, "--sectors-per-chunk", spc, "--segment-size", "600000"];
            args.extend(["--table-entries", entries, "--sha1"]);
            if pattern {
                args.push("--pattern-fill");
            }
            let set = build(&src, &d.join(&name), &args);
            assert!(set.segments.len() >= 2, "{name}: expected a set of several segments");
            let patterns = set.entries.iter().filter(|e| e.flags & 4 != 0).count();
            assert_eq!(patterns > 0, pattern, "{name}: pattern-fill chunks");
            let got = vdmount_cat_sha256(set.first(), &[]).unwrap_or_else(|e| panic!("{name}: refused: {e}"));
            assert_eq!(got, want, "{name}: vdmount cat differs from the source");
            // Stored chunks are described as extents (pattern fill of zeros as zeros).
            let (described, size) = described_bytes(set.first());
            if compression == "none" {
                assert_eq!(described, size, "{name}: stored chunks not all described as extents");
            } else {
                assert!(described < size, "{name}: compressed chunks described as extents");
            }
            // libewf's build on PyPI lacks bzip2: it reads the others.
            if compression != "bzip2" {
                assert_eq!(pyewf_sha256(set.first()), want, "{name}: libewf reads another disk");
            }
            let out = stdout_of(vdmount().arg("verify").arg(set.first()));
            assert!(out.contains("MD5") && out.contains("SHA1") && !out.contains("MISMATCH"), "{name}: {out}");
            remove_set(&set);
        }
    }
}

#[test]
fn info_shows_hashes_and_case_data() {
    let dir = scratch();
    let d = dir.path();
    let src = d.join("src.raw");
    source_disk(&src, 2 * MIB, 3);
    let args = ["--compression", "bzip2", "--sha1", "--case-number", "case 42", "--examiner", "Jo Examiner"];
    let set = build(&src, &d.join("disk"), &args);
    let info = stdout_of(vdmount().arg("info").arg(set.first()));
    let md5 = hash_tool("md5sum", &src);
    let sha1 = hash_tool("sha1sum", &src);
    for line in [
        "format: ewf".to_string(),
        "variant: EWF2 (EnCase 7 .Ex01)".into(),
        "compression method: bzip2".into(),
        format!("virtual size: 2.0 MiB ({} bytes)", 2 * MIB),
        "cluster size: 32768".into(),
        format!("stored MD5: {md5}"),
        format!("stored SHA1: {sha1}"),
        "case number: case 42".into(),
        "examiner: Jo Examiner".into(),
        "acquisition date: 2025-12-02 18:26:40 UTC".into(),
        "model: vdmount test disk".into(),
    ] {
        assert!(info.contains(&line), "info lacks {line:?}:\n{info}");
    }
    let out = stdout_of(vdmount().arg("verify").arg(set.first()));
    assert!(out.contains(&format!("computed {md5}  stored {md5}  ok")), "{out}");
    assert!(out.contains(&format!("computed {sha1}  stored {sha1}  ok")), "{out}");
    // Without hash sections: nothing stored, nothing to verify against.
    remove_set(&set);
    let set = build(&src, &d.join("bare"), &["--no-md5"]);
    let info = stdout_of(vdmount().arg("info").arg(set.first()));
    assert!(info.contains("stored MD5: none stored") && info.contains("stored SHA1: none stored"), "{info}");
    assert!(verify_refusal(set.first()).contains("no hash"));
    // A bzip2 set whose metadata is deflated (the method is told by the data's magic).
    remove_set(&set);
    let set = build(&src, &d.join("mixed"), &["--compression", "bzip2", "--metadata-compression", "deflate"]);
    let info = stdout_of(vdmount().arg("info").arg(set.first()));
    assert!(info.contains("compression method: bzip2") && info.contains("case number: case 1"), "{info}");
    assert_eq!(vdmount_cat_sha256(set.first(), &[]).unwrap(), sha256_file(&src));
}

#[test]
fn verify_catches_a_flipped_byte_and_a_wrong_stored_md5() {
    let dir = scratch();
    let d = dir.path();
    let src = d.join("src.raw");
    source_disk(&src, 2 * MIB, 5);
    let set = build(&src, &d.join("plain"), &["--compression", "none"]);
    run_ok(vdmount().arg("verify").arg(set.first()));
    let first = set.first().to_path_buf();
    let good = std::fs::read(&first).unwrap();
    // A byte of a stored chunk's data flipped (its table and checksums untouched).
    let e = &set.entries[20];
    assert_eq!(e.flags, 2, "chunk 20 should be stored with its checksum");
    let mut bytes = good.clone();
    bytes[e.offset as usize + 100] ^= 0x40;
    std::fs::write(&first, &bytes).unwrap();
    let err = verify_refusal(&first);
    assert!(err.contains("MD5") && err.contains("mismatch"), "{err}");
    // The stored MD5 changed, with its checksum, integrity hash and descriptor made right.
    let md5 = &set.sections_of(1, MD5_HASH)[0];
    let mut bytes = good.clone();
    bytes[md5.data] ^= 1;
    put_adler32(&mut bytes, md5.data, md5.data + 16);
    reseal(&mut bytes, md5);
    std::fs::write(&first, &bytes).unwrap();
    let info = stdout_of(vdmount().arg("info").arg(&first));
    assert!(!info.contains(&hash_tool("md5sum", &src)), "{info}");
    let err = verify_refusal(&first);
    assert!(err.contains("MD5") && err.contains("mismatch"), "{err}");
    // The hash changed without its checksum: refused on open.
    let mut bytes = good.clone();
    bytes[md5.data] ^= 1;
    reseal(&mut bytes, md5);
    std::fs::write(&first, &bytes).unwrap();
    assert!(verify_refusal(&first).contains("bad checksum"));
}

#[test]
fn segment_sets() {
    let dir = scratch();
    let d = dir.path();
    let src = d.join("src.raw");
    source_disk(&src, 2 * MIB, 13);
    let set = build(&src, &d.join("set"), &["--compression", "deflate", "--segment-size", "200000"]);
    assert!(set.segments.len() >= 3, "{} segments", set.segments.len());
    assert_eq!(vdmount_cat_sha256(set.first(), &[]).unwrap(), sha256_file(&src));
    let ex02 = d.join("set.Ex02");
    let ex02_bytes = std::fs::read(&ex02).unwrap();

    // A missing segment.
    std::fs::remove_file(&ex02).unwrap();
    let err = cat_refusal(set.first(), &[]);
    assert!(err.contains("set.Ex02") && err.contains("missing"), "{err}");
    // A segment that is a symlink out of the folder.
    let outside = scratch();
    std::fs::write(outside.path().join("x.Ex02"), &ex02_bytes).unwrap();
    std::os::unix::fs::symlink(outside.path().join("x.Ex02"), &ex02).unwrap();
    let err = cat_refusal(set.first(), &[]);
    assert!(err.contains("set.Ex02"), "{err}");
    std::fs::remove_file(&ex02).unwrap();
    // A truncated segment.
    std::fs::write(&ex02, &ex02_bytes[..ex02_bytes.len() / 2]).unwrap();
    assert!(cat_refusal(set.first(), &[]).contains("truncated"));
    // The wrong segment in its place (the third, renamed).
    std::fs::copy(d.join("set.Ex03"), &ex02).unwrap();
    let err = cat_refusal(set.first(), &[]);
    assert!(err.contains("segment 3") && err.contains("segment 2"), "{err}");
    // The second segment of another set.
    let other = build(&src, &d.join("other"), &["--compression", "deflate", "--segment-size", "200000"]);
    std::fs::copy(&other.segments[1], &ex02).unwrap();
    let err = cat_refusal(set.first(), &[]);
    assert!(err.contains("another EWF2 set"), "{err}");
    std::fs::write(&ex02, &ex02_bytes).unwrap();
    assert_eq!(vdmount_cat_sha256(set.first(), &[]).unwrap(), sha256_file(&src));
    // Opening a later segment instead of the first.
    let err = cat_refusal(&ex02, &[]);
    assert!(err.contains("segment 2"), "{err}");
    // A logical evidence file (.Lx01) is refused by name.
    let mut lx = std::fs::read(set.first()).unwrap();
    lx[..8].copy_from_slice(b"LEF2\r\n\x81\x00");
    let lx01 = d.join("files.Lx01");
    std::fs::write(&lx01, &lx).unwrap();
    assert!(cat_refusal(&lx01, &[]).contains("logical evidence"));
}

/// Past .Ex99 the set goes on at .ExAA: a set of 102 segments of one chunk each.
#[test]
fn segment_names_past_ex99() {
    let dir = scratch();
    let d = dir.path();
    let src = d.join("src.raw");
    source_disk(&src, 102 * 8192, 11);
    let set = build(&src, &d.join("big"), &["--sectors-per-chunk", "16", "--segment-size", "1"]);
    assert_eq!(set.segments.len(), 102);
    assert!(d.join("big.ExAA").exists() && d.join("big.ExAB").exists());
    assert_eq!(vdmount_cat_sha256(set.first(), &[]).unwrap(), sha256_file(&src));
    assert_eq!(pyewf_sha256(set.first()), sha256_file(&src));
    std::fs::remove_file(d.join("big.ExAB")).unwrap();
    let err = cat_refusal(set.first(), &[]);
    assert!(err.contains("big.ExAB") && err.contains("missing"), "{err}");
}
