//! Helpers shared by the integration tests: run the vdmount binary, run the oracles
//! (qemu-img, libyal), make deterministic source disks, unpack the third-party cases.
#![allow(dead_code)]

pub mod dmg;
pub mod rng;
pub mod sparse;

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn vdmount() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vdmount"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("vdmount-test-").tempdir().expect("temp dir")
}

/// Runs a command and panics with its stderr if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

pub fn sha256_hex(data: impl AsRef<[u8]>) -> String {
    hex(&Sha256::digest(data.as_ref()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex(&h.finalize())
}

/// SHA-256 of `vdmount cat IMAGE [args]` streamed from the child's stdout, or its stderr on
/// failure. On success the disk is read a second time the way abuse.ko gets it from the server
/// (`cat --via-extents`: extents the kernel reads itself where the reader can describe them),
/// and both must agree, so every oracle comparison checks both paths.
pub fn vdmount_cat_sha256(image: &Path, args: &[&str]) -> Result<String, String> {
    let sha = cat_sha256(image, args)?;
    let mut via = args.to_vec();
    via.push("--via-extents");
    match cat_sha256(image, &via) {
        Ok(s) if s == sha => Ok(sha),
        Ok(s) => panic!("{}: read through extents gives {s}, read_at gives {sha}", image.display()),
        Err(e) => panic!("{}: read through extents failed where read_at did not: {e}", image.display()),
    }
}

/// Bytes of IMAGE that `cat --via-extents` could describe as extents, and the virtual size.
pub fn described_bytes(image: &Path) -> (u64, u64) {
    let out = run_ok(vdmount().args(["cat", "--via-extents"]).arg(image).stdout(std::process::Stdio::null()));
    let err = String::from_utf8_lossy(&out.stderr);
    let words: Vec<&str> = err.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "of").expect("a described-bytes line");
    (words[at - 1].parse().unwrap(), words[at + 1].parse().unwrap())
}

fn cat_sha256(image: &Path, args: &[&str]) -> Result<String, String> {
    let mut child = vdmount()
        .arg("cat")
        .args(args)
        .arg(image)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn vdmount");
    let mut out = child.stdout.take().unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = child.wait().unwrap();
    if status.success() {
        Ok(hex(&h.finalize()))
    } else {
        assert!(!err.contains("panicked"), "vdmount panicked on {}: {err}", image.display());
        Err(err)
    }
}

/// The oracle: SHA-256 of `qemu-img convert -O raw` of the image (`fmt` forces the format,
/// as `-f vpc` must for fixed VHDs). Runs from the image's folder, so relative names resolve.
pub fn qemu_raw_sha256(image: &Path, fmt: Option<&str>) -> String {
    let dir = scratch();
    let raw = dir.path().join("oracle.raw");
    let mut cmd = Command::new("qemu-img");
    cmd.arg("convert").arg("-U");
    if let Some(f) = fmt {
        cmd.args(["-f", f]);
    }
    cmd.args(["-O", "raw"]).arg(image).arg(&raw);
    if let Some(parent) = image.parent() {
        if !parent.as_os_str().is_empty() {
            cmd.current_dir(parent);
        }
    }
    run_ok(&mut cmd);
    sha256_file(&raw)
}

/// Writes a deterministic disk of `size` bytes: pseudo-random data, text, zero runs, so
/// every reader path (allocated, sparse, compressible) is exercised.
pub fn make_source_disk(path: &Path, size: u64, seed: u64) {
    let mut data = vec![0u8; size as usize];
    let mut rng = rng::Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let chunk = 64 * 1024;
    for (i, block) in data.chunks_mut(chunk).enumerate() {
        match i % 5 {
            0 | 3 => {
                for b in block.iter_mut() {
                    *b = rng.next() as u8;
                }
            }
            1 => {
                let text = format!("block {i} of a deterministic test disk, seed {seed}. ");
                for (j, b) in block.iter_mut().enumerate() {
                    *b = text.as_bytes()[j % text.len()];
                }
            }
            _ => {} // zeros
        }
    }
    std::fs::write(path, &data).unwrap();
}

/// `qemu-img` with the given arguments, which must succeed.
pub fn qemu_img(args: &[&str]) {
    run_ok(Command::new("qemu-img").args(args));
}

/// One row of fixtures/third-party/MANIFEST.tsv (a copy of ../shared/images/MANIFEST.tsv).
pub struct Case {
    pub case: String,
    pub top_image: String,
    pub format: String,
    pub virtual_size: u64,
    pub oracle: String,
    /// Acceptable answers: hashes, or "error" for a clean refusal.
    pub expected: Vec<String>,
}

pub fn third_party_cases() -> Vec<Case> {
    let text = std::fs::read_to_string(repo().join("fixtures/third-party/MANIFEST.tsv")).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Case {
                case: f[0].into(),
                top_image: f[1].into(),
                format: f[2].into(),
                virtual_size: f[3].parse().unwrap(),
                oracle: f[4].into(),
                expected: f[5].split('|').map(String::from).collect(),
            }
        })
        .collect()
}

/// Copies a third-party case into a scratch folder and decompresses its .xz files; returns the
/// folder (keep it alive) and the path of the top image.
pub fn unpack_case(case: &Case) -> (tempfile::TempDir, PathBuf) {
    let dir = scratch();
    let src = repo().join("fixtures/third-party").join(&case.case);
    for entry in std::fs::read_dir(&src).unwrap() {
        let p = entry.unwrap().path();
        let dst = dir.path().join(p.file_name().unwrap());
        std::fs::copy(&p, &dst).unwrap();
        if dst.extension().is_some_and(|e| e == "xz") {
            run_ok(Command::new("xz").arg("-d").arg(&dst));
        }
    }
    let top = dir.path().join(&case.top_image);
    (dir, top)
}

/// Checks the third-party cases whose format starts with `prefix` against MANIFEST.tsv.
/// Returns the names of the cases read.
pub fn check_third_party(prefix: &str) -> Vec<String> {
    let mut read = Vec::new();
    let mut failures = Vec::new();
    for case in third_party_cases().iter().filter(|c| c.format.starts_with(prefix)) {
        let (_dir, top) = unpack_case(case);
        match vdmount_cat_sha256(&top, &[]) {
            Ok(h) if case.expected.contains(&h) => read.push(case.case.clone()),
            Ok(h) => failures.push(format!("{}: got {h}, expected {:?}", case.case, case.expected)),
            Err(e) if case.expected.iter().any(|x| x == "error") => {
                assert!(e.contains(&case.top_image), "{}: error does not name the file: {e}", case.case);
                read.push(format!("{} (refused: {})", case.case, e.trim()));
            }
            Err(e) => failures.push(format!("{}: refused: {e}", case.case)),
        }
    }
    assert!(failures.is_empty(), "third-party {prefix} images:\n{}", failures.join("\n"));
    read
}

/// The bytes a list of extents describes, read the way abuse.ko reads them (a short read of a
/// file range is an error there too).
pub fn read_extents(extents: &[vdmount::formats::Extent]) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut out = Vec::new();
    for e in extents {
        match *e {
            vdmount::formats::Extent::Zero { len } => out.resize(out.len() + len as usize, 0),
            vdmount::formats::Extent::Data { fd, offset, len } => {
                let mut buf = vec![0u8; len as usize];
                // SAFETY: the fd belongs to an image the caller holds open; ManuallyDrop keeps it open.
                let f =
                    std::mem::ManuallyDrop::new(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) });
                f.read_exact_at(&mut buf, offset).expect("reading an extent");
                out.extend_from_slice(&buf);
            }
        }
    }
    out
}

/// `vdmount cat` must refuse `image` with one line naming it; returns the message.
pub fn cat_refusal(image: &Path, args: &[&str]) -> String {
    let err = match vdmount_cat_sha256(image, args) {
        Ok(h) => panic!("vdmount read {} (sha256 {h}) instead of refusing it", image.display()),
        Err(e) => e,
    };
    let name = image.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name), "the message does not name {name}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    err
}

/// Runs qemu-io on `image` with each of `cmds` as a -c command.
pub fn qemu_io(fmt: &str, image: &Path, cmds: &[&str]) {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", fmt]);
    for c in cmds {
        cmd.args(["-c", c]);
    }
    cmd.arg(image);
    if let Some(dir) = image.parent() {
        cmd.current_dir(dir);
    }
    let out = run_ok(&mut cmd);
    // qemu-io reports failed commands on stdout and still exits 0.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("failed"), "qemu-io {cmds:?} on {}: {text}", image.display());
}
pub mod servers;
