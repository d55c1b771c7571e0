//! What the fuzz targets share: a scratch folder in /dev/shm holding only the fuzz input (so any
//! backing file the input names is missing, a folder, a device or itself, and must fail cleanly),
//! and "open an image and read a bounded amount of it".

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use vdmount::cache::Cache;
use vdmount::formats::{DiskImage, Extent, Extents, Format, OpenOptions};

/// Bytes read from the virtual disk per input, at most: keeps every exec fast whatever size the
/// image claims.
pub const READ_BUDGET: usize = 4 << 20;
/// Cache for one exec: small, so eviction paths run too.
const CACHE_BYTES: u64 = 1 << 20;

/// This process's scratch folder, created once and removed at exit.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let dir = base.join(format!("vdmount-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cannot create the fuzz scratch folder");
        extern "C" fn remove_scratch() {
            if let Some(dir) = DIR.get() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        unsafe { libc::atexit(remove_scratch) };
        dir
    })
}

/// Writes `data` as the scratch folder's only file and returns its path.
pub fn write_input(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch_dir().join(name);
    std::fs::write(&path, data).expect("cannot write the fuzz input");
    path
}

/// A small deterministic number stream from the input, for choosing read offsets.
fn mix(data: &[u8]) -> u64 {
    // FNV-1a over at most the first and last 64 bytes: cheap on large inputs.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let head = &data[..data.len().min(64)];
    let tail = &data[data.len().saturating_sub(64)..];
    for b in head.iter().chain(tail) {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Opens `data` as an image (forcing `format` if given) through `vdmount::formats::open` and
/// reads: the first and last MiB, then a few pieces at offsets derived from the input, some of
/// them past the end. Errors are fine; panics, hangs and huge allocations are the bugs.
pub fn open_and_read(data: &[u8], format: Option<Format>) {
    let path = write_input("image", data);
    open_and_read_file(&path, data, format);
    let _ = std::fs::remove_file(&path);
}

/// `open_and_read` on a file already written (tests/fuzz_regressions.rs replays inputs with it).
pub fn open_and_read_file(path: &Path, data: &[u8], format: Option<Format>) {
    let mut opts = OpenOptions::new(Cache::new(CACHE_BYTES));
    opts.format = format;
    let Ok(disk) = vdmount::formats::open(path, &opts) else { return };
    let size = disk.virtual_size();
    let _ = disk.info();
    let _ = disk.logical_sector_size();
    // What `verify` checks against: each stored part lies inside the disk.
    for part in disk.stored_digests().crc32 {
        assert!(
            part.ranges.iter().all(|r| r.start <= r.end && r.end <= size),
            "a stored CRC-32 covers bytes past the disk"
        );
    }

    let mut budget = READ_BUDGET;
    let mut buf = vec![0u8; 1 << 20];
    let mut extents = Extents::new(256);
    let mut read = |offset: u64, len: usize| {
        let len = len.min(budget).min(buf.len());
        budget -= len;
        if len > 0 && disk.read_at(&mut buf[..len], offset).is_ok() {
            check_extents(&*disk, &buf[..len], offset, &mut extents);
        }
    };
    read(0, 1 << 20);
    read(size.saturating_sub(1 << 20), 1 << 20);
    let mut x = mix(data);
    for _ in 0..4 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let offset = match x % 4 {
            // Anywhere in the disk, sector-aligned as the kernel sends.
            0 | 1 => ((x >> 8) % size.max(1)) & !511,
            // Unaligned, anywhere in the disk.
            2 => (x >> 8) % size.max(1),
            // Anywhere at all, past the end included.
            _ => x >> 2,
        };
        read(offset, 1 + (x as usize >> 40) % (256 << 10));
    }
}

/// Where the reader describes `[offset, offset + data.len())` as extents (what abuse.ko would
/// read itself), they must cover exactly that range, lie inside their files, and hold exactly
/// the bytes `read_at` gave (`data`). A difference is a bug: the kernel would serve other data.
pub fn check_extents(disk: &dyn DiskImage, data: &[u8], offset: u64, extents: &mut Extents) {
    extents.clear();
    if !matches!(disk.map(offset, data.len() as u64, extents), Ok(true)) {
        return;
    }
    assert_eq!(extents.total(), data.len() as u64, "extents at {offset} do not cover the range");
    let mut pos = 0usize;
    for e in extents.as_slice() {
        let want = &data[pos..pos + e.len() as usize];
        match *e {
            Extent::Zero { .. } => {
                assert!(want.iter().all(|&b| b == 0), "a zero extent at {} holds data", offset + pos as u64)
            }
            Extent::Data { fd, offset: at, len } => {
                let mut got = vec![0u8; len as usize];
                // SAFETY: the fd is one the reader holds open for as long as `disk` lives.
                let n = unsafe { libc::pread(fd, got.as_mut_ptr().cast(), got.len(), at as libc::off_t) };
                assert_eq!(n, len as isize, "extent at file offset {at} ({len} bytes) is not inside its file");
                assert!(got == want, "extent at file offset {at} differs from read_at at {}", offset + pos as u64);
            }
        }
        pos += e.len() as usize;
    }
}

/// Recomputes the CRC-32C of both VHDX headers and region tables, so mutations reach the
/// metadata, BAT and log parsers instead of stopping at a checksum mismatch.
pub fn fix_vhdx_checksums(data: &mut [u8]) {
    for (at, len) in [(64usize << 10, 4096usize), (128 << 10, 4096), (192 << 10, 65536), (256 << 10, 65536)] {
        if let Some(block) = data.get_mut(at..at + len) {
            block[4..8].fill(0);
            let crc = crc32c::crc32c(block);
            block[4..8].copy_from_slice(&crc.to_le_bytes());
        }
    }
}

/// Recomputes the VHD footer checksums (both copies) and the dynamic header's, for the same reason.
pub fn fix_vhd_checksums(data: &mut [u8]) {
    fn fix(b: &mut [u8], field: usize) {
        b[field..field + 4].fill(0);
        let sum = b.iter().fold(0u32, |s, x| s.wrapping_add(*x as u32));
        b[field..field + 4].copy_from_slice(&(!sum).to_be_bytes());
    }
    let len = data.len();
    if len < 512 {
        return;
    }
    fix(&mut data[len - 512..], 64);
    let header_at = u64::from_be_bytes(data[16..24].try_into().unwrap());
    if data.len() >= 1024 {
        fix(&mut data[..512], 64);
    }
    if let Some(h) = usize::try_from(header_at).ok().and_then(|at| data.get_mut(at..at.checked_add(1024)?)) {
        fix(h, 36);
    }
}
