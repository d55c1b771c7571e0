//! `--cache-dir`: what was fetched of a remote object, kept on disk so a second mount (or
//! `cat`) reads nothing twice. One object is two files named after its URL, size and ETag (a
//! changed object gets new files): KEY.data, sparse, the object's bytes at their offsets, and
//! KEY.map, 4 bytes per chunk: the chunk's CRC-32C with the top bit set, or 0 while absent. A
//! chunk is used only if its bytes still match: a crash between the two writes, a torn write,
//! or an edited file means a fetch again, never wrong data.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Chunk size: the unit fetched and checked.
pub const CHUNK: u64 = 1 << 20;
const PRESENT: u32 = 1 << 31;

pub struct DiskCache {
    data: File,
    map: File,
    size: u64,
}

impl DiskCache {
    /// Opens (creating) the cache files for the object named `id` (URL without query, size
    /// and ETag) of `size` bytes in `dir`.
    pub fn open(dir: &Path, id: &str, size: u64) -> Result<DiskCache, String> {
        use sha1::{Digest, Sha1};
        let key: String = Sha1::digest(id.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        let open = |ext: &str| {
            use std::os::unix::fs::OpenOptionsExt;
            let path = dir.join(format!("{key}.{ext}"));
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .map_err(|e| format!("--cache-dir: cannot open {}: {e}", path.display()))
        };
        Ok(DiskCache { data: open("data")?, map: open("map")?, size })
    }

    /// Bytes in chunk `n` (the last one may be short).
    pub fn chunk_len(&self, n: u64) -> usize {
        (self.size - n * CHUNK).min(CHUNK) as usize
    }

    /// Fills `buf` (chunk `n`, whole) from the cache if it holds that chunk intact.
    pub fn get(&self, n: u64, buf: &mut [u8]) -> bool {
        let mut mark = [0u8; 4];
        if self.map.read_exact_at(&mut mark, n * 4).is_err() {
            return false;
        }
        let mark = u32::from_le_bytes(mark);
        mark & PRESENT != 0 && self.data.read_exact_at(buf, n * CHUNK).is_ok() && crc32c::crc32c(buf) | PRESENT == mark
    }

    /// Keeps chunk `n`. A failure (disk full) only means it is fetched again next time.
    pub fn put(&self, n: u64, buf: &[u8]) {
        if self.data.write_all_at(buf, n * CHUNK).is_ok() {
            let _ = self.map.write_all_at(&(crc32c::crc32c(buf) | PRESENT).to_le_bytes(), n * 4);
        }
    }
}
