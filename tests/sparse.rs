//! Apple sparse images (.sparseimage) and sparse bundles (.sparsebundle). No Linux tool writes
//! them and qemu cannot read them, so `common::sparse` writes them from known source disks
//! (pseudo-random data, text and zero runs; a real ext4 made by mkfs.ext4 -d), and the oracle is
//! the source disk's SHA-256. Every comparison also reads through extents (what abuse.ko gets).

mod common;

use common::sparse::{nonzero_bands, shuffled, sparsebundle, sparseimage, Bundle};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: usize = 1 << 20;

fn source(dir: &Path, size: usize, seed: u64) -> Vec<u8> {
    let p = dir.join("source.raw");
    make_source_disk(&p, size as u64, seed);
    std::fs::read(&p).unwrap()
}

fn info(image: &Path) -> String {
    String::from_utf8(run_ok(vdmount().arg("info").arg(image)).stdout).unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A real filesystem: an ext4 made by mkfs.ext4 -d from a folder of files (random, text, a hole).
fn ext4_disk(dir: &Path) -> Vec<u8> {
    let files = dir.join("files");
    std::fs::create_dir_all(files.join("sub")).unwrap();
    make_source_disk(&files.join("random.bin"), 3 * MIB as u64 + 123, 21);
    std::fs::write(files.join("sub/hello.txt"), "hello from a sparse image\n".repeat(1000)).unwrap();
    let img = dir.join("ext4.raw");
    run_ok(Command::new("mkfs.ext4").args(["-q", "-F", "-b", "4096", "-d"]).arg(&files).arg(&img).arg("16M"));
    std::fs::read(&img).unwrap()
}

#[test]
fn sparseimage_against_the_source() {
    let dir = scratch();
    let src = source(dir.path(), 3 * MIB + 7 * 512, 5);
    let want = sha256_hex(&src);
    // hdiutil's 1 MiB bands; 4 KiB bands; 512-byte bands (thousands: the header's 1008 slots
    // overflow into index nodes).
    for (sectors, nodes) in [(2048u32, 1), (8, 1), (1, 4)] {
        let bands = nonzero_bands(&src, sectors as usize * 512);
        let img =
            write(dir.path(), &format!("s{sectors}.sparseimage"), &sparseimage(&src, sectors, &shuffled(bands, 7)));
        let got = vdmount_cat_sha256(&img, &[]).unwrap_or_else(|e| panic!("{sectors}: refused: {e}"));
        assert_eq!(got, want, "bands of {sectors} sectors: vdmount cat differs from the source");
        // 512-byte bands stored out of order need more extents than a request may have.
        if sectors >= 8 {
            let (described, size) = described_bytes(&img);
            assert_eq!(described, size, "bands of {sectors} sectors: not all described as extents");
        }
        let text = info(&img);
        assert!(text.contains(&format!("{} index nodes", nodes - 1)), "{sectors}: {text}");
    }
}

#[test]
fn real_ext4_in_an_image_and_a_bundle() {
    let dir = scratch();
    let src = ext4_disk(dir.path());
    let want = sha256_hex(&src);
    let bands = nonzero_bands(&src, MIB);
    assert!(bands.len() < src.len() / MIB, "the ext4 has no empty band: nothing sparse tested");
    let img = write(dir.path(), "ext4.sparseimage", &sparseimage(&src, 2048, &shuffled(bands.clone(), 3)));
    assert_eq!(vdmount_cat_sha256(&img, &[]).unwrap(), want, "ext4.sparseimage differs from the ext4");
    let bundle = dir.path().join("ext4.sparsebundle");
    sparsebundle(&bundle, &src, &Bundle { band_size: MIB as u64, bands: &bands, trim: true });
    assert_eq!(vdmount_cat_sha256(&bundle, &[]).unwrap(), want, "ext4.sparsebundle differs from the ext4");
    // The filesystem checks out read back through vdmount (e2fsck -n on cat's output).
    let out = run_ok(vdmount().arg("cat").arg(&bundle));
    let back = write(dir.path(), "back.raw", &out.stdout);
    run_ok(Command::new("e2fsck").args(["-f", "-n"]).arg(&back));
}

#[test]
fn sparsebundle_against_the_source() {
    let dir = scratch();
    let src = source(dir.path(), 3 * MIB + 7 * 512, 6);
    let want = sha256_hex(&src);
    // 8 MiB (hdiutil's default: one partial band), 1 MiB, 12 KiB, and 5000 bytes (not whole
    // sectors); band files whole or cut after their last non-zero byte.
    for (band_size, trim) in [(8 * MIB as u64, false), (MIB as u64, true), (12288, false), (5000, true)] {
        let bands = nonzero_bands(&src, band_size as usize);
        let folder = dir.path().join(format!("b{band_size}.sparsebundle"));
        sparsebundle(&folder, &src, &Bundle { band_size, bands: &bands, trim });
        let got = vdmount_cat_sha256(&folder, &[]).unwrap_or_else(|e| panic!("{band_size}: refused: {e}"));
        assert_eq!(got, want, "bands of {band_size} bytes: vdmount cat differs from the source");
        // Named by its Info.plist too.
        assert_eq!(vdmount_cat_sha256(&folder.join("Info.plist"), &[]).unwrap(), want);
        let (described, size) = described_bytes(&folder);
        assert_eq!(described, size, "bands of {band_size} bytes: not all described as extents");
    }
}

#[test]
fn sparsebundle_oddities() {
    let dir = scratch();
    let src = source(dir.path(), 2 * MIB, 8);
    let want = sha256_hex(&src);
    let folder = dir.path().join("odd.sparsebundle");
    let bands = nonzero_bands(&src, 65536);
    sparsebundle(&folder, &src, &Bundle { band_size: 65536, bands: &bands, trim: false });
    // Names that are not bands, and a band past the disk's end, are not part of the disk.
    for name in [".DS_Store", "0a", "A", "zz", "100"] {
        std::fs::write(folder.join("bands").join(name), [0xeeu8; 4096]).unwrap();
    }
    // Numbers as strings, as libmodi's notes describe them.
    std::fs::write(
        folder.join("Info.plist"),
        common::sparse::info_plist("<string>65536</string>", &format!("<string>{}</string>", src.len())),
    )
    .unwrap();
    assert_eq!(vdmount_cat_sha256(&folder, &[]).unwrap(), want);
    let text = info(&folder);
    for want in [
        "sparsebundle",
        "band size",
        "65536",
        &format!("32 ({} band files)", bands.len()),
        "1 band files past",
        "4 entries",
    ] {
        assert!(text.contains(want), "info lacks {want:?}:\n{text}");
    }
    // A band file longer than a band: only its first band's worth counts.
    let first = folder.join("bands").join(format!("{:x}", bands[0]));
    let mut long = std::fs::read(&first).unwrap();
    long.extend_from_slice(&[0x77; 10000]);
    std::fs::write(&first, &long).unwrap();
    assert_eq!(vdmount_cat_sha256(&folder, &[]).unwrap(), want);
    // No bands folder at all: a disk of zeros.
    std::fs::remove_dir_all(folder.join("bands")).unwrap();
    assert_eq!(vdmount_cat_sha256(&folder, &[]).unwrap(), sha256_hex(vec![0u8; src.len()]));
}

#[test]
fn info_detection_format_option_and_cow() {
    let dir = scratch();
    let src = source(dir.path(), MIB + 512, 9);
    let want = sha256_hex(&src);
    let bands = nonzero_bands(&src, 64 << 10);
    let img = write(dir.path(), "d.img", &sparseimage(&src, 128, &shuffled(bands.clone(), 1)));
    let text = info(&img);
    for want in ["sparseimage", "band size", "65536 (128 sectors)", &format!("17 ({} allocated)", bands.len())] {
        assert!(text.contains(want), "info lacks {want:?}:\n{text}");
    }
    // Detected by its magic whatever its name; --format names it too.
    assert_eq!(vdmount_cat_sha256(&img, &["--format", "sparseimage"]).unwrap(), want);
    let folder = dir.path().join("d.sparsebundle");
    sparsebundle(&folder, &src, &Bundle { band_size: 64 << 10, bands: &bands, trim: false });
    assert_eq!(vdmount_cat_sha256(&folder, &["--format", "sparsebundle"]).unwrap(), want);
    // A raw disk forced as either is refused, naming the file.
    let raw = write(dir.path(), "plain.raw", &src);
    assert!(cat_refusal(&raw, &["--format", "sparseimage"]).contains("sparseimage"));
    assert!(cat_refusal(&raw, &["--format", "sparsebundle"]).contains("Info.plist"));
    // --cow over both: writes land in the overlay, the image is untouched.
    use std::sync::Arc;
    use vdmount::overlay::Backend;
    let stored = folder.join("bands").join(format!("{:x}", bands[0]));
    for (image, watched) in [(&img, &img), (&folder, &stored)] {
        let before = sha256_file(watched);
        let opts = vdmount::formats::OpenOptions::new(vdmount::cache::Cache::new(16 << 20));
        let disk = vdmount::formats::open(image, &opts).unwrap();
        let cow =
            vdmount::overlay::ephemeral::CowOverlay::new(Arc::clone(&disk), Some(dir.path().to_path_buf())).unwrap();
        // Across a band boundary, into a band never stored.
        let at = (64 << 10) - 4096;
        cow.write(&[0xab; 8192], at, false).unwrap();
        let mut all = vec![0u8; src.len()];
        cow.read(&mut all, 0).unwrap();
        let mut model = src.clone();
        model[at as usize..at as usize + 8192].fill(0xab);
        assert!(all == model, "--cow over {} does not read back its write", image.display());
        assert_eq!(sha256_file(watched), before, "{} changed", watched.display());
    }
}

#[test]
fn third_party_sparse_images() {
    let read = check_third_party("sparseimage");
    assert!(!read.is_empty(), "no third-party sparse image read");
    // libmodi's header: the fields at the offsets its documentation gives.
    let header = repo().join("fixtures/third-party/sparseimage-libmodi-header/sparse_image_header.1");
    let text = info(&header);
    for want in ["4194304 bytes", "band size: 1048576 (2048 sectors)", "bands: 4 (4 allocated)", "truncated"] {
        assert!(text.contains(want), "info lacks {want:?}:\n{text}");
    }
}

#[test]
fn many_band_files_raise_the_open_file_limit() {
    use std::os::unix::process::CommandExt;
    let dir = scratch();
    let src = source(dir.path(), 1200 * 512, 11);
    let folder = dir.path().join("many.sparsebundle");
    let bands: Vec<usize> = (0..1200).collect();
    sparsebundle(&folder, &src, &Bundle { band_size: 512, bands: &bands, trim: false });
    // A soft limit of 256 open files (the hard one as it is): raised as the bands need.
    let mut cmd = vdmount();
    cmd.arg("cat").arg(&folder);
    unsafe {
        cmd.pre_exec(|| {
            let mut lim: libc::rlimit = std::mem::zeroed();
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = 256;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
    assert_eq!(sha256_hex(run_ok(&mut cmd).stdout), sha256_hex(&src));
    // A hard limit too low: refused, saying what to raise.
    let mut cmd = vdmount();
    cmd.arg("cat").arg(&folder);
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 256, rlim_max: 256 };
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("ulimit -Hn") && err.contains("many.sparsebundle"), "{err}");
}
