//! EWF reader tests. Sets are made with ewfacquire (ewf-tools) at test time from a partitioned
//! source disk, in every format and compression it writes, with small segments so sets span
//! several files; `vdmount cat` must equal the source and `ewfexport -f raw` (the oracle), read
//! both with read_at and through extents. `info` shows the stored hashes, `verify` checks them.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

/// A deterministic disk of `size` bytes (whole sectors) with an MBR and one partition from 1 MiB.
fn source_disk(path: &Path, size: u64, seed: u64) {
    make_source_disk(path, size, seed);
    let mut d = std::fs::read(path).unwrap();
    d[..512].fill(0);
    let sectors = (size / 512 - 2048) as u32;
    let entry = &mut d[446..462];
    entry[4] = 0x83;
    entry[8..12].copy_from_slice(&2048u32.to_le_bytes());
    entry[12..16].copy_from_slice(&sectors.to_le_bytes());
    d[510] = 0x55;
    d[511] = 0xaa;
    std::fs::write(path, d).unwrap();
}

/// ewfacquire `src` into `dir/name` with `opts`; returns the first segment.
fn acquire(dir: &Path, src: &Path, name: &str, opts: &[&str]) -> PathBuf {
    let target = dir.join(name);
    run_ok(Command::new("ewfacquire").args(["-u", "-q"]).args(opts).arg("-t").arg(&target).arg(src));
    let first = ["E01", "e01", "s01"].iter().map(|e| dir.join(format!("{name}.{e}"))).find(|p| p.exists());
    first.unwrap_or_else(|| panic!("ewfacquire {opts:?} made no first segment for {name}"))
}

/// The oracle: SHA-256 of `ewfexport -f raw` of the set.
fn ewfexport_sha256(first: &Path) -> String {
    let dir = scratch();
    let out = dir.path().join("oracle");
    run_ok(Command::new("ewfexport").args(["-u", "-q", "-f", "raw", "-t"]).arg(&out).arg(first));
    sha256_file(&dir.path().join("oracle.raw"))
}

fn segments(dir: &Path, name: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_str().unwrap().starts_with(&format!("{name}.")))
        .count()
}

fn stdout_of(cmd: &mut Command) -> String {
    String::from_utf8(run_ok(cmd).stdout).unwrap()
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

fn hash_tool(tool: &str, path: &Path) -> String {
    stdout_of(Command::new(tool).arg(path)).split_whitespace().next().unwrap().to_string()
}

#[test]
fn every_format_compression_and_chunk_size() {
    let dir = scratch();
    let d = dir.path();
    let src = d.join("src.raw");
    source_disk(&src, 5 * MIB + 3 * 512, 7);
    let want = sha256_file(&src);
    let formats = [
        "ewf", "smart", "ftk", "encase1", "encase2", "encase3", "encase4", "encase5", "encase6", "encase7", "linen5",
        "linen6", "linen7", "ewfx",
    ];
    let compressions = ["none", "empty-block", "deflate:fast", "deflate:best"];
    let chunks = ["16", "64", "128", "1024"];
    let mut cases: Vec<(String, Vec<String>)> = Vec::new();
    for (i, f) in formats.iter().enumerate() {
        let c = compressions[i % 4];
        let b = chunks[(i / 4 + i) % 4];
        cases.push((
            format!("{f}-{}-b{b}", c.replace(':', "-")),
            vec!["-f".into(), f.to_string(), "-c".into(), c.into(), "-b".into(), b.into()],
        ));
    }
    for c in compressions {
        for b in ["16", "64"] {
            cases.push((
                format!("e6-{}-b{b}", c.replace(':', "-")),
                vec![
                    "-f".into(),
                    "encase6".into(),
                    "-c".into(),
                    c.into(),
                    "-b".into(),
                    b.into(),
                    "-d".into(),
                    "sha1".into(),
                ],
            ));
        }
    }
    for (name, mut opts) in cases {
        opts.extend(["-S".to_string(), "1MiB".to_string()]);
        let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
        let first = acquire(d, &src, &name, &opts);
        let got = vdmount_cat_sha256(&first, &[]).unwrap_or_else(|e| panic!("{name} {opts:?}: refused: {e}"));
        assert_eq!(got, want, "{name} {opts:?}: vdmount cat differs from the source");
        assert_eq!(ewfexport_sha256(&first), want, "{name}: the oracle differs from the source");
        assert!(segments(d, &name) >= 2, "{name}: expected a set of several segments");
        // Stored chunks are described as extents; compressed ones are not.
        let (described, size) = described_bytes(&first);
        if opts.contains(&"none") && !name.starts_with("ewf-") && !name.starts_with("smart") {
            assert_eq!(described, size, "{name}: uncompressed chunks not all described as extents");
        }
        // Every writer stores the MD5; verify agrees with it.
        let out = stdout_of(vdmount().arg("verify").arg(&first));
        assert!(out.contains("MD5") && !out.contains("MISMATCH"), "{name}: {out}");
        for entry in std::fs::read_dir(d).unwrap() {
            let p = entry.unwrap().path();
            if p.file_name().unwrap().to_str().unwrap().starts_with(&format!("{name}.")) {
                std::fs::remove_file(p).unwrap();
            }
        }
    }
}

#[test]
fn info_shows_hashes_and_case_metadata() {
    let dir = scratch();
    let d = dir.path();
    let src = d.join("src.raw");
    source_disk(&src, 3 * MIB, 3);
    let opts =
        ["-f", "encase6", "-c", "deflate:fast", "-d", "sha1", "-C", "case 42", "-e", "Jo Examiner", "-E", "ev-7"];
    let first = acquire(d, &src, "disk", &opts);
    let info = stdout_of(vdmount().arg("info").arg(&first));
    let md5 = hash_tool("md5sum", &src);
    let sha1 = hash_tool("sha1sum", &src);
    for line in [
        "format: ewf".to_string(),
        format!("stored MD5: {md5}"),
        format!("stored SHA1: {sha1}"),
        "case number: case 42".into(),
        "examiner: Jo Examiner".into(),
        "evidence number: ev-7".into(),
        "acquisition date: ".into(),
        "cluster size: 32768".into(),
    ] {
        assert!(info.contains(&line), "info lacks {line:?}:\n{info}");
    }
    let out = stdout_of(vdmount().arg("verify").arg(&first));
    assert!(out.contains(&format!("computed {md5}  stored {md5}  ok")), "{out}");
    assert!(out.contains(&format!("computed {sha1}  stored {sha1}  ok")), "{out}");
    let json = stdout_of(vdmount().args(["info", "--json"]).arg(&first));
    assert!(json.contains("\"format\": \"ewf\""), "{json}");
}

#[test]
fn verify_catches_a_flipped_byte_and_an_image_with_no_hash() {
    let dir = scratch();
    let d = dir.path();
    let src = d.join("src.raw");
    source_disk(&src, 2 * MIB, 5);
    let first = acquire(d, &src, "plain", &["-f", "encase6", "-c", "none"]);
    run_ok(vdmount().arg("verify").arg(&first));
    // Flip a byte in the middle of the first segment: inside some stored chunk's data (1 MiB of
    // chunks follow the 2 KiB of header sections).
    let mut bytes = std::fs::read(&first).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&first, &bytes).unwrap();
    let err = verify_refusal(&first);
    assert!(err.contains("MD5") && err.contains("mismatch"), "{err}");
    // A raw disk stores no hash: nothing to verify against.
    let err = verify_refusal(&src);
    assert!(err.contains("no hash"), "{err}");
}

/// Past .E99 the set goes on at .EAA: a set of just over 100 segments (mostly zeros, stored
/// uncompressed so each segment holds 1 MiB).
#[test]
fn segment_names_past_e99() {
    let dir = scratch();
    let d = dir.path();
    let src = d.join("src.raw");
    source_disk(&src, 8 * MIB, 11);
    let f = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
    f.set_len(101 * MIB + 512).unwrap();
    drop(f);
    let first = acquire(d, &src, "big", &["-f", "encase6", "-c", "none", "-S", "1MiB"]);
    assert!(d.join("big.EAA").exists(), "ewfacquire made no .EAA segment ({} segments)", segments(d, "big"));
    assert_eq!(vdmount_cat_sha256(&first, &[]).unwrap(), sha256_file(&src));
    // The last segment gone: named in the refusal.
    let last = ["big.EAC", "big.EAB", "big.EAA"].iter().map(|n| d.join(n)).find(|p| p.exists()).unwrap();
    std::fs::remove_file(&last).unwrap();
    let err = cat_refusal(&first, &[]);
    assert!(err.contains(last.file_name().unwrap().to_str().unwrap()) && err.contains("missing"), "{err}");
}

#[test]
fn refusals_name_the_file() {
    let dir = scratch();
    let d = dir.path();
    let src = d.join("src.raw");
    source_disk(&src, 5 * MIB, 13);
    let first = acquire(d, &src, "set", &["-f", "encase6", "-c", "empty-block", "-S", "1MiB"]);
    let e02 = d.join("set.E02");
    let e02_bytes = std::fs::read(&e02).unwrap();

    // A missing segment.
    std::fs::remove_file(&e02).unwrap();
    let err = cat_refusal(&first, &[]);
    assert!(err.contains("set.E02") && err.contains("missing"), "{err}");

    // A segment that is a symlink out of the folder.
    let outside = scratch();
    std::fs::write(outside.path().join("x.E02"), &e02_bytes).unwrap();
    std::os::unix::fs::symlink(outside.path().join("x.E02"), &e02).unwrap();
    let err = cat_refusal(&first, &[]);
    assert!(err.contains("set.E02"), "{err}");
    std::fs::remove_file(&e02).unwrap();

    // A truncated segment.
    std::fs::write(&e02, &e02_bytes[..e02_bytes.len() / 2]).unwrap();
    cat_refusal(&first, &[]);
    // The wrong segment in its place (the third, renamed).
    std::fs::copy(d.join("set.E03"), &e02).unwrap();
    let err = cat_refusal(&first, &[]);
    assert!(err.contains("segment 3") && err.contains("segment 2"), "{err}");
    std::fs::write(&e02, &e02_bytes).unwrap();
    assert_eq!(vdmount_cat_sha256(&first, &[]).unwrap(), sha256_file(&src));

    // Opening a later segment instead of the first.
    let err = cat_refusal(&e02, &[]);
    assert!(err.contains("segment 2"), "{err}");

    // EWF2 and logical evidence files.
    let mut v2 = std::fs::read(&first).unwrap();
    v2[..8].copy_from_slice(b"EVF2\r\n\x81\x00");
    let ex01 = d.join("new.Ex01");
    std::fs::write(&ex01, &v2).unwrap();
    let err = cat_refusal(&ex01, &[]);
    assert!(err.contains("EWF2") && err.contains("new.Ex01"), "{err}");
    v2[..8].copy_from_slice(b"LVF\x09\r\n\xff\x00");
    let l01 = d.join("files.L01");
    std::fs::write(&l01, &v2).unwrap();
    assert!(cat_refusal(&l01, &["--format", "ewf"]).contains("logical evidence"));
    // --format ewf on a raw disk.
    assert!(cat_refusal(&src, &["--format", "ewf"]).contains("signature"));
}

#[test]
fn third_party_images() {
    let read = check_third_party("ewf");
    assert_eq!(read.len(), 2, "{read:?}");
}

/// `--cow` over an EWF set: writes land in the throwaway overlay, the set is not touched, and
/// what is not written still reads from the set (compressed and stored chunks).
#[test]
fn cow_overlay_over_a_set() {
    use std::sync::Arc;
    use vdmount::overlay::Backend;
    let dir = scratch();
    let d = dir.path();
    let src = d.join("src.raw");
    source_disk(&src, 3 * MIB, 17);
    let first = acquire(d, &src, "cow", &["-f", "encase6", "-c", "deflate:fast", "-S", "1MiB"]);
    let sums: Vec<String> = ["cow.E01", "cow.E02"].iter().map(|n| sha256_file(&d.join(n))).collect();
    let disk =
        vdmount::formats::open(&first, &vdmount::formats::OpenOptions::new(vdmount::cache::Cache::new(16 << 20)))
            .unwrap();
    let cow = vdmount::overlay::ephemeral::CowOverlay::new(Arc::clone(&disk), Some(d.to_path_buf())).unwrap();
    let mut model = std::fs::read(&src).unwrap();
    for (at, len) in [(4096u64, 70_000usize), (1_500_000, 3), (3 * MIB - 512, 512)] {
        let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(1)).collect();
        cow.write(&data, at, false).unwrap();
        model[at as usize..at as usize + len].copy_from_slice(&data);
    }
    let mut all = vec![0u8; model.len()];
    cow.read(&mut all, 0).unwrap();
    assert!(all == model, "the overlay's view differs from the model");
    let after: Vec<String> = ["cow.E01", "cow.E02"].iter().map(|n| sha256_file(&d.join(n))).collect();
    assert_eq!(sums, after, "a segment changed");
}

/// EnCase 2 to 5 and SMART start a new table every 16375 chunks: a segment of 20000 chunks
/// holds two (mostly zeros, so the set stays small).
#[test]
fn several_tables_in_one_segment() {
    let dir = scratch();
    let d = dir.path();
    let src = d.join("src.raw");
    source_disk(&src, 4 * MIB, 19);
    let f = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
    f.set_len(20000 * 8192).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"past the first table", 16375 * 8192 + 100).unwrap();
    drop(f);
    let want = sha256_file(&src);
    for format in ["encase2", "smart"] {
        let first = acquire(d, &src, format, &["-f", format, "-c", "deflate:fast", "-b", "16"]);
        let tables = std::fs::read(&first).unwrap().windows(16).filter(|w| w == b"table\0\0\0\0\0\0\0\0\0\0\0").count();
        assert_eq!(tables, 2, "{format}: expected two table sections");
        assert_eq!(vdmount_cat_sha256(&first, &[]).unwrap(), want, "{format}");
        assert_eq!(ewfexport_sha256(&first), want, "{format}: the oracle");
    }
}

/// A segment set served by nginx: the segments after the first are found beside it by URL, and
/// a missing one is named (as a URL) in the refusal.
#[test]
fn segment_sets_over_http_read_as_the_source() {
    let dir = scratch();
    let d = dir.path();
    let src = d.join("src.raw");
    source_disk(&src, 5 * MIB, 17);
    acquire(d, &src, "web", &["-f", "encase6", "-c", "deflate:fast", "-S", "1MiB"]);
    assert!(d.join("web.E03").exists(), "ewfacquire made fewer than 3 segments ({})", segments(d, "web"));
    let nginx = common::servers::Nginx::start(d);
    let url = nginx.http("web.E01");
    let out = vdmount().args(["cat", &url]).output().unwrap();
    assert!(out.status.success(), "{url}: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sha256_hex(&out.stdout), sha256_file(&src), "{url} differs from the source disk");
    std::fs::remove_file(d.join("web.E03")).unwrap();
    let out = vdmount().args(["cat", &url]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("web.E03") && err.contains("missing"), "{err}");
}

/// Opening a remote segment set asks for each later segment once: the open's own answer tells
/// a missing segment apart (before, a one-byte probe came first, then the open asked again).
#[test]
fn each_remote_segment_is_opened_with_one_request() {
    let dir = scratch();
    let d = dir.path().join("set");
    std::fs::create_dir(&d).unwrap();
    let src = dir.path().join("src.raw");
    source_disk(&src, 4 * MIB + MIB / 2, 23);
    acquire(&d, &src, "five", &["-f", "encase6", "-c", "none", "-S", "1MiB"]);
    assert_eq!(segments(&d, "five"), 5, "ewfacquire made another number of segments");
    let log = dir.path().join("access.log");
    let nginx = common::servers::Nginx::start_with(&d, &format!("access_log {} ranges;", log.display()));
    let url = nginx.http("five.E01");
    let out = vdmount().args(["cat", &url]).output().unwrap();
    assert!(out.status.success(), "{url}: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sha256_hex(&out.stdout), sha256_file(&src), "{url} differs from the source disk");
    let seen = common::servers::requests_logged(&log);
    for n in 1..=5 {
        let first_byte =
            seen.iter().filter(|r| r.starts_with(&format!("GET /five.E0{n} ")) && r.ends_with(" bytes=0-0"));
        assert_eq!(first_byte.count(), 1, "five.E0{n}: its first byte asked for other than once: {seen:#?}");
    }
    println!("{} requests for the 5-segment set: {seen:#?}", seen.len());
}
