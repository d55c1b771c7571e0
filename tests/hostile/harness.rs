//! What every hostile case shares: run `vdmount cat` under limits, describe a case as patches
//! over a valid base image, and the byte helpers.

pub use crate::common::*;
pub use std::io::Read;
pub use std::os::unix::process::{CommandExt, ExitStatusExt};
pub use std::path::{Path, PathBuf};
pub use std::process::Stdio;
pub use std::sync::atomic::{AtomicU64, Ordering};
pub use std::sync::Arc;
pub use std::time::{Duration, Instant};

pub const MEMORY_LIMIT: u64 = 1 << 30;
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `vdmount cat [args] image` under the limits; `Err` says what was wrong with the outcome.
/// `names` must all appear in the message if vdmount refuses the image.
pub fn cat_is_clean(image: &Path, args: &[&str], names: &[&str]) -> Result<(), String> {
    let err_path = image.with_extension("stderr");
    let err_file = std::fs::File::create(&err_path).unwrap();
    let mut cmd = vdmount();
    cmd.arg("cat").args(args).arg(image).stdout(Stdio::piped()).stderr(err_file);
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: MEMORY_LIMIT, rlim_max: MEMORY_LIMIT };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn vdmount");
    // Count what cat writes, so a timeout on a huge but valid sparse disk that is still streaming
    // fast can be told from a hang.
    let streamed = Arc::new(AtomicU64::new(0));
    let mut out = child.stdout.take().unwrap();
    let counter = streamed.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    reader.join().unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&err_path);
    let Some(status) = status else {
        let n = streamed.load(Ordering::Relaxed);
        // 100 MiB in 10 s: a valid (if huge) disk being read, not a hang.
        if n > 100 << 20 {
            return Ok(());
        }
        return Err(format!("timed out after {TIMEOUT:?} having written {n} bytes; stderr: {stderr}"));
    };
    if stderr.contains("panicked") {
        return Err(format!("panicked: {}", stderr.trim()));
    }
    if let Some(sig) = status.signal() {
        return Err(format!("killed by signal {sig}; stderr: {}", stderr.trim()));
    }
    if status.success() {
        return Ok(());
    }
    let msg = stderr.trim_end();
    if msg.lines().count() != 1 || !msg.starts_with("vdmount: ") {
        return Err(format!("exit {status} without a one-line \"vdmount: \" message: {msg:?}"));
    }
    for name in names {
        if !msg.contains(name) {
            return Err(format!("the message does not name {name}: {msg}"));
        }
    }
    Ok(())
}

/// One hostile variant of an image, kept as its differences from the valid image (a length and
/// patches), not a copy: hundreds of copies of a multi-MiB image would make every fork slow.
pub struct Case {
    pub label: String,
    len: usize,
    patches: Vec<(usize, Vec<u8>)>,
}

impl Case {
    pub fn new(base: &[u8], label: impl Into<String>, bytes: Vec<u8>) -> Case {
        let mut patches: Vec<(usize, Vec<u8>)> = Vec::new();
        for (i, b) in bytes.iter().enumerate() {
            if base.get(i) == Some(b) {
                continue;
            }
            match patches.last_mut() {
                Some((at, run)) if *at + run.len() == i => run.push(*b),
                _ => patches.push((i, vec![*b])),
            }
        }
        Case { label: label.into(), len: bytes.len(), patches }
    }

    pub fn bytes(&self, base: &[u8]) -> Vec<u8> {
        let mut b = base[..self.len.min(base.len())].to_vec();
        b.resize(self.len, 0);
        for (at, run) in &self.patches {
            b[*at..*at + run.len()].copy_from_slice(run);
        }
        b
    }
}

/// Writes each case beside the image (same name, so the message must name it) and checks it;
/// returns the failures.
pub fn run_cases(dir: &Path, file_name: &str, format: &str, base: &[u8], cases: Vec<Case>) -> Vec<String> {
    let mut failures = Vec::new();
    let path = dir.join(file_name);
    for case in &cases {
        std::fs::write(&path, case.bytes(base)).unwrap();
        let start = Instant::now();
        // Forced format, so a broken signature cannot turn the case into a raw read...
        if let Err(e) = cat_is_clean(&path, &["--format", format], &[file_name]) {
            failures.push(format!("{file_name} [{}] --format {format}: {e}", case.label));
        }
        // ...and detected, as a user would run it.
        if let Err(e) = cat_is_clean(&path, &[], &[file_name]) {
            failures.push(format!("{file_name} [{}]: {e}", case.label));
        }
        if start.elapsed() > Duration::from_secs(1) {
            eprintln!("slow: {file_name} [{}] took {:?}", case.label, start.elapsed());
        }
    }
    eprintln!("{file_name}: {} cases, {} failures", cases.len(), failures.len());
    failures
}

pub use super::common::rng::Rng;

pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
pub fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
pub fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
pub fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

pub fn patched(base: &[u8], label: impl Into<String>, at: usize, value: &[u8]) -> Case {
    let mut bytes = base.to_vec();
    if at + value.len() <= bytes.len() {
        bytes[at..at + value.len()].copy_from_slice(value);
    }
    Case::new(base, label, bytes)
}

/// The generic cases: cut at each structure offset (at its start and 1 byte in), cut at 20
/// random points, and `flips` variants with 1-8 random bytes changed in the first 64 KiB (and in
/// each structure).
pub fn generic_cases(base: &[u8], structures: &[(&str, u64)], seed: u64, flips: usize) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut rng = Rng(seed | 1);
    for (name, at) in structures {
        for cut in [*at, at + 1, at + 8] {
            if (cut as usize) < base.len() {
                cases.push(Case::new(base, format!("cut at {cut} ({name})"), base[..cut as usize].to_vec()));
            }
        }
    }
    for _ in 0..20 {
        let cut = rng.below(base.len() as u64) as usize;
        cases.push(Case::new(base, format!("cut at {cut}"), base[..cut].to_vec()));
    }
    cases.push(Case::new(base, "empty file", Vec::new()));
    for i in 0..flips {
        let mut bytes = base.to_vec();
        // Most flips in the first 64 KiB, the rest near a structure.
        let (start, span) = match structures.get(i % (structures.len() + 3)) {
            Some((_, at)) if (*at as usize) < bytes.len() => (*at as usize, 4096),
            _ => (0, 65536),
        };
        let n = 1 + rng.below(8);
        let mut what = Vec::new();
        for _ in 0..n {
            let at = (start + rng.below(span) as usize).min(bytes.len().saturating_sub(1));
            let v = match rng.below(4) {
                0 => 0xff,
                1 => 0x00,
                _ => rng.next() as u8,
            };
            if let Some(b) = bytes.get_mut(at) {
                *b = v;
            }
            what.push(format!("{at}={v:#x}"));
        }
        cases.push(Case::new(base, format!("flip {}", what.join(",")), bytes));
    }
    cases
}

/// A scratch folder with a deterministic 2 MiB source disk.
pub fn source() -> (tempfile::TempDir, PathBuf) {
    let dir = scratch();
    let src = dir.path().join("source.raw");
    make_source_disk(&src, 2 << 20, 9);
    (dir, src)
}

pub fn make(dir: &Path, src: &Path, name: &str, fmt: &str, opts: &[&str]) -> Vec<u8> {
    let out = dir.join(name);
    let mut args = vec!["convert", "-f", "raw", "-O", fmt];
    args.extend_from_slice(opts);
    let (s, o) = (src.to_str().unwrap(), out.to_str().unwrap());
    args.extend_from_slice(&[s, o]);
    qemu_img(&args);
    std::fs::read(&out).unwrap()
}

pub fn assert_none(failures: Vec<String>) {
    assert!(failures.is_empty(), "{} hostile cases failed:\n{}", failures.len(), failures.join("\n"));
}

/// The image must be refused cleanly, naming `names`, with a message containing `needle`.
pub fn refused(label: &str, image: &Path, names: &[&str], needle: &str) -> Option<String> {
    refused_with(label, image, &[], names, needle)
}

/// As `refused`, with options before the image.
pub fn refused_with(label: &str, image: &Path, args: &[&str], names: &[&str], needle: &str) -> Option<String> {
    if let Err(e) = cat_is_clean(image, args, names) {
        return Some(format!("{label}: {e}"));
    }
    let out = vdmount().arg("cat").args(args).arg(image).stdout(Stdio::null()).output().unwrap();
    let msg = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || !msg.contains(needle) {
        return Some(format!("{label}: expected a refusal mentioning {needle:?}, got {msg:?}"));
    }
    None
}
