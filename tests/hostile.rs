//! Hostile images: valid images made at test time with qemu-img, then truncated, given a wrong
//! magic or version, byte-flipped, or patched with absurd sizes; and backing chains that loop,
//! run too deep or end in a folder, a FIFO or a device. Each case runs `vdmount cat` as a child
//! with a 1 GiB address-space limit and a 10 s timeout: it must succeed or fail cleanly (one line
//! on stderr starting "vdmount: " and naming the file), never panic, die of a signal or hang.

mod common;

use common::*;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MEMORY_LIMIT: u64 = 1 << 30;
const TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `vdmount cat [args] image` under the limits; `Err` says what was wrong with the outcome.
/// `names` must all appear in the message if vdmount refuses the image.
fn cat_is_clean(image: &Path, args: &[&str], names: &[&str]) -> Result<(), String> {
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
struct Case {
    label: String,
    len: usize,
    patches: Vec<(usize, Vec<u8>)>,
}

impl Case {
    fn new(base: &[u8], label: impl Into<String>, bytes: Vec<u8>) -> Case {
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

    fn bytes(&self, base: &[u8]) -> Vec<u8> {
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
fn run_cases(dir: &Path, file_name: &str, format: &str, base: &[u8], cases: Vec<Case>) -> Vec<String> {
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

/// A deterministic xorshift stream.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn patched(base: &[u8], label: impl Into<String>, at: usize, value: &[u8]) -> Case {
    let mut bytes = base.to_vec();
    if at + value.len() <= bytes.len() {
        bytes[at..at + value.len()].copy_from_slice(value);
    }
    Case::new(base, label, bytes)
}

/// The generic cases: cut at each structure offset (at its start and 1 byte in), cut at 20
/// random points, and `flips` variants with 1-8 random bytes changed in the first 64 KiB (and in
/// each structure).
fn generic_cases(base: &[u8], structures: &[(&str, u64)], seed: u64, flips: usize) -> Vec<Case> {
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
fn source() -> (tempfile::TempDir, PathBuf) {
    let dir = scratch();
    let src = dir.path().join("source.raw");
    make_source_disk(&src, 2 << 20, 9);
    (dir, src)
}

fn make(dir: &Path, src: &Path, name: &str, fmt: &str, opts: &[&str]) -> Vec<u8> {
    let out = dir.join(name);
    let mut args = vec!["convert", "-f", "raw", "-O", fmt];
    args.extend_from_slice(opts);
    let (s, o) = (src.to_str().unwrap(), out.to_str().unwrap());
    args.extend_from_slice(&[s, o]);
    qemu_img(&args);
    std::fs::read(&out).unwrap()
}

fn assert_none(failures: Vec<String>) {
    assert!(failures.is_empty(), "{} hostile cases failed:\n{}", failures.len(), failures.join("\n"));
}

// ---------------------------------------------------------------- qcow2

fn qcow2_cases(base: &[u8], seed: u64) -> Vec<Case> {
    let l1 = be64(base, 40);
    let l2 = be64(base, l1 as usize) & 0x00ff_ffff_ffff_fe00;
    let refcount_table = be64(base, 48);
    let refcount_block = be64(base, refcount_table as usize);
    let structures = [
        ("header", 0),
        ("header extensions", 72),
        ("L1 table", l1),
        ("first L2 table", l2),
        ("refcount table", refcount_table),
        ("first refcount block", refcount_block),
    ];
    let mut cases = generic_cases(base, &structures, seed, 60);
    cases.push(patched(base, "wrong magic", 0, b"QFI\0"));
    for v in [0u32, 4, 0xffff_ffff] {
        cases.push(patched(base, format!("version {v}"), 4, &v.to_be_bytes()));
    }
    for size in [1u64 << 63, 1 << 62, u64::MAX, (1 << 62) + 511] {
        cases.push(patched(base, format!("virtual size {size}"), 24, &size.to_be_bytes()));
    }
    for bits in [0u32, 8, 22, 31, 63, 0xffff_ffff] {
        cases.push(patched(base, format!("cluster_bits {bits}"), 20, &bits.to_be_bytes()));
    }
    for n in [0xffff_ffffu32, 1 << 31, 1 << 28] {
        cases.push(patched(base, format!("l1_size {n}"), 36, &n.to_be_bytes()));
        cases.push(patched(base, format!("refcount_table_clusters {n}"), 56, &n.to_be_bytes()));
        cases.push(patched(base, format!("nb_snapshots {n}"), 60, &n.to_be_bytes()));
    }
    for off in [1u64 << 63, u64::MAX - 511, 1 << 40] {
        cases.push(patched(base, format!("l1_table_offset {off}"), 40, &off.to_be_bytes()));
        cases.push(patched(base, format!("snapshots_offset {off}"), 64, &off.to_be_bytes()));
        cases.push(patched(base, format!("backing_file_offset {off}"), 8, &off.to_be_bytes()));
    }
    let mut with_backing = base.to_vec();
    with_backing[8..16].copy_from_slice(&100u64.to_be_bytes());
    with_backing[16..20].copy_from_slice(&0x8000_0000u32.to_be_bytes());
    cases.push(Case::new(base, "backing name of 2^31 bytes", with_backing));
    if be32(base, 4) >= 3 {
        for len in [0u32, 8, 0xffff_ffff] {
            cases.push(patched(base, format!("header_length {len}"), 100, &len.to_be_bytes()));
        }
        cases.push(patched(base, "all incompatible feature bits", 72, &u64::MAX.to_be_bytes()));
    }
    // An L1 entry and an L2 entry pointing far past the end of the file and into the header.
    cases.push(patched(base, "L1[0] past the end", l1 as usize, &(0x8000_00ff_ffff_0000u64).to_be_bytes()));
    cases.push(patched(base, "L1[0] at the header", l1 as usize, &(0x8000_0000_0000_0000u64).to_be_bytes()));
    cases.push(patched(base, "L2[0] past the end", l2 as usize, &(0x8000_00ff_ffff_0000u64).to_be_bytes()));
    cases.push(patched(base, "L2[0] compressed, huge", l2 as usize, &(0x7fff_ffff_ffff_ffffu64).to_be_bytes()));
    cases
}

#[test]
fn hostile_qcow2() {
    let (dir, src) = source();
    let mut failures = Vec::new();
    let v3 = make(dir.path(), &src, "v3.qcow2", "qcow2", &["-o", "cluster_size=4096"]);
    failures.extend(run_cases(dir.path(), "v3.qcow2", "qcow2", &v3, qcow2_cases(&v3, 1)));
    let v2 = make(dir.path(), &src, "v2.qcow2", "qcow2", &["-o", "compat=0.10"]);
    failures.extend(run_cases(dir.path(), "v2.qcow2", "qcow2", &v2, qcow2_cases(&v2, 2)));
    let zlib = make(dir.path(), &src, "compressed.qcow2", "qcow2", &["-c", "-o", "cluster_size=4096"]);
    failures.extend(run_cases(dir.path(), "compressed.qcow2", "qcow2", &zlib, qcow2_cases(&zlib, 3)));
    assert_none(failures);
}

// ---------------------------------------------------------------- QED

fn qed_cases(base: &[u8], seed: u64) -> Vec<Case> {
    let l1 = le64(base, 40);
    let l2 = le64(base, l1 as usize);
    let name_at = le32(base, 56) as u64;
    let structures = [("header", 0), ("backing file name", name_at), ("L1 table", l1), ("first L2 table", l2)];
    let mut cases = generic_cases(base, &structures, seed, 60);
    cases.push(patched(base, "wrong magic", 0, b"QED\x01"));
    for size in [0u32, 512, 4097, 1 << 27, u32::MAX] {
        cases.push(patched(base, format!("cluster_size {size}"), 4, &size.to_le_bytes()));
    }
    for n in [0u32, 1, 3, 32, u32::MAX] {
        cases.push(patched(base, format!("table_size {n}"), 8, &n.to_le_bytes()));
    }
    for n in [0u32, 16, 1 << 20, u32::MAX] {
        cases.push(patched(base, format!("header_size {n}"), 12, &n.to_le_bytes()));
    }
    for (label, bits) in [("all feature bits", u64::MAX), ("unknown feature bit 3", 1 << 3), ("need check", 2)] {
        cases.push(patched(base, label, 16, &bits.to_le_bytes()));
    }
    for size in [511u64, 1 << 62, (1 << 62) + 512, 1 << 63, u64::MAX - 511, 1 << 50] {
        cases.push(patched(base, format!("image_size {size}"), 48, &size.to_le_bytes()));
    }
    for off in [0u64, 4096 + 8, 1 << 40, 1 << 63, u64::MAX - 4095] {
        cases.push(patched(base, format!("l1_table_offset {off}"), 40, &off.to_le_bytes()));
    }
    // Backing file names: past the header, past the file's end, longer than qemu allows.
    let mut named = patched(base, "", 16, &1u64.to_le_bytes()).bytes(base);
    for (label, at, len, header_clusters) in [
        ("backing name past the header", 64u32, u32::MAX, 1u32),
        ("backing name at u32::MAX", u32::MAX, 16, 1),
        ("backing name of 5000 bytes", 64, 5000, 2),
        // Unreachable past the L1 check (the name lies in the header, the L1 table after it,
        // inside the file), but refused all the same.
        ("backing name past the end of the file", 3 << 20, 100, 1 << 12),
    ] {
        named[56..60].copy_from_slice(&at.to_le_bytes());
        named[60..64].copy_from_slice(&len.to_le_bytes());
        named[12..16].copy_from_slice(&header_clusters.to_le_bytes());
        cases.push(Case::new(base, label, named.clone()));
    }
    // Table entries pointing past the end of the file, into the header, or unaligned.
    for (label, value) in [("past the end", 1u64 << 40), ("unaligned", 4096 + 7), ("at the header", 1 << 63)] {
        cases.push(patched(base, format!("L1[0] {label}"), l1 as usize, &value.to_le_bytes()));
        cases.push(patched(base, format!("L2[0] {label}"), l2 as usize, &value.to_le_bytes()));
    }
    cases.push(patched(base, "L1[0] = the L1 table", l1 as usize, &l1.to_le_bytes()));
    cases
}

#[test]
fn hostile_qed() {
    let (dir, src) = source();
    let d = dir.path();
    let mut failures = Vec::new();
    let plain = make(d, &src, "plain.qed", "qed", &["-o", "cluster_size=4096"]);
    failures.extend(run_cases(d, "plain.qed", "qed", &plain, qed_cases(&plain, 11)));
    // A child over source.raw (beside it), with its backing name in the header.
    let child = d.join("child.qed");
    let (c, b) = (child.to_str().unwrap(), src.to_str().unwrap());
    qemu_img(&["create", "-q", "-f", "qed", "-o", "cluster_size=4096,table_size=2", "-b", b, "-F", "raw", c, "3M"]);
    let child_bytes = std::fs::read(&child).unwrap();
    failures.extend(run_cases(d, "child.qed", "qed", &child_bytes, qed_cases(&child_bytes, 12)));
    // A chain that loops: a.qed -> b.qed -> a.qed.
    for (name, backing) in [("a.qed", "b.qed"), ("b.qed", "a.qed")] {
        let p = d.join(name);
        qemu_img(&["create", "-q", "-f", "qed", "-u", "-b", backing, "-F", "qed", p.to_str().unwrap(), "1M"]);
    }
    failures.extend(refused("QED A -> B -> A", &d.join("a.qed"), &["a.qed", "b.qed"], "loop"));
    assert_none(failures);
}

// ---------------------------------------------------------------- VMDK

fn kdmv_cases(base: &[u8], seed: u64) -> Vec<Case> {
    // streamOptimized writes its grain directory last: the header says "at the end" and the
    // footer (a header copy 1 KiB before the end) has the real offsets.
    let header = if le64(base, 56) == u64::MAX { &base[base.len() - 1024..] } else { base };
    let gd = le64(header, 56) * 512;
    let rgd = le64(header, 48).wrapping_mul(512);
    let gt = le32(base, gd as usize) as u64 * 512;
    let desc = le64(base, 28) * 512;
    let mut structures = vec![("header", 0), ("descriptor", desc), ("grain directory", gd), ("first grain table", gt)];
    if rgd != 0 && rgd < base.len() as u64 {
        structures.push(("redundant grain directory", rgd));
    }
    if base.len() >= 1536 && &base[base.len() - 1536 + 512..base.len() - 1536 + 516] == b"KDMV" {
        // streamOptimized: the footer header, one sector before the end-of-stream marker.
        structures.push(("footer", base.len() as u64 - 1024));
    }
    let mut cases = generic_cases(base, &structures, seed, 60);
    cases.push(patched(base, "wrong magic", 0, b"KDMW"));
    for v in [0u32, 4, 0xffff_ffff] {
        cases.push(patched(base, format!("version {v}"), 4, &v.to_le_bytes()));
    }
    for cap in [u64::MAX, 1 << 54, (1 << 63) / 512] {
        cases.push(patched(base, format!("capacity {cap} sectors"), 12, &cap.to_le_bytes()));
    }
    for grain in [0u64, 3, 1 << 40, u64::MAX] {
        cases.push(patched(base, format!("grain size {grain}"), 20, &grain.to_le_bytes()));
    }
    for v in [u64::MAX, 1 << 50] {
        cases.push(patched(base, format!("descriptor offset {v}"), 28, &v.to_le_bytes()));
        cases.push(patched(base, format!("descriptor size {v}"), 36, &v.to_le_bytes()));
        cases.push(patched(base, format!("gd offset {v}"), 56, &v.to_le_bytes()));
        cases.push(patched(base, format!("rgd offset {v}"), 48, &v.to_le_bytes()));
        cases.push(patched(base, format!("overhead {v}"), 64, &v.to_le_bytes()));
    }
    for n in [0u32, 1, 0xffff_ffff] {
        cases.push(patched(base, format!("GTEs per GT {n}"), 44, &n.to_le_bytes()));
    }
    cases.push(patched(base, "GD[0] past the end", gd as usize, &0xffff_fff0u32.to_le_bytes()));
    cases.push(patched(base, "GT[0] past the end", gt as usize, &0xffff_fff0u32.to_le_bytes()));
    cases.push(patched(base, "GT[0] at the header", gt as usize, &1u32.to_le_bytes()));
    cases
}

/// Cases for a text descriptor: the generic ones plus absurd extent lines.
fn descriptor_cases(base: &[u8], seed: u64) -> Vec<Case> {
    let text = String::from_utf8_lossy(base).into_owned();
    let mut cases = generic_cases(base, &[("descriptor", 0)], seed, 30);
    let mut variant = |label: &str, from: &str, to: &str| {
        cases.push(Case::new(base, label, text.replacen(from, to, 1).into_bytes()));
    };
    variant("extent of 2^63 sectors", "RW 4096 FLAT", "RW 9223372036854775807 FLAT");
    variant("extent of 2^64-1 sectors", "RW 4096 FLAT", "RW 18446744073709551615 FLAT");
    variant("extent offset 2^63", "flat.vmdk\" 0", "flat.vmdk\" 9223372036854775807");
    variant("extent naming a folder", "\"disk-flat.vmdk\"", "\".\"");
    variant("extent naming /dev/zero", "\"disk-flat.vmdk\"", "\"/dev/zero\"");
    variant("extent naming itself", "\"disk-flat.vmdk\"", "\"disk.vmdk\"");
    variant("extent naming a missing file", "\"disk-flat.vmdk\"", "\"missing.vmdk\"");
    variant("parent naming itself", "createType", "parentFileNameHint=\"disk.vmdk\"\nparentCID=12345678\ncreateType");
    variant("wrong version", "version=1", "version=99");
    variant("unknown createType", "monolithicFlat", "vmfsRawDeviceMap");
    let many: String = (0..5000).map(|_| "RW 1 ZERO\n").collect();
    variant("5000 extents", "# The Disk Data Base", &format!("{many}# The Disk Data Base"));
    cases
}

#[test]
fn hostile_vmdk() {
    let (dir, src) = source();
    let mut failures = Vec::new();
    let sparse = make(dir.path(), &src, "sparse.vmdk", "vmdk", &[]);
    failures.extend(run_cases(dir.path(), "sparse.vmdk", "vmdk", &sparse, kdmv_cases(&sparse, 4)));
    let stream = make(dir.path(), &src, "stream.vmdk", "vmdk", &["-o", "subformat=streamOptimized"]);
    failures.extend(run_cases(dir.path(), "stream.vmdk", "vmdk", &stream, kdmv_cases(&stream, 5)));
    make(dir.path(), &src, "disk.vmdk", "vmdk", &["-o", "subformat=monolithicFlat"]);
    let desc = std::fs::read(dir.path().join("disk.vmdk")).unwrap();
    assert!(String::from_utf8_lossy(&desc).contains("RW 4096 FLAT \"disk-flat.vmdk\" 0"), "unexpected descriptor");
    failures.extend(run_cases(dir.path(), "disk.vmdk", "vmdk", &desc, descriptor_cases(&desc, 6)));
    assert_none(failures);
}

// ---------------------------------------------------------------- VHD

/// Sets the VHD checksum (ones' complement of the byte sum, field excluded) of `b[..len]`.
fn vhd_checksum(b: &mut [u8], field: usize) {
    b[field..field + 4].fill(0);
    let sum: u32 = b.iter().fold(0u32, |s, x| s.wrapping_add(*x as u32));
    b[field..field + 4].copy_from_slice(&(!sum).to_be_bytes());
}

/// `base` with footer field `at` set to `value` in every footer copy, checksums fixed.
fn vhd_footer_patch(base: &[u8], label: String, at: usize, value: &[u8]) -> Case {
    let mut bytes = base.to_vec();
    let tail = bytes.len() - 512;
    let copies: Vec<usize> = if &bytes[..8] == b"conectix" { vec![0, tail] } else { vec![tail] };
    for c in copies {
        let f = &mut bytes[c..c + 512];
        f[at..at + value.len()].copy_from_slice(value);
        vhd_checksum(f, 64);
    }
    Case::new(base, label, bytes)
}

fn vhd_cases(base: &[u8], seed: u64) -> Vec<Case> {
    let footer_at = base.len() as u64 - 512;
    let mut structures = vec![("footer", footer_at)];
    let dynamic = &base[..8] == b"conectix";
    let header_at = if dynamic { be64(base, 16) } else { 0 };
    let mut table_at = 0;
    if dynamic {
        table_at = be64(base, header_at as usize + 16);
        let first = (0..be32(base, header_at as usize + 28) as usize)
            .map(|i| be32(base, table_at as usize + 4 * i))
            .find(|e| *e != 0xffff_ffff)
            .unwrap_or(0) as u64
            * 512;
        structures.extend([
            ("footer copy", 0),
            ("dynamic header", header_at),
            ("block allocation table", table_at),
            ("first block", first),
        ]);
    }
    let mut cases = generic_cases(base, &structures, seed, 60);
    let mut wrong = base.to_vec();
    let n = wrong.len();
    wrong[n - 512..n - 504].copy_from_slice(b"conectiy");
    if dynamic {
        wrong[..8].copy_from_slice(b"conectiy");
    }
    cases.push(Case::new(base, "wrong magic", wrong));
    cases.push(vhd_footer_patch(base, "footer version 2.0".into(), 12, &0x0002_0000u32.to_be_bytes()));
    for size in [1u64 << 63, u64::MAX, 1 << 62] {
        cases.push(vhd_footer_patch(base, format!("current size {size}"), 48, &size.to_be_bytes()));
        cases.push(vhd_footer_patch(base, format!("original size {size}"), 40, &size.to_be_bytes()));
    }
    cases.push(vhd_footer_patch(base, "CHS 65535/255/255".into(), 56, &[0xff, 0xff, 0xff, 0xff]));
    for t in [0u32, 1, 5, 0xffff_ffff] {
        cases.push(vhd_footer_patch(base, format!("disk type {t}"), 60, &t.to_be_bytes()));
    }
    if dynamic {
        cases.push(vhd_footer_patch(base, "data offset 2^63".into(), 16, &(1u64 << 63).to_be_bytes()));
        let header_patch = |label: String, at: usize, value: &[u8]| {
            let mut bytes = base.to_vec();
            let h = &mut bytes[header_at as usize..header_at as usize + 1024];
            h[at..at + value.len()].copy_from_slice(value);
            vhd_checksum(h, 36);
            Case::new(base, label, bytes)
        };
        cases.push(header_patch("dynamic header version 2.0".into(), 24, &0x0002_0000u32.to_be_bytes()));
        for n in [0xffff_ffffu32, 1 << 31, 0] {
            cases.push(header_patch(format!("max table entries {n}"), 28, &n.to_be_bytes()));
        }
        for bs in [0u32, 511, 1 << 31, 0xffff_ffff, 4096] {
            cases.push(header_patch(format!("block size {bs}"), 32, &bs.to_be_bytes()));
        }
        for off in [1u64 << 63, u64::MAX, 1 << 40] {
            cases.push(header_patch(format!("table offset {off}"), 16, &off.to_be_bytes()));
        }
        cases.push(patched(base, "BAT[0] past the end", table_at as usize, &0xffff_fff0u32.to_be_bytes()));
        cases.push(patched(base, "BAT[0] at the header", table_at as usize, &0u32.to_be_bytes()));
    }
    cases
}

#[test]
fn hostile_vhd() {
    let (dir, src) = source();
    let mut failures = Vec::new();
    let fixed = make(dir.path(), &src, "fixed.vhd", "vpc", &["-o", "subformat=fixed"]);
    failures.extend(run_cases(dir.path(), "fixed.vhd", "vhd", &fixed, vhd_cases(&fixed, 7)));
    let dynamic = make(dir.path(), &src, "dynamic.vhd", "vpc", &[]);
    failures.extend(run_cases(dir.path(), "dynamic.vhd", "vhd", &dynamic, vhd_cases(&dynamic, 8)));
    assert_none(failures);
}

// ---------------------------------------------------------------- VHDX

const REGION_BAT: [u8; 16] =
    [0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08];
const ITEM_FILE_PARAMETERS: [u8; 16] =
    [0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d, 0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b];
const ITEM_VIRTUAL_SIZE: [u8; 16] =
    [0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48, 0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8];
const ITEM_LOGICAL_SECTOR: [u8; 16] =
    [0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47, 0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f];

/// Sets the CRC-32C checksum at offset 4 of a VHDX header or region table.
fn vhdx_checksum(b: &mut [u8]) {
    b[4..8].fill(0);
    let c = crc32c::crc32c(b);
    b[4..8].copy_from_slice(&c.to_le_bytes());
}

struct VhdxLayout {
    bat: u64,
    metadata: u64,
    /// (GUID, file offset) of each metadata item.
    items: Vec<([u8; 16], u64)>,
    log: u64,
}

fn vhdx_layout(b: &[u8]) -> VhdxLayout {
    let rt = 192 << 10;
    let (mut bat, mut metadata) = (0, 0);
    for i in 0..le32(b, rt + 8) as usize {
        let e = rt + 16 + 32 * i;
        let off = le64(b, e + 16);
        if b[e..e + 16] == REGION_BAT {
            bat = off;
        } else {
            metadata = off;
        }
    }
    let m = metadata as usize;
    let items = (0..u16::from_le_bytes([b[m + 10], b[m + 11]]) as usize)
        .map(|i| {
            let e = m + 32 + 32 * i;
            (b[e..e + 16].try_into().unwrap(), metadata + le32(b, e + 16) as u64)
        })
        .collect();
    VhdxLayout { bat, metadata, items, log: le64(b, (64 << 10) + 72) }
}

fn vhdx_cases(base: &[u8], seed: u64) -> Vec<Case> {
    let l = vhdx_layout(base);
    let item = |guid: [u8; 16]| l.items.iter().find(|(g, _)| *g == guid).map(|(_, at)| *at as usize).unwrap();
    let structures = [
        ("file identifier", 0),
        ("header 1", 64 << 10),
        ("header 2", 128 << 10),
        ("region table 1", 192 << 10),
        ("region table 2", 256 << 10),
        ("log", l.log),
        ("metadata", l.metadata),
        ("BAT", l.bat),
    ];
    let mut cases = generic_cases(base, &structures, seed, 60);
    cases.push(patched(base, "wrong magic", 0, b"vhdxfilf"));
    let both_headers = |label: String, at: usize, value: &[u8]| {
        let mut bytes = base.to_vec();
        for h in [64usize << 10, 128 << 10] {
            let hdr = &mut bytes[h..h + 4096];
            hdr[at..at + value.len()].copy_from_slice(value);
            vhdx_checksum(hdr);
        }
        Case::new(base, label, bytes)
    };
    cases.push(both_headers("header version 2".into(), 66, &2u16.to_le_bytes()));
    cases.push(both_headers("log version 7".into(), 64, &7u16.to_le_bytes()));
    cases.push(both_headers("log of 4 GiB at 2^63".into(), 68, &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0x80]));
    cases.push(both_headers("log GUID set, log all zeros".into(), 48, &[1; 16]));
    let both_tables = |label: String, entry_field: usize, value: &[u8]| {
        let mut bytes = base.to_vec();
        for r in [192usize << 10, 256 << 10] {
            let rt = &mut bytes[r..r + 65536];
            rt[16 + entry_field..16 + entry_field + value.len()].copy_from_slice(value);
            vhdx_checksum(rt);
        }
        Case::new(base, label, bytes)
    };
    for (label, field, value) in [
        ("region 0 offset 2^63", 16, (1u64 << 63).to_le_bytes().to_vec()),
        ("region 0 offset 0", 16, 0u64.to_le_bytes().to_vec()),
        ("region 0 length 2^32-1", 24, 0xffff_ffffu32.to_le_bytes().to_vec()),
        ("region 1 length 2^32-1", 56, 0xffff_ffffu32.to_le_bytes().to_vec()),
        ("region 1 at region 0", 48, le64(base, (192 << 10) + 32).to_le_bytes().to_vec()),
    ] {
        cases.push(both_tables(label.into(), field, &value));
    }
    let mut count = base.to_vec();
    for r in [192usize << 10, 256 << 10] {
        count[r + 8..r + 12].copy_from_slice(&0xffff_ffffu32.to_le_bytes());
        vhdx_checksum(&mut count[r..r + 65536]);
    }
    cases.push(Case::new(base, "region count 2^32-1", count));
    let size_at = item(ITEM_VIRTUAL_SIZE);
    for size in [1u64 << 63, u64::MAX, 1 << 62, 0, 513] {
        cases.push(patched(base, format!("virtual size {size}"), size_at, &size.to_le_bytes()));
    }
    let params_at = item(ITEM_FILE_PARAMETERS);
    for bs in [0u32, 1 << 31, 0xffff_ffff, 4096] {
        cases.push(patched(base, format!("block size {bs}"), params_at, &bs.to_le_bytes()));
    }
    cases.push(patched(base, "has-parent flag without a parent", params_at + 4, &2u32.to_le_bytes()));
    let sector_at = item(ITEM_LOGICAL_SECTOR);
    for s in [0u32, 1, 8192, 0xffff_ffff] {
        cases.push(patched(base, format!("logical sector size {s}"), sector_at, &s.to_le_bytes()));
    }
    let m = l.metadata as usize;
    cases.push(patched(base, "metadata entry count 65535", m + 10, &0xffffu16.to_le_bytes()));
    cases.push(patched(base, "metadata item 0 offset 2^32-1", m + 32 + 16, &0xffff_ffffu32.to_le_bytes()));
    cases.push(patched(base, "metadata item 0 length 2^32-1", m + 32 + 20, &0xffff_ffffu32.to_le_bytes()));
    let bat = l.bat as usize;
    cases.push(patched(base, "BAT[0] fully present past the end", bat, &((0xffff_ffffu64 << 20) | 6).to_le_bytes()));
    cases.push(patched(base, "BAT[0] at the header", bat, &6u64.to_le_bytes()));
    cases.push(patched(base, "BAT[0] unknown state", bat, &(5u64 | (4 << 20)).to_le_bytes()));
    cases
}

#[test]
fn hostile_vhdx() {
    let (dir, src) = source();
    let vhdx = make(dir.path(), &src, "dynamic.vhdx", "vhdx", &["-o", "block_size=1M"]);
    assert_none(run_cases(dir.path(), "dynamic.vhdx", "vhdx", &vhdx, vhdx_cases(&vhdx, 10)));
}

// ---------------------------------------------------------------- DMG

/// `base` (a DMG from `common::dmg::build`) with its blkx tables changed by `edit` and the
/// property list and trailer rewritten to match (the tables are base64 inside the XML).
fn dmg_with_tables(base: &[u8], layout: &common::dmg::Layout, edit: impl Fn(&mut Vec<Vec<u8>>)) -> Vec<u8> {
    let xml = &base[layout.xml_offset..layout.xml_offset + layout.xml_length];
    let mut root = plist::Value::from_reader_xml(xml).unwrap();
    let blkx = root.as_dictionary_mut().unwrap().get_mut("resource-fork").unwrap();
    let blkx = blkx.as_dictionary_mut().unwrap().get_mut("blkx").unwrap().as_array_mut().unwrap();
    let mut tables: Vec<Vec<u8>> =
        blkx.iter().map(|e| e.as_dictionary().unwrap().get("Data").unwrap().as_data().unwrap().to_vec()).collect();
    edit(&mut tables);
    for (e, t) in blkx.iter_mut().zip(tables) {
        e.as_dictionary_mut().unwrap().insert("Data".into(), plist::Value::Data(t));
    }
    let mut new_xml = Vec::new();
    root.to_writer_xml(&mut new_xml).unwrap();
    let mut out = base[..layout.xml_offset].to_vec();
    out.extend_from_slice(&new_xml);
    let mut koly = base[layout.koly_offset..].to_vec();
    koly[224..232].copy_from_slice(&(new_xml.len() as u64).to_be_bytes());
    out.extend_from_slice(&koly);
    out
}

/// Sets the big-endian u64 (or u32 when `value` fits 4 bytes' field) at `at` of chunk entry `i`.
fn set_entry(t: &mut [u8], i: usize, at: usize, value: &[u8]) {
    let e = 204 + 40 * i + at;
    t[e..e + value.len()].copy_from_slice(value);
}

fn dmg_cases(base: &[u8], layout: &common::dmg::Layout, seed: u64) -> Vec<Case> {
    let koly = layout.koly_offset;
    let structures = [("data fork", 0), ("property list", layout.xml_offset as u64), ("trailer", koly as u64)];
    let mut cases = generic_cases(base, &structures, seed, 60);
    // The trailer one byte off its place (qemu searches for it; vdmount wants it last).
    let mut moved = base.to_vec();
    moved.push(0);
    cases.push(Case::new(base, "koly 1 byte before the end", moved));
    for (field, at) in [("data fork offset", 24), ("data fork length", 32), ("xml offset", 216), ("xml length", 224)] {
        for v in [0u64, koly as u64, 1 << 40, u64::MAX] {
            cases.push(patched(base, format!("{field} {v}"), koly + at, &v.to_be_bytes()));
        }
    }
    for v in [0u64, 1, 1 << 62, u64::MAX] {
        cases.push(patched(base, format!("sector count {v}"), koly + 492, &v.to_be_bytes()));
    }
    cases.push(patched(base, "koly version 3", koly + 4, &3u32.to_be_bytes()));
    // Bad base64 and broken XML.
    let xml = &base[layout.xml_offset..koly];
    let data_at = layout.xml_offset + xml.windows(6).position(|w| w == b"<data>").unwrap() + 8;
    cases.push(patched(base, "bad base64", data_at, b"!@#$"));
    cases.push(patched(base, "truncated base64", data_at, b"QQ=</data>"));
    cases.push(patched(base, "broken XML", layout.xml_offset + 40, b"<<<<"));
    cases.push(patched(base, "no blkx", data_at - 200, b"xxxx"));
    // The chunk tables: each edit on a copy of the first table with a compressed chunk.
    let compressed = |t: &[u8]| (0..crate::be32(t, 200) as usize).find(|&i| crate::be32(t, 204 + 40 * i) >> 31 == 1);
    type Edit = Box<dyn Fn(&mut Vec<u8>, usize)>;
    let edits: Vec<(&str, Edit)> = vec![
        ("mish magic", Box::new(|t, _| t[0..4].copy_from_slice(b"MISH"))),
        ("chunk count u32::MAX", Box::new(|t, _| t[200..204].copy_from_slice(&u32::MAX.to_be_bytes()))),
        ("table cut short", Box::new(|t, _| t.truncate(t.len() - 41))),
        ("first sector past the disk", Box::new(|t, _| t[8..16].copy_from_slice(&(1u64 << 40).to_be_bytes()))),
        ("first sector u64::MAX", Box::new(|t, _| t[8..16].copy_from_slice(&u64::MAX.to_be_bytes()))),
        ("data offset u64::MAX", Box::new(|t, _| t[24..32].copy_from_slice(&u64::MAX.to_be_bytes()))),
        ("unknown chunk type", Box::new(|t, i| set_entry(t, i, 0, &0x8000_0008u32.to_be_bytes()))),
        ("compressed chunk of 2^40 sectors", Box::new(|t, i| set_entry(t, i, 16, &(1u64 << 40).to_be_bytes()))),
        ("compressed chunk of 2^17+1 sectors", Box::new(|t, i| set_entry(t, i, 16, &((1u64 << 17) + 1).to_be_bytes()))),
        ("compressed length u64::MAX", Box::new(|t, i| set_entry(t, i, 32, &u64::MAX.to_be_bytes()))),
        ("compressed length 1 GiB", Box::new(|t, i| set_entry(t, i, 32, &(1u64 << 30).to_be_bytes()))),
        ("compressed offset past the fork", Box::new(|t, i| set_entry(t, i, 24, &(1u64 << 40).to_be_bytes()))),
        ("compressed chunk cut to 1 byte", Box::new(|t, i| set_entry(t, i, 32, &1u64.to_be_bytes()))),
        ("chunk declared 1 sector (inflates beyond it)", Box::new(|t, i| set_entry(t, i, 16, &1u64.to_be_bytes()))),
        (
            "chunk declared twice its size",
            Box::new(|t, i| {
                let n = u64::from_be_bytes(t[204 + 40 * i + 16..204 + 40 * i + 24].try_into().unwrap());
                set_entry(t, i, 16, &(2 * n).to_be_bytes())
            }),
        ),
        (
            "chunk turned raw past the fork",
            Box::new(|t, i| {
                set_entry(t, i, 0, &1u32.to_be_bytes());
                set_entry(t, i, 24, &(u64::MAX - 10).to_be_bytes())
            }),
        ),
        ("chunk turned raw", Box::new(|t, i| set_entry(t, i, 0, &1u32.to_be_bytes()))),
        ("chunk turned zlib", Box::new(|t, i| set_entry(t, i, 0, &0x8000_0005u32.to_be_bytes()))),
        ("chunk turned bzip2", Box::new(|t, i| set_entry(t, i, 0, &0x8000_0006u32.to_be_bytes()))),
        ("chunk turned lzfse", Box::new(|t, i| set_entry(t, i, 0, &0x8000_0007u32.to_be_bytes()))),
        ("chunk turned adc", Box::new(|t, i| set_entry(t, i, 0, &0x8000_0004u32.to_be_bytes()))),
    ];
    for (label, edit) in edits {
        let bytes = dmg_with_tables(base, layout, |tables| {
            if let Some((t, i)) = tables.iter_mut().find_map(|t| compressed(t).map(|i| (t, i))) {
                edit(t, i);
            }
        });
        cases.push(Case::new(base, label, bytes));
    }
    // Overlaps: the second table's first chunk moved onto the first table's; a table repeated.
    cases.push(Case::new(
        base,
        "tables overlap",
        dmg_with_tables(base, layout, |t| {
            let first = t[0][8..16].to_vec();
            t[1][8..16].copy_from_slice(&first);
        }),
    ));
    cases.push(Case::new(base, "a table twice", dmg_with_tables(base, layout, |t| t[1] = t[0].clone())));
    cases
}

#[test]
fn hostile_dmg() {
    use common::dmg::{build, Kind, Plan};
    let (dir, src) = source();
    let src = std::fs::read(src).unwrap();
    let mut failures = Vec::new();
    let kinds = [Kind::Zlib, Kind::Raw, Kind::Bzip2, Kind::Adc, Kind::Lzfse];
    let plan = Plan { chunk_sectors: 256, kinds: &kinds, splits: &[1024], comments: true, relative: false };
    let (base, layout) = build(&src, &plan);
    let cases = dmg_cases(&base, &layout, 13);
    // Some cases must be refused, and for the right reason.
    let path = dir.path().join("udif.dmg");
    for (label, needle) in [
        ("koly 1 byte before the end", "has no UDIF trailer"),
        ("xml offset 1099511627776", "past the trailer"),
        ("data fork length 18446744073709551615", "past the trailer"),
        ("bad base64", "property list does not parse"),
        ("chunk count u32::MAX", "claims 4294967295 chunks"),
        ("first sector past the disk", "past the disk"),
        ("unknown chunk type", "unknown type 0x80000008"),
        ("compressed chunk of 2^40 sectors", "decompressed size of a DMG chunk"),
        ("compressed chunk of 2^17+1 sectors", "decompressed size of a DMG chunk"),
        ("compressed length 1 GiB", "compressed size of a DMG chunk"),
        ("compressed offset past the fork", "past the data fork"),
        ("chunk declared 1 sector (inflates beyond it)", "decompresses to more"),
        ("chunk declared twice its size", "overlap"),
        ("chunk turned raw past the fork", "past the data fork"),
        ("tables overlap", "overlap"),
        ("a table twice", "overlap"),
    ] {
        let case = cases.iter().find(|c| c.label == label).unwrap_or_else(|| panic!("no case {label}"));
        std::fs::write(&path, case.bytes(&base)).unwrap();
        failures.extend(refused_with(label, &path, &["--format", "dmg"], &["udif.dmg"], needle));
    }
    failures.extend(run_cases(dir.path(), "udif.dmg", "dmg", &base, cases));
    assert_none(failures);
}

// ---------------------------------------------------------------- VDI

fn vdi_cases(base: &[u8], seed: u64) -> Vec<Case> {
    let map_at = le32(base, 0x154) as usize;
    let data_at = le32(base, 0x158) as u64;
    let blocks = le32(base, 0x180);
    let block_size = le32(base, 0x178) as u64;
    let first = (0..blocks as usize).map(|i| le32(base, map_at + 4 * i)).find(|e| *e < 0xffff_fffe).unwrap_or(0);
    let structures = [
        ("header", 0),
        ("signature", 0x40),
        ("block map", map_at as u64),
        ("first block", data_at + first as u64 * block_size),
    ];
    let mut cases = generic_cases(base, &structures, seed, 60);
    let mut own = base.to_vec();
    own[0x4c..0x50].copy_from_slice(&4u32.to_le_bytes());
    own.copy_within(0x188..0x198, 0x1a8);
    cases.push(Case::new(base, "differencing, parent UUID its own", own));
    let mut same = base.to_vec();
    same[map_at..map_at + 4 * blocks as usize].fill(0);
    cases.push(Case::new(base, "every block map entry 0", same));
    let mut p = |label: &str, at: usize, value: &[u8]| cases.push(patched(base, label, at, value));
    p("wrong signature", 0x40, &0xbeda_1070u32.to_le_bytes());
    for v in [0x0002_0000u32, 0, 0x0001_ffff] {
        p(&format!("version {v:#x}"), 0x44, &v.to_le_bytes());
    }
    for v in [0u32, 0x17f, 0xffff_ffff] {
        p(&format!("header size {v}"), 0x48, &v.to_le_bytes());
    }
    // 4: differencing, with no parent UUID (and, above, with its own).
    for t in [0u32, 3, 4, 5, 0xffff_ffff] {
        p(&format!("image type {t}"), 0x4c, &t.to_le_bytes());
    }
    for v in [0u32, 0x1c7, 1 << 31, 0xffff_ffff, base.len() as u32] {
        p(&format!("block map offset {v}"), 0x154, &v.to_le_bytes());
    }
    for v in [0u32, 0x200, 0xffff_ffff, base.len() as u32 + (1 << 20)] {
        p(&format!("data offset {v}"), 0x158, &v.to_le_bytes());
    }
    for v in [1u64 << 63, u64::MAX, 1 << 62, 0, blocks as u64 * block_size + 1, 511] {
        p(&format!("disk size {v}"), 0x170, &v.to_le_bytes());
    }
    for v in [0u32, 511, 3000, 1 << 31, 0xffff_ffff, 4096, 512] {
        p(&format!("block size {v}"), 0x178, &v.to_le_bytes());
    }
    for v in [3u32, 512, 1 << 31] {
        p(&format!("block extra {v}"), 0x17c, &v.to_le_bytes());
    }
    for v in [0u32, 1, 0xffff_ffff, 1 << 30] {
        p(&format!("blocks {v}"), 0x180, &v.to_le_bytes());
    }
    p("blocks allocated 2^32 - 1", 0x184, &0xffff_ffffu32.to_le_bytes());
    for v in [blocks, blocks - 1, 0xffff_fffd, 0x7fff_ffff, 0x0100_0000] {
        p(&format!("block map[0] = {v:#x}"), map_at, &v.to_le_bytes());
    }
    cases
}

#[test]
fn hostile_vdi() {
    let (dir, src) = source();
    let mut failures = Vec::new();
    let dynamic = make(dir.path(), &src, "dynamic.vdi", "vdi", &[]);
    failures.extend(run_cases(dir.path(), "dynamic.vdi", "vdi", &dynamic, vdi_cases(&dynamic, 11)));
    let fixed = make(dir.path(), &src, "static.vdi", "vdi", &["-o", "static=on"]);
    failures.extend(run_cases(dir.path(), "static.vdi", "vdi", &fixed, vdi_cases(&fixed, 12)));
    assert_none(failures);
}

// ---------------------------------------------------------------- Parallels

fn parallels_cases(base: &[u8], seed: u64) -> Vec<Case> {
    let bat_entries = le32(base, 32) as u64;
    let data_at = le32(base, 48) as u64 * 512;
    let structures = [("header", 0), ("BAT", 64), ("data area", data_at)];
    let mut cases = generic_cases(base, &structures, seed, 60);
    let mut p = |label: &str, at: usize, value: &[u8]| cases.push(patched(base, label, at, value));
    p("wrong magic", 0, b"WithoutFreeSpacE");
    p("v1 magic", 0, b"WithoutFreeSpace");
    for v in [0u32, 1, 3, u32::MAX] {
        p(&format!("version {v}"), 16, &v.to_le_bytes());
    }
    for v in [0u32, 1, 63, 1 << 19, 1 << 22, u32::MAX] {
        p(&format!("cluster size {v} sectors"), 28, &v.to_le_bytes());
    }
    for v in [0u32, 1, bat_entries as u32 + 1, 1 << 20, 1 << 26, u32::MAX] {
        p(&format!("BAT entries {v}"), 32, &v.to_le_bytes());
    }
    // Valid huge sizes stream zeros until the timeout: the descriptor cases have one.
    for v in [0u64, 1, (1 << 53) + 1, u64::MAX] {
        p(&format!("disk size {v} sectors"), 36, &v.to_le_bytes());
    }
    p("in use", 44, &0x746F_6E59u32.to_le_bytes());
    p("in use: unknown value", 44, &0xdead_beefu32.to_le_bytes());
    for v in [0u32, 1, u32::MAX] {
        p(&format!("data_off {v}"), 48, &v.to_le_bytes());
    }
    for v in [1u64, 1 << 40, u64::MAX, data_at / 512] {
        p(&format!("ext_off {v}"), 56, &v.to_le_bytes());
    }
    // BAT entries past the end of the file, into the header, at the last cluster, huge.
    for v in [1u32, 1 << 20, u32::MAX, (base.len() as u64 / 4096) as u32] {
        p(&format!("BAT[0] = {v}"), 64, &v.to_le_bytes());
    }
    cases
}

/// Edits of a bundle descriptor: each replaces the first `from` with `to` (or appends).
fn descriptor_text_cases(base: &[u8], seed: u64) -> Vec<Case> {
    let text = String::from_utf8(base.to_vec()).unwrap();
    let mut cases = generic_cases(base, &[("storage", text.find("<StorageData>").unwrap() as u64)], seed, 40);
    let mut edit = |label: &str, from: &str, to: &str| {
        assert!(text.contains(from), "{label}: {from:?} not in the descriptor");
        cases.push(Case::new(base, label, text.replacen(from, to, 1).into_bytes()));
    };
    let (root, top) = ("{0b2d3c4e-1111-4a5b-8c9d-000000000001}", "{5fbaabe3-6958-40ff-92a7-860e329aab41}");
    edit("parents loop", "<ParentGUID>{00000000-0000-0000-0000-000000000000}", &format!("<ParentGUID>{top}"));
    edit("own parent", &format!("<ParentGUID>{root}"), &format!("<ParentGUID>{top}"));
    edit("missing file", "root.hds", "gone.hds");
    edit("absolute file outside", "root.hds", "/etc/passwd");
    edit("relative file outside", "root.hds", "../../../../etc/passwd");
    edit("a folder", "root.hds", ".");
    edit("the descriptor itself", "top.hds", "DiskDescriptor.xml");
    edit("a FIFO", "root.hds", "/dev/stdin");
    edit("empty file name", "root.hds", "");
    edit("huge disk", "<Disk_size>4096", "<Disk_size>18446744073709551615");
    edit("disk of 2^53 sectors", "<Disk_size>4096", "<Disk_size>9007199254740992");
    edit("storage end past the disk", "<End>4096", "<End>4097");
    edit("empty storage", "<Start>0", "<Start>4096");
    edit("negative start", "<Start>0", "<Start>-1");
    edit("unknown type", "<Type>Compressed", "<Type>Packed");
    edit("plain top", "<Type>Compressed", "<Type>Plain");
    edit("top GUID nowhere", "<Snapshots>", "<Snapshots><TopGUID>{1}</TopGUID>");
    edit("no snapshots", "<Shot>", "<Nothing>");
    edit("DTD", "<?xml version='1.0' encoding='UTF-8'?>", "<!DOCTYPE a [<!ENTITY x \"xxxxxxxxxx\">]>");
    edit("wrong root", "<Parallels_disk_image", "<Other_disk_image");
    edit("padding", "<Padding>0", "<Padding>1");
    // More than the descriptor limit; 70 snapshots deep; many storages over the same file.
    edit(
        "2 MiB descriptor",
        "</Parallels_disk_image>",
        &format!("<!-- {} --></Parallels_disk_image>", "x".repeat(2 << 20)),
    );
    let deep: String =
        (0..70).map(|i| format!("<Shot><GUID>{{{i}}}</GUID><ParentGUID>{{{}}}</ParentGUID></Shot>", i + 1)).collect();
    edit("70 snapshots deep", "<Snapshots>", &format!("<Snapshots><TopGUID>{{0}}</TopGUID>{deep}"));
    let storage = &text[text.find("<Storage>").unwrap()..text.find("</StorageData>").unwrap()];
    edit("overlapping storages", "</StorageData>", &format!("{storage}</StorageData>"));
    edit("5000 storages", "</StorageData>", &format!("{}</StorageData>", storage.repeat(5000)));
    cases
}

// ---------------------------------------------------------------- EWF

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// The sections of an EWF segment: (type, offset of the descriptor, size).
fn ewf_sections(b: &[u8]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut at = 13;
    while at + 76 <= b.len() {
        let kind = String::from_utf8_lossy(&b[at..at + 16]).trim_end_matches('\0').to_string();
        let (next, size) = (le64(b, at + 16) as usize, le64(b, at + 24) as usize);
        out.push((kind, at, size));
        if next <= at {
            break;
        }
        at = next;
    }
    out
}

/// `base` with `value` at `at`, and the Adler-32 of `[from, sum_at)` rewritten at `sum_at`, so
/// the value gets past the checksum to the checks behind it.
fn ewf_patched(base: &[u8], label: String, at: usize, value: &[u8], from: usize, sum_at: usize) -> Case {
    let mut b = base.to_vec();
    b[at..at + value.len()].copy_from_slice(value);
    let sum = adler32(&b[from..sum_at]);
    b[sum_at..sum_at + 4].copy_from_slice(&sum.to_le_bytes());
    Case::new(base, label, b)
}

fn ewf_cases(base: &[u8], seed: u64) -> Vec<Case> {
    let sections = ewf_sections(base);
    let find = |k: &str| sections.iter().find(|s| s.0 == k).map(|s| s.1).unwrap();
    let structures: Vec<(&str, u64)> = sections.iter().map(|s| (s.0.as_str(), s.1 as u64)).collect();
    let mut cases = generic_cases(base, &structures, seed, 60);
    cases.push(patched(base, "wrong magic", 0, b"EVF\x09\x0d\x0a\xff\x01"));
    cases.push(patched(base, "segment number 2", 9, &2u16.to_le_bytes()));
    // Section descriptors going backwards, to themselves, past the end.
    for (kind, at, _) in &sections {
        for next in [0u64, *at as u64, 1 << 40, u64::MAX] {
            cases.push(ewf_patched(base, format!("{kind} next {next}"), at + 16, &next.to_le_bytes(), *at, at + 72));
        }
        for size in [0u64, 1 << 40, u64::MAX] {
            cases.push(ewf_patched(base, format!("{kind} size {size}"), at + 24, &size.to_le_bytes(), *at, at + 72));
        }
    }
    // The volume: absurd chunk counts and sizes (the checksum ends the 94- or 1052-byte data).
    let vol = find("volume") + 76;
    let sum_at =
        if ewf_sections(base).iter().any(|s| s.0 == "volume" && s.2 - 76 >= 1052) { vol + 1048 } else { vol + 90 };
    for (field, off) in [("chunk count", 4), ("sectors per chunk", 8), ("bytes per sector", 12)] {
        for v in [0u32, 1, 3, 1 << 20, u32::MAX] {
            cases.push(ewf_patched(base, format!("{field} {v}"), vol + off, &v.to_le_bytes(), vol, sum_at));
        }
    }
    for v in [0u64, 1 << 40, u64::MAX] {
        let bytes = if sum_at == vol + 90 { v.to_le_bytes()[..4].to_vec() } else { v.to_le_bytes().to_vec() };
        cases.push(ewf_patched(base, format!("sector count {v}"), vol + 16, &bytes, vol, sum_at));
    }
    // The table: entry counts, base offsets, entries past the end or out of order.
    let table = find("table") + 76;
    for n in [0u32, 2, u32::MAX, (1 << 20) + 1] {
        cases.push(ewf_patched(base, format!("table count {n}"), table, &n.to_le_bytes(), table, table + 20));
    }
    for b in [1u64 << 40, u64::MAX, 1 << 31] {
        cases.push(ewf_patched(base, format!("table base {b}"), table + 8, &b.to_le_bytes(), table, table + 20));
    }
    let entries = table + 24;
    for (label, v) in [("past the end", 0x7fff_ffffu32), ("zero", 0), ("compressed past the end", u32::MAX)] {
        cases.push(patched(base, format!("first entry {label}"), entries, &v.to_le_bytes()));
        cases.push(patched(base, format!("second entry {label}"), entries + 4, &v.to_le_bytes()));
    }
    // The compressed flag flipped on the first two chunks (stored ones then inflate as garbage,
    // compressed ones are read as stored).
    for i in 0..2 {
        let v = le32(base, entries + 4 * i) ^ (1 << 31);
        cases.push(patched(base, format!("entry {i} compression flipped"), entries + 4 * i, &v.to_le_bytes()));
    }
    // A compressed chunk that inflates to more than a chunk: a zlib stream of 64 KiB of zeros
    // (chunks here are 8 or 16 KiB), written over the first compressed chunk it fits in.
    let bomb = {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&[0u8; 65536]).unwrap();
        z.finish().unwrap()
    };
    let count = le32(base, table) as usize;
    let tbase = le64(base, table + 8) as usize;
    let offsets: Vec<(usize, bool)> = (0..count)
        .map(|i| le32(base, entries + 4 * i))
        .map(|e| (tbase + (e & 0x7fff_ffff) as usize, e >> 31 == 1))
        .collect();
    let fits = offsets.windows(2).find(|w| w[0].1 && w[1].0 - w[0].0 >= bomb.len());
    if let Some(w) = fits {
        cases.push(patched(base, "compressed chunk inflating to 64 KiB", w[0].0, &bomb));
    }
    // (Only sets with compressible data have one: "plain" does, encase1 with empty-block does not.)
    eprintln!("compressed chunk for the inflation case: {}", fits.is_some());
    cases
}

#[test]
fn hostile_parallels() {
    let (dir, src) = source();
    let d = dir.path();
    let mut failures = Vec::new();
    for (name, cluster) in [("c4k.prl", "4k"), ("c1m.prl", "1M")] {
        let base = make(d, &src, name, "parallels", &["-o", &format!("cluster_size={cluster}")]);
        failures.extend(run_cases(d, name, "parallels", &base, parallels_cases(&base, 21)));
    }
    // A bundle: a root image and a top snapshot over it.
    let hdd = d.join("disk.hdd");
    std::fs::create_dir(&hdd).unwrap();
    make(&hdd, &src, "root.hds", "parallels", &["-o", "cluster_size=64k"]);
    qemu_img(&["create", "-q", "-f", "parallels", hdd.join("top.hds").to_str().unwrap(), "2M"]);
    let image = |guid: &str, file: &str| {
        format!("<Image><GUID>{guid}</GUID><Type>Compressed</Type><File>{file}</File></Image>")
    };
    let shot = |guid: &str, parent: &str| format!("<Shot><GUID>{guid}</GUID><ParentGUID>{parent}</ParentGUID></Shot>");
    let (root, top) = ("{0b2d3c4e-1111-4a5b-8c9d-000000000001}", "{5fbaabe3-6958-40ff-92a7-860e329aab41}");
    let xml = format!(
        "<?xml version='1.0' encoding='UTF-8'?>\n<Parallels_disk_image Version=\"1.0\"><Disk_Parameters><Disk_size>4096</Disk_size>\
         <Padding>0</Padding></Disk_Parameters><StorageData><Storage><Start>0</Start><End>4096</End><Blocksize>128</Blocksize>\
         {}{}</Storage></StorageData><Snapshots>{}{}</Snapshots></Parallels_disk_image>\n",
        image(root, "root.hds"),
        image(top, "top.hds"),
        shot(root, "{00000000-0000-0000-0000-000000000000}"),
        shot(top, root)
    );
    let base = xml.into_bytes();
    let cases = descriptor_text_cases(&base, 22);
    failures.extend(run_cases(&hdd, "DiskDescriptor.xml", "parallels", &base, cases));
    assert_none(failures);
}

#[test]
fn hostile_ewf() {
    let (dir, src) = source();
    let d = dir.path();
    let mut failures = Vec::new();
    for (name, opts) in [
        ("plain", &["-f", "encase6", "-c", "deflate:best", "-b", "16"][..]),
        ("stored", &["-f", "encase5", "-c", "none", "-b", "16"][..]),
        ("smart", &["-f", "smart", "-c", "deflate:fast", "-b", "32"][..]),
        ("old", &["-f", "encase1", "-c", "empty-block", "-b", "16"][..]),
    ] {
        let target = d.join(name);
        run_ok(std::process::Command::new("ewfacquire").args(["-u", "-q"]).args(opts).arg("-t").arg(&target).arg(&src));
        let file = ["E01", "s01"].iter().map(|e| format!("{name}.{e}")).find(|f| d.join(f).exists()).unwrap();
        let base = std::fs::read(d.join(&file)).unwrap();
        failures.extend(run_cases(d, &file, "ewf", &base, ewf_cases(&base, 21)));
    }
    assert_none(failures);
}

// ---------------------------------------------------------------- backing chains

/// A qcow2 image `name` in `dir` naming `backing` (not checked) as its backing file.
fn qcow2_child(dir: &Path, name: &str, backing: &str, backing_fmt: &str) -> PathBuf {
    let path = dir.join(name);
    qemu_img(&["create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", backing_fmt, path.to_str().unwrap(), "1M"]);
    path
}

/// The image must be refused cleanly, naming `names`, with a message containing `needle`.
fn refused(label: &str, image: &Path, names: &[&str], needle: &str) -> Option<String> {
    refused_with(label, image, &[], names, needle)
}

/// As `refused`, with options before the image.
fn refused_with(label: &str, image: &Path, args: &[&str], names: &[&str], needle: &str) -> Option<String> {
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

#[test]
fn hostile_backing_chains() {
    let dir = scratch();
    let d = dir.path();
    let mut failures = Vec::new();
    let a = qcow2_child(d, "self.qcow2", "self.qcow2", "qcow2");
    failures.extend(refused("A -> A", &a, &["self.qcow2"], "loop"));

    let a = qcow2_child(d, "a.qcow2", "b.qcow2", "qcow2");
    qcow2_child(d, "b.qcow2", "a.qcow2", "qcow2");
    failures.extend(refused("A -> B -> A", &a, &["a.qcow2", "b.qcow2"], "loop"));

    // A chain one longer than the limit: deep0 <- deep1 <- ... <- deepN.
    let depth = vdmount::limits::MAX_CHAIN_DEPTH + 1;
    qemu_img(&["create", "-q", "-f", "qcow2", d.join("deep0.qcow2").to_str().unwrap(), "1M"]);
    for i in 1..depth {
        qcow2_child(d, &format!("deep{i}.qcow2"), &format!("deep{}.qcow2", i - 1), "qcow2");
    }
    let top = format!("deep{}.qcow2", depth - 1);
    failures.extend(refused("chain deeper than MAX_CHAIN_DEPTH", &d.join(&top), &[&top], "chain"));
    // Exactly at the limit it opens.
    let at_limit = format!("deep{}.qcow2", depth - 2);
    if let Err(e) = vdmount_cat_sha256(&d.join(&at_limit), &[]) {
        failures.push(format!("a chain of exactly MAX_CHAIN_DEPTH images was refused: {e}"));
    }

    std::fs::create_dir(d.join("folder")).unwrap();
    let a = qcow2_child(d, "on-folder.qcow2", "folder", "raw");
    failures.extend(refused("backing file is a folder", &a, &["on-folder.qcow2", "folder"], "a folder"));

    let fifo = d.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let a = qcow2_child(d, "on-fifo.qcow2", "fifo", "raw");
    failures.extend(refused("backing file is a FIFO", &a, &["on-fifo.qcow2", "fifo"], "FIFO"));

    // Outside the image's folder: refused for that; with --allow-any-path, for being a device.
    let any = ["--allow-any-path"];
    let a = qcow2_child(d, "on-null.qcow2", "/dev/null", "raw");
    failures.extend(refused("backing file is /dev/null", &a, &["on-null.qcow2", "/dev/null"], "outside"));
    failures.extend(refused_with("/dev/null, any path", &a, &any, &["/dev/null"], "character device"));
    let a = qcow2_child(d, "on-zero.qcow2", "/dev/zero", "raw");
    failures.extend(refused("backing file is /dev/zero", &a, &["on-zero.qcow2", "/dev/zero"], "outside"));
    failures.extend(refused_with("/dev/zero, any path", &a, &any, &["/dev/zero"], "character device"));

    // /proc/self/mem is a "regular" file of size 0: refused by default (outside); with
    // --allow-any-path reading it as an empty raw disk is fine, but it must not hang or blow up.
    let a = qcow2_child(d, "on-proc.qcow2", "/proc/self/mem", "raw");
    failures.extend(refused("backing file is /proc/self/mem", &a, &["on-proc.qcow2"], "outside"));
    if let Err(e) = cat_is_clean(&a, &any, &["on-proc.qcow2"]) {
        failures.push(format!("backing file /proc/self/mem: {e}"));
    }
    assert_none(failures);
}

// ---------------------------------------------------------------- one bad request, not the server

/// A backend whose reads fail in one range, like an image with one corrupt table.
struct FailsInRange {
    bad: std::ops::Range<u64>,
}

impl vdmount::overlay::Backend for FailsInRange {
    fn size(&self) -> u64 {
        1 << 20
    }
    fn block_size(&self) -> u32 {
        512
    }
    fn writable(&self) -> bool {
        false
    }
    fn read(&self, buf: &mut [u8], offset: u64) -> vdmount::error::Result<()> {
        if offset < self.bad.end && offset + buf.len() as u64 > self.bad.start {
            return Err(vdmount::error::Error::corrupt(
                Path::new("bad.qcow2"),
                format!("L2 table at {offset} is corrupt"),
            ));
        }
        buf.fill(0xab);
        Ok(())
    }
}

#[test]
fn a_failed_read_fails_one_request_and_the_next_one_works() {
    use vdmount::abuse::server::answer;
    use vdmount::abuse::uapi::{AbuseRequest, ABUSE_OP_READ};
    use vdmount::request::Stats;
    let backend = FailsInRange { bad: 8192..12288 };
    let stats = Stats::default();
    let mut slot = vec![0u8; 65536];
    let read = |offset: u64, length: u32| AbuseRequest { offset, length, op: ABUSE_OP_READ, ..Default::default() };

    let (result, data) = answer(&backend, &read(8192, 4096), &mut slot, &[], &stats);
    assert_eq!(result, -libc::EIO, "a corrupt structure fails the request with EIO");
    assert_eq!(data, 0);
    let (result, data) = answer(&backend, &read(16384, 4096), &mut slot, &[], &stats);
    assert_eq!(result, 0, "the next good read works");
    assert_eq!(data, slot.as_ptr() as u64);
    assert!(slot[..4096].iter().all(|b| *b == 0xab));
    // Past the end of the device, and a length that overflows the offset: errors, not panics.
    assert!(answer(&backend, &read(1 << 20, 512), &mut slot, &[], &stats).0 < 0);
    assert!(answer(&backend, &read(u64::MAX - 100, 4096), &mut slot, &[], &stats).0 < 0);
    assert_eq!(stats.errors.load(Ordering::Relaxed), 3);
    // Many failures later the server still answers.
    for _ in 0..1000 {
        answer(&backend, &read(8192, 512), &mut slot, &[], &stats);
    }
    assert_eq!(answer(&backend, &read(0, 512), &mut slot, &[], &stats).0, 0);
}

/// Requests past the end of the device, or whose end overflows, over a `--cow` overlay: before
/// answer() checked ranges, a read at 2^64-100 overflowed `offset + len` in the overlay (a panic
/// in debug builds, a silent empty read in release) and a write-zeroes past the end grew the
/// overlay file without bound.
#[test]
fn requests_past_the_end_fail_over_a_cow_overlay() {
    use vdmount::abuse::server::answer;
    use vdmount::abuse::uapi::*;
    use vdmount::request::Stats;
    let dir = scratch();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, vec![7u8; 1 << 20]).unwrap();
    let opts = vdmount::formats::OpenOptions::new(vdmount::cache::Cache::new(1 << 20));
    let base = vdmount::formats::open(&raw, &opts).unwrap();
    let cow = vdmount::overlay::ephemeral::CowOverlay::new(base, Some(dir.path().to_path_buf())).unwrap();
    let stats = Stats::default();
    let mut slot = vec![0u8; 65536];
    let area = vec![1u8; 65536];
    let req = |op: u16, offset: u64, length: u32| AbuseRequest {
        offset,
        length,
        op,
        data: area.as_ptr() as u64,
        ..Default::default()
    };
    for (op, offset, length) in [
        (ABUSE_OP_READ, u64::MAX - 100, 4096),
        (ABUSE_OP_READ, 1 << 20, 512),
        (ABUSE_OP_READ, (1 << 20) - 512, 1024),
        (ABUSE_OP_WRITE, u64::MAX - 100, 4096),
        (ABUSE_OP_WRITE, 1 << 40, 4096),
        (ABUSE_OP_WRITE_ZEROES, 1 << 40, u32::MAX),
        (ABUSE_OP_DISCARD, u64::MAX - 10, 4096),
    ] {
        let (result, _) = answer(&cow, &req(op, offset, length), &mut slot, &area, &stats);
        assert!(result < 0, "op {op} at {offset} ({length} bytes) past the end of a 1 MiB device gave {result}");
    }
    // In range, the overlay still works.
    assert_eq!(answer(&cow, &req(ABUSE_OP_WRITE, 4096, 4096), &mut slot, &area, &stats).0, 0);
    assert_eq!(answer(&cow, &req(ABUSE_OP_READ, 4096, 4096), &mut slot, &area, &stats).0, 0);
    assert!(slot[..4096].iter().all(|b| *b == 1));
    assert_eq!(answer(&cow, &req(ABUSE_OP_READ, 0, 4096), &mut slot, &area, &stats).0, 0);
    assert!(slot[..4096].iter().all(|b| *b == 7));
}

// ---------------------------------------------------------------- memory

/// Writes `value` at `at` in the file at `path`.
fn poke(path: &Path, at: u64, value: &[u8]) {
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new().write(true).open(path).unwrap().write_all_at(value, at).unwrap();
}

/// Gives the qcow2 at `path` an L1 table of `entries` entries at the end of the file, as a hole
/// (a sparse file costs no disk), and a virtual size that table covers (64 KiB clusters).
fn give_l1(path: &Path, entries: u64) {
    let end = std::fs::metadata(path).unwrap().len().div_ceil(65536) * 65536;
    poke(path, 24, &(entries * (512 << 20)).to_be_bytes());
    poke(path, 36, &(entries as u32).to_be_bytes());
    poke(path, 40, &end.to_be_bytes());
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(end + entries * 8).unwrap();
}

/// Tables that would take too much memory end in a clean refusal, under the 1 GiB address-space
/// limit: an L1 table of 256 MiB; the same file under several names (hard links); a chain of
/// distinct images whose L1 tables are each allowed but together exceed the chain's budget; a
/// 1 GiB VHDX log; compressed VMDK grains of 32, 64 and 256 MiB.
#[test]
fn hostile_memory() {
    let (dir, src) = source();
    let d = dir.path();
    let mut failures = Vec::new();

    let big = d.join("big-l1.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", big.to_str().unwrap(), "1M"]);
    give_l1(&big, 32 << 20);
    failures.extend(refused("256 MiB L1 table", &big, &["big-l1.qcow2"], "size of the L1 table"));

    // Hard links in nested folders, each naming "sub/img" as its backing file.
    let top = d.join("links");
    std::fs::create_dir(&top).unwrap();
    let first = top.join("img");
    qemu_img(&["create", "-q", "-f", "qcow2", "-u", "-b", "sub/img", "-F", "qcow2", first.to_str().unwrap(), "1M"]);
    give_l1(&first, 3 << 20);
    let mut folder = top.clone();
    for _ in 0..8 {
        folder = folder.join("sub");
        std::fs::create_dir(&folder).unwrap();
        std::fs::hard_link(&first, folder.join("img")).unwrap();
    }
    failures.extend(refused("chain of hard links", &first, &["img"], "loops back"));

    // 24 distinct layers with 24 MiB L1 tables each (each under qemu's 32 MiB limit).
    for i in 0..24 {
        let layer = d.join(format!("layer{i}.qcow2"));
        let below = format!("layer{}.qcow2", i + 1);
        qemu_img(&["create", "-q", "-f", "qcow2", "-u", "-b", &below, "-F", "qcow2", layer.to_str().unwrap(), "1M"]);
        give_l1(&layer, 3 << 20);
    }
    failures.extend(refused(
        "chain over the memory budget",
        &d.join("layer0.qcow2"),
        &["layer"],
        "whole backing chain",
    ));

    // A VHDX whose header asks for a 1 GiB log to be replayed.
    make(d, &src, "log.vhdx", "vhdx", &[]);
    let vhdx = d.join("log.vhdx");
    let end = std::fs::metadata(&vhdx).unwrap().len().div_ceil(1 << 20) << 20;
    std::fs::OpenOptions::new().write(true).open(&vhdx).unwrap().set_len(end + (1 << 30)).unwrap();
    let mut bytes = std::fs::read(&vhdx).unwrap();
    for h in [64usize << 10, 128 << 10] {
        bytes[h + 48..h + 64].copy_from_slice(&[0x5a; 16]); // log GUID: the log must be replayed
        bytes[h + 68..h + 72].copy_from_slice(&(1u32 << 30).to_le_bytes());
        bytes[h + 72..h + 80].copy_from_slice(&end.to_le_bytes());
        vhdx_checksum(&mut bytes[h..h + 4096]);
    }
    std::fs::write(&vhdx, &bytes).unwrap();
    failures.extend(refused("1 GiB VHDX log", &vhdx, &["log.vhdx"], "length of the VHDX log"));

    // streamOptimized grains of 32, 64 and 256 MiB: refused, not inflated for every read.
    make(d, &src, "stream.vmdk", "vmdk", &["-o", "subformat=streamOptimized"]);
    let stream = d.join("stream.vmdk");
    for mib in [32u64, 64, 256] {
        poke(&stream, 20, &(mib << 11).to_le_bytes());
        failures.extend(refused(
            &format!("{mib} MiB compressed grains"),
            &stream,
            &["stream.vmdk"],
            "compressed grains",
        ));
    }
    // Uncompressed grains that large are only file offsets: read (or refused) cleanly.
    make(d, &src, "sparse.vmdk", "vmdk", &[]);
    let sparse = d.join("sparse.vmdk");
    for mib in [32u64, 64, 256] {
        poke(&sparse, 20, &(mib << 11).to_le_bytes());
        if let Err(e) = cat_is_clean(&sparse, &[], &["sparse.vmdk"]) {
            failures.push(format!("{mib} MiB sparse grains: {e}"));
        }
    }
    assert_none(failures);
}
