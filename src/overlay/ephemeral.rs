//! `--cow`: writes go to an ephemeral overlay, a sparse temporary file unlinked at creation
//! (so it is gone when the server exits, however it exits), never to the image. A bitmap of
//! 4 KiB blocks says which blocks the overlay holds; every other block is read from the image.
//! Its bits are atomics: reads and writes share its lock, taken exclusively only to add a chunk
//! (once per 128 MiB of disk first written).

use crate::error::{Error, Result};
use crate::formats::layer::{read_layer, DataFile, Layer, Source};
use crate::formats::{DiskImage, Extent, Extents};
use crate::overlay::Overlay;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

const BLOCK: u64 = 4096;
/// Blocks per bitmap chunk: chunks are allocated on first write, so a huge sparse disk costs
/// memory only where it was written.
const CHUNK_BLOCKS: u64 = 64 * 512;
/// Locks for read-modify-write of partly written blocks, by block number.
const RMW_LOCKS: u64 = 64;

type Chunk = Box<[AtomicU64]>;

pub struct CowOverlay {
    base: Arc<dyn DiskImage>,
    size: u64,
    overlay: File,
    /// The folder the overlay is in (it has no name), for error messages.
    overlay_path: PathBuf,
    written: RwLock<HashMap<u64, Chunk>>,
    /// Serialises read-modify-write of partly written blocks (of blocks with the same lock).
    rmw: Box<[Mutex<()>]>,
}

impl CowOverlay {
    /// An overlay in `dir` (default: $TMPDIR) over `base`.
    pub fn new(base: Arc<dyn DiskImage>, dir: Option<PathBuf>) -> Result<CowOverlay> {
        let dir = dir.unwrap_or_else(std::env::temp_dir);
        let overlay = unnamed_file(&dir).map_err(|e| {
            Error::io(
                &dir,
                "cannot create the copy-on-write overlay in this folder (set TMPDIR to a writable folder)",
                e,
            )
        })?;
        let size = base.virtual_size();
        // As long as the disk from the start (sparse: no space used), so a block marked written
        // always lies inside the file, holes punched by discard included.
        let block_end = size.div_ceil(BLOCK) * BLOCK;
        overlay.set_len(block_end).map_err(|e| Error::io(&dir, "cannot size the copy-on-write overlay", e))?;
        Ok(CowOverlay {
            base,
            size,
            overlay,
            overlay_path: dir,
            written: RwLock::new(HashMap::new()),
            rmw: (0..RMW_LOCKS).map(|_| Mutex::new(())).collect(),
        })
    }

    fn mark_written(&self, block: u64) {
        let i = block % CHUNK_BLOCKS;
        {
            let map = self.written.read().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = map.get(&(block / CHUNK_BLOCKS)) {
                c[(i / 64) as usize].fetch_or(1 << (i % 64), Ordering::Release);
                return;
            }
        }
        let mut map = self.written.write().unwrap_or_else(|e| e.into_inner());
        let c = map
            .entry(block / CHUNK_BLOCKS)
            .or_insert_with(|| (0..CHUNK_BLOCKS / 64).map(|_| AtomicU64::new(0)).collect());
        c[(i / 64) as usize].fetch_or(1 << (i % 64), Ordering::Release);
    }

    fn io_err(&self, what: &str, e: std::io::Error) -> Error {
        Error::io(&self.overlay_path, format!("{what} the copy-on-write overlay in this folder"), e)
    }

    /// Writes `data` at `offset`, which may cover blocks partly: those are first filled from
    /// wherever they currently read from.
    fn write_blocks(&self, data: &[u8], offset: u64) -> Result<()> {
        let end = offset + data.len() as u64;
        let mut pos = offset;
        while pos < end {
            let block = pos / BLOCK;
            let bstart = block * BLOCK;
            let bend = (bstart + BLOCK).min(end);
            let piece = &data[(pos - offset) as usize..(bend - offset) as usize];
            if pos == bstart && bend == bstart + BLOCK {
                // Whole blocks: write the run in one call.
                let run_end = bstart + ((end - bstart) / BLOCK) * BLOCK;
                let run = &data[(pos - offset) as usize..(run_end - offset) as usize];
                self.overlay.write_all_at(run, pos).map_err(|e| self.io_err("writing to", e))?;
                for b in block..run_end / BLOCK {
                    self.mark_written(b);
                }
                pos = run_end;
                continue;
            }
            let _guard = self.rmw[(block % RMW_LOCKS) as usize].lock().unwrap_or_else(|e| e.into_inner());
            let mut buf = vec![0u8; BLOCK as usize];
            read_layer(self, &mut buf, bstart)?;
            buf[(pos - bstart) as usize..(bend - bstart) as usize].copy_from_slice(piece);
            self.overlay.write_all_at(&buf, bstart).map_err(|e| self.io_err("writing to", e))?;
            self.mark_written(block);
            pos = bend;
        }
        Ok(())
    }
}

/// Whether `block` is marked written in `map`.
fn bit(map: &HashMap<u64, Chunk>, block: u64) -> bool {
    map.get(&(block / CHUNK_BLOCKS)).is_some_and(|c| {
        let i = block % CHUNK_BLOCKS;
        c[(i / 64) as usize].load(Ordering::Acquire) & (1 << (i % 64)) != 0
    })
}

/// A block the guest wrote reads from the overlay file, any other from the image below.
impl Layer for CowOverlay {
    fn path(&self) -> &Path {
        &self.overlay_path
    }
    fn size(&self) -> u64 {
        self.size
    }
    /// The run of blocks from `pos` that all read from the same place.
    fn lookup(&self, pos: u64, max: u64) -> Result<(Source<'_>, u64)> {
        let map = self.written.read().unwrap_or_else(|e| e.into_inner());
        let from_overlay = bit(&map, pos / BLOCK);
        let end = pos.saturating_add(max);
        let mut run_end = (pos / BLOCK + 1) * BLOCK;
        while run_end < end && bit(&map, run_end / BLOCK) == from_overlay {
            run_end += BLOCK;
        }
        let len = run_end.min(end) - pos;
        Ok((if from_overlay { Source::Data { file: self, offset: pos } } else { Source::Below }, len))
    }
    fn below(&self) -> Option<&Arc<dyn DiskImage>> {
        Some(&self.base)
    }
}

/// The overlay file holds each written block at its disk offset.
impl DataFile for CowOverlay {
    fn read_data_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.overlay.read_exact_at(buf, offset).map_err(|e| self.io_err("reading from", e))
    }
    fn map_data(&self, offset: u64, len: u64, out: &mut Extents) -> bool {
        use std::os::fd::AsRawFd;
        out.push(Extent::Data { fd: self.overlay.as_raw_fd(), offset, len })
    }
}

impl Overlay for CowOverlay {
    fn write(&self, data: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.write_blocks(data, offset)?;
        if fua {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.overlay.sync_data().map_err(|e| self.io_err("syncing", e))
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.write_zeroes(offset, len)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        let end = offset + len;
        // Whole blocks become holes in the overlay (they read as zeros and take no space: a
        // discard of gigabytes must not write gigabytes); partial blocks at the edges are
        // written as zeros.
        let first_whole = offset.div_ceil(BLOCK) * BLOCK;
        let last_whole = (end / BLOCK) * BLOCK;
        if first_whole < last_whole && self.punch_hole(first_whole, last_whole - first_whole).is_ok() {
            for b in first_whole / BLOCK..last_whole / BLOCK {
                self.mark_written(b);
            }
            self.zero_by_writing(offset, first_whole)?;
            return self.zero_by_writing(last_whole, end);
        }
        self.zero_by_writing(offset, end)
    }
}

impl CowOverlay {
    fn punch_hole(&self, offset: u64, len: u64) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: fallocate on our own descriptor; KEEP_SIZE leaves the file's length alone.
        let r = unsafe {
            libc::fallocate(
                self.overlay.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Zeros [start, end) through the normal write path, in bounded pieces.
    fn zero_by_writing(&self, start: u64, end: u64) -> Result<()> {
        const PIECE: u64 = 1 << 20;
        let zeros = vec![0u8; PIECE.min(end.saturating_sub(start)) as usize];
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(PIECE);
            self.write_blocks(&zeros[..n as usize], pos)?;
            pos += n;
        }
        Ok(())
    }
}

/// A file in `dir` that no one else can open, block or replace: O_TMPFILE (it never has a
/// name), or where the filesystem lacks it, a new random name created with O_EXCL|O_NOFOLLOW
/// and unlinked at once. Either way it is 0600 and gone when the server exits, however it exits.
fn unnamed_file(dir: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmpfile = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir);
    match tmpfile {
        Ok(f) => return Ok(f),
        // Filesystems without O_TMPFILE say EOPNOTSUPP (or EISDIR/EINVAL on old kernels).
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)) => {}
        Err(e) => return Err(e),
    }
    named_then_unlinked(dir)
}

/// The fallback: a name no one can guess in advance, never an existing file or symlink.
fn named_then_unlinked(dir: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    for _ in 0..16 {
        let mut r = [0u8; 8];
        // SAFETY: getrandom writes at most r.len() bytes into r.
        if unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), 0) } != r.len() as isize {
            return Err(std::io::Error::last_os_error());
        }
        let path = dir.join(format!("vdmount-cow-{}-{:016x}", std::process::id(), u64::from_ne_bytes(r)));
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path);
        match opened {
            Ok(f) => {
                // Our file: O_EXCL created it, so the name is ours to remove.
                std::fs::remove_file(&path)?;
                return Ok(f);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::EEXIST))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn fallback_file_is_private_and_unlinked() {
        let dir = tempfile::tempdir().unwrap();
        let f = named_then_unlinked(dir.path()).unwrap();
        let meta = f.metadata().unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(meta.nlink(), 0, "the fallback overlay still has a name");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn tmpfile_is_private_and_nameless() {
        let dir = tempfile::tempdir().unwrap();
        let f = unnamed_file(dir.path()).unwrap();
        assert_eq!(f.metadata().unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
