//! Hostile Apple sparse images and sparse bundles: valid ones made at test time
//! (`common::sparse`), then cut short, byte-flipped or patched with absurd sizes, band maps
//! that point past the end, out of range, twice or in a loop; Info.plists with huge, negative or
//! missing numbers or none at all; band files that are symlinks out of the bundle, FIFOs or
//! folders. Each case runs `vdmount cat` as a child with a 1 GiB address-space limit and a
//! 10 s timeout: it must succeed or fail with one line starting "vdmount: " that names the
//! image, never panic, die of a signal or hang.

use super::harness::*;
use crate::common::sparse::{info_plist, nonzero_bands, shuffled, sparsebundle, sparseimage, Bundle};

/// `base` with `value` written at `at` (left whole if it does not fit).
fn overwritten(base: &[u8], at: usize, value: &[u8]) -> Vec<u8> {
    let mut b = base.to_vec();
    if at + value.len() <= b.len() {
        b[at..at + value.len()].copy_from_slice(value);
    }
    b
}

/// The variants of a .sparseimage `base` with bands of `band` bytes: cuts, flips and patches.
fn sparseimage_cases(base: &[u8], band: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    let mut rng = Rng(seed | 1);
    for cut in [0, 3, 4, 63, 64, 100, 4095, 4096, 4097, 4096 + band, base.len() - 1] {
        cases.push((format!("cut at {cut}"), base[..cut.min(base.len())].to_vec()));
    }
    for _ in 0..15 {
        let cut = rng.below(base.len() as u64) as usize;
        cases.push((format!("cut at {cut}"), base[..cut].to_vec()));
    }
    for _ in 0..40 {
        let mut b = base.to_vec();
        let mut what = Vec::new();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(4096) as usize;
            b[at] = match rng.below(3) {
                0 => 0xff,
                1 => 0,
                _ => rng.next() as u8,
            };
            what.push(format!("{at}={:#x}", b[at]));
        }
        cases.push((format!("flip {}", what.join(",")), b));
    }
    let mut p = |label: String, at: usize, v: &[u8]| cases.push((label, overwritten(base, at, v)));
    p("magic sprz".into(), 0, b"sprz");
    for v in [0u32, 1, 3, 0x10_0000, 0x80_0000, u32::MAX] {
        p(format!("sectors per band {v}"), 8, &v.to_be_bytes());
    }
    for v in [0u64, 1, 1 << 53, (1 << 62) / 512 + 1, u64::MAX] {
        p(format!("sectors {v}"), 28, &v.to_be_bytes());
    }
    for v in [0u32, 1, u32::MAX] {
        p(format!("32-bit sectors {v}"), 16, &v.to_be_bytes());
    }
    let len = base.len() as u64;
    for v in [1u64, 4095, 4096, 4096 + band as u64, len - 4096, len - 1, len, 1 << 62, u64::MAX] {
        p(format!("next node {v}"), 20, &v.to_be_bytes());
    }
    for v in [u32::MAX, 0x8000_0000, (len / 512) as u32 + 1] {
        p(format!("slot 0 = {v:#x}"), 64, &v.to_be_bytes());
    }
    let first = base[64..68].to_vec();
    p("slot 1 repeats slot 0".into(), 68, &first);
    p("slot 1007 repeats slot 0".into(), 64 + 4 * 1007, &first);
    let mut all_one = base.to_vec();
    for i in 0..1008 {
        all_one[64 + 4 * i..68 + 4 * i].copy_from_slice(&1u32.to_be_bytes());
    }
    cases.push(("every slot band 1".into(), all_one));
    cases
}

/// The same for an image with index nodes: each node's link and signature.
fn index_node_cases(base: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut cases = Vec::new();
    let mut at = u64::from_be_bytes(base[20..28].try_into().unwrap()) as usize;
    let mut nodes = Vec::new();
    while at != 0 {
        nodes.push(at);
        at = u64::from_be_bytes(base[at + 12..at + 20].try_into().unwrap()) as usize;
    }
    assert!(nodes.len() >= 2, "the base image has {} index nodes", nodes.len());
    for &n in &nodes {
        cases.push((format!("node {n} links to itself"), overwritten(base, n + 12, &(n as u64).to_be_bytes())));
        cases.push((format!("node {n} links back to the header"), overwritten(base, n + 12, &4096u64.to_be_bytes())));
        cases.push((
            format!("node {n} links to the first node"),
            overwritten(base, n + 12, &(nodes[0] as u64).to_be_bytes()),
        ));
        cases.push((format!("node {n} without its signature"), overwritten(base, n, b"\0\0\0\0")));
        cases.push((format!("cut inside node {n}"), base[..n + 100].to_vec()));
        cases.push((format!("node {n} slot 0 = band 1"), overwritten(base, n + 56, &1u32.to_be_bytes())));
    }
    cases
}

fn check_all(path: &Path, format: &str, cases: Vec<(String, Vec<u8>)>) -> Vec<String> {
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    let mut failures = Vec::new();
    for (label, bytes) in &cases {
        std::fs::write(path, bytes).unwrap();
        for args in [&["--format", format][..], &[]] {
            if let Err(e) = cat_is_clean(path, args, &[&name]) {
                failures.push(format!("{name} [{label}] {args:?}: {e}"));
            }
        }
    }
    eprintln!("{name}: {} cases, {} failures", cases.len(), failures.len());
    failures
}

#[test]
fn hostile_sparseimage() {
    let dir = scratch();
    let src_path = dir.path().join("source.raw");
    make_source_disk(&src_path, 2 << 20, 9);
    let src = std::fs::read(&src_path).unwrap();
    let mut failures = Vec::new();
    let base = sparseimage(&src, 128, &shuffled(nonzero_bands(&src, 65536), 3));
    failures.extend(check_all(
        &dir.path().join("bands.sparseimage"),
        "sparseimage",
        sparseimage_cases(&base, 65536, 4),
    ));
    // 512-byte bands: three index nodes.
    let small = sparseimage(&src, 1, &shuffled(nonzero_bands(&src, 512), 5));
    let mut cases = index_node_cases(&small);
    cases.extend(sparseimage_cases(&small, 512, 6));
    failures.extend(check_all(&dir.path().join("nodes.sparseimage"), "sparseimage", cases));
    assert_none(failures);
}

/// A valid bundle of a 1 MiB disk with 64 KiB bands in `dir`; returns the folder.
fn bundle(dir: &Path, name: &str) -> std::path::PathBuf {
    let src_path = dir.join(format!("{name}.raw"));
    make_source_disk(&src_path, 1 << 20, 10);
    let src = std::fs::read(&src_path).unwrap();
    let folder = dir.join(name);
    sparsebundle(&folder, &src, &Bundle { band_size: 65536, bands: &nonzero_bands(&src, 65536), trim: false });
    folder
}

#[test]
fn hostile_info_plist() {
    let dir = scratch();
    let folder = bundle(dir.path(), "x.sparsebundle");
    let plist = folder.join("Info.plist");
    let int = |v: &str| format!("<integer>{v}</integer>");
    let ok_size = int("1048576");
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for band in [
        int("0"),
        int("-1"),
        int("-9223372036854775808"),
        int("18446744073709551615"),
        int("99999999999999999999999"),
        int("1099511627776"),
        int("1"),
        int("511"),
        "<real>1e30</real>".into(),
        "<string>-5</string>".into(),
        "<string>abc</string>".into(),
        "<string></string>".into(),
        "<array/>".into(),
    ] {
        cases.push((format!("band-size {band}"), info_plist(&band, &ok_size).into_bytes()));
    }
    for size in [
        int("0"),
        int("-1"),
        int("18446744073709551615"),
        int("4611686018427387905"),
        int("511"),
        int("9223372036854775807"),
    ] {
        cases.push((format!("size {size}"), info_plist(&int("65536"), &size).into_bytes()));
    }
    let good = info_plist(&int("65536"), &ok_size);
    cases.push(("no band-size".into(), good.replace("<key>band-size</key>", "<key>band-sizes</key>").into_bytes()));
    cases.push(("no size".into(), good.replace("<key>size</key>", "<key>sizes</key>").into_bytes()));
    cases.push((
        "other bundle type".into(),
        good.replace("com.apple.diskimage.sparsebundle", "com.apple.diskimage.other").into_bytes(),
    ));
    cases.push(("no bundle type".into(), good.replace("diskimage-bundle-type", "type").into_bytes()));
    cases.push(("root an array".into(), b"<?xml version=\"1.0\"?><plist version=\"1.0\"><array/></plist>".to_vec()));
    cases.push(("cut in half".into(), good.as_bytes()[..good.len() / 2].to_vec()));
    cases.push(("empty".into(), Vec::new()));
    cases.push(("binary plist".into(), b"bplist00\xd1\x01\x02".to_vec()));
    let laughs = "<?xml version=\"1.0\"?><!DOCTYPE plist [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\"><!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\">]><plist version=\"1.0\"><dict><key>size</key><string>&c;</string></dict></plist>";
    cases.push(("entity expansion".into(), laughs.as_bytes().to_vec()));
    let mut huge = good.clone().into_bytes();
    huge.splice(40..40, std::iter::repeat_n(b' ', 2 << 20));
    cases.push(("2 MiB of spaces".into(), huge));
    let mut failures = Vec::new();
    for (label, bytes) in &cases {
        std::fs::write(&plist, bytes).unwrap();
        for (image, args) in [(&folder, &[][..]), (&plist, &["--format", "sparsebundle"][..])] {
            if let Err(e) = cat_is_clean(image, args, &["x.sparsebundle"]) {
                failures.push(format!("[{label}] {}: {e}", image.display()));
            }
        }
    }
    eprintln!("Info.plist: {} cases, {} failures", cases.len(), failures.len());
    assert_none(failures);
    // A bundle folder without its Info.plist is refused, naming the file that is missing.
    std::fs::remove_file(&plist).unwrap();
    let err = cat_refusal(&folder, &[]);
    assert!(err.contains("Info.plist") && err.contains("No such file"), "{err}");
}

#[test]
fn band_files_outside_the_bundle_are_refused() {
    let dir = scratch();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    make_source_disk(&out.join("secret"), 65536, 7);
    let folder = bundle(dir.path(), "y.sparsebundle");
    let bands = folder.join("bands");
    let want = vdmount_cat_sha256(&folder, &[]).unwrap();
    let band0 = std::fs::read(bands.join("0")).unwrap();
    // A band that is a symlink out of the bundle: refused, naming the band, where it leads and
    // what would allow it; --allow-dir allows it.
    std::fs::remove_file(bands.join("0")).unwrap();
    std::os::unix::fs::symlink(out.join("secret"), bands.join("0")).unwrap();
    let err = cat_refusal(&folder, &[]);
    for want in ["\"bands/0\"", "outside", out.join("secret").to_str().unwrap(), "--allow-dir"] {
        assert!(err.contains(want), "lacks {want:?}: {err}");
    }
    let allowed = vdmount_cat_sha256(&folder, &["--allow-dir", out.to_str().unwrap()]).unwrap();
    assert_ne!(allowed, want, "the outside band was not read");
    // ...through ../ likewise.
    std::fs::remove_file(bands.join("0")).unwrap();
    std::os::unix::fs::symlink("../../out/secret", bands.join("0")).unwrap();
    assert!(cat_refusal(&folder, &[]).contains("outside"));
    // A symlink that stays inside is followed.
    std::fs::remove_file(bands.join("0")).unwrap();
    std::fs::write(folder.join("kept"), &band0).unwrap();
    std::os::unix::fs::symlink("../kept", bands.join("0")).unwrap();
    assert_eq!(vdmount_cat_sha256(&folder, &[]).unwrap(), want);
    // A FIFO, a folder, a block device: not regular files (and the FIFO must not hang).
    std::fs::remove_file(bands.join("0")).unwrap();
    let fifo = std::ffi::CString::new(bands.join("0").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    assert!(cat_refusal(&folder, &[]).contains("FIFO"));
    std::fs::remove_file(bands.join("0")).unwrap();
    std::fs::create_dir(bands.join("0")).unwrap();
    assert!(cat_refusal(&folder, &[]).contains("a folder"));
    std::fs::remove_dir(bands.join("0")).unwrap();
    std::os::unix::fs::symlink("/dev/null", bands.join("0")).unwrap();
    assert!(cat_refusal(&folder, &[]).contains("outside"));
    std::fs::remove_file(bands.join("0")).unwrap();
    // The whole bands folder a symlink out of the bundle.
    std::fs::write(bands.join("0"), &band0).unwrap();
    std::fs::rename(&bands, out.join("bands")).unwrap();
    std::os::unix::fs::symlink(out.join("bands"), &bands).unwrap();
    let err = cat_refusal(&folder, &[]);
    assert!(err.contains("outside") && err.contains("bands/"), "{err}");
    assert_eq!(vdmount_cat_sha256(&folder, &["--allow-dir", out.to_str().unwrap()]).unwrap(), want);
}
