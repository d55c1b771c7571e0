//! An image file opened read-only, with positional reads whose errors say which file, which
//! structure and which offset. Every format reader reads its files through this, whether the
//! bytes come from a local file or, for a URL, over the network (`remote/`).

use super::extents::{Extent, Extents};
use super::remote::{self, Remote};
use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the bytes come from.
enum Backing {
    Local(File),
    Remote(Box<Remote>),
}

pub struct ImageFile {
    /// The file's path, or for a remote layer its URL.
    pub path: PathBuf,
    file: Backing,
    /// Size at open. Images are not expected to change while served.
    pub size: u64,
    /// Cache key prefix for this file (see cache.rs).
    pub id: u64,
    /// A regular file (not a block device): the kernel may read its extents (`map_data`).
    regular: bool,
}

impl ImageFile {
    /// Opens `path` read-only; it must be a regular file or a block device. The type is checked
    /// before opening: opening a FIFO blocks until a writer comes, and opening some character
    /// devices has side effects (a watchdog arms itself), so an image naming one as its backing
    /// file must not get that far. The open is non-blocking and the type is checked again on the
    /// open file, in case the path changed in between.
    pub fn open(path: &Path) -> Result<ImageFile> {
        if let Some(url) = path.to_str().filter(|p| remote::is_url(p)) {
            return ImageFile::open_url(url);
        }
        let before = std::fs::metadata(path).map_err(|e| Error::io(path, "cannot open", e))?;
        check_file_type(path, &before)?;
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|e| Error::io(path, "cannot open", e))?;
        ImageFile::from_file(path, file)
    }

    /// Wraps `file`, already opened read-only from `path`; its type is checked on the descriptor.
    pub fn from_file(path: &Path, file: File) -> Result<ImageFile> {
        let meta = file.metadata().map_err(|e| Error::io(path, "cannot stat", e))?;
        check_file_type(path, &meta)?;
        use std::os::unix::fs::FileTypeExt;
        let size = if meta.file_type().is_block_device() {
            block_device_size(&file).map_err(|e| Error::io(path, "cannot get the block device's size", e))?
        } else {
            meta.len()
        };
        let regular = meta.file_type().is_file();
        Ok(ImageFile { path: path.to_path_buf(), file: Backing::Local(file), size, id: new_file_id(), regular })
    }

    /// Opens a remote image: http(s):// or s3://. Errors name the URL.
    pub fn open_url(url: &str) -> Result<ImageFile> {
        let path = PathBuf::from(url);
        let remote = Remote::open(url).map_err(|e| Error::io(&path, "cannot open", std::io::Error::other(e)))?;
        let size = remote.size;
        Ok(ImageFile { path, file: Backing::Remote(Box::new(remote)), size, id: new_file_id(), regular: false })
    }

    /// `open_url`, but None when the server says nothing is there (one request for both).
    pub fn open_url_if_present(url: &str) -> Result<Option<ImageFile>> {
        let path = PathBuf::from(url);
        let remote =
            Remote::open_if_present(url).map_err(|e| Error::io(&path, "cannot open", std::io::Error::other(e)))?;
        Ok(remote.map(|remote| {
            let size = remote.size;
            ImageFile { path, file: Backing::Remote(Box::new(remote)), size, id: new_file_id(), regular: false }
        }))
    }

    /// True for a layer read over the network.
    pub fn is_remote(&self) -> bool {
        matches!(self.file, Backing::Remote(_))
    }

    /// Reads exactly `buf.len()` bytes at `offset`, from wherever the bytes are.
    fn pread(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        match &self.file {
            Backing::Local(f) => f.read_exact_at(buf, offset),
            Backing::Remote(r) => r.read_at(buf, offset).map_err(std::io::Error::other),
        }
    }

    /// Device and inode: the same file under two names (a hard link, a symlink) has one.
    pub fn inode(&self) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let Backing::Local(file) = &self.file else { return None };
        file.metadata().ok().map(|m| (m.dev(), m.ino()))
    }

    /// Reads exactly `buf.len()` bytes at `offset` for the structure named `what`. Reading past
    /// the end of the file is an error: metadata must be whole.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64, what: &str) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > self.size) {
            return Err(Error::corrupt(
                &self.path,
                format!(
                    "{what} at offset {offset} ({} bytes) lies past the end of the file ({} bytes); the image is truncated or corrupt",
                    buf.len(),
                    self.size
                ),
            ));
        }
        self.pread(buf, offset).map_err(|e| Error::io(&self.path, format!("reading {what} at offset {offset}"), e))
    }

    /// Reads `buf.len()` bytes of guest data at `offset`; the part past the end of the file reads
    /// as zeros, as qemu does for data clusters of a file that ends early.
    pub fn read_data_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let avail = self.size.saturating_sub(offset).min(buf.len() as u64) as usize;
        let (head, tail) = buf.split_at_mut(avail);
        if !head.is_empty() {
            self.pread(head, offset)
                .map_err(|e| Error::io(&self.path, format!("reading data at offset {offset}"), e))?;
        }
        tail.fill(0);
        Ok(())
    }

    /// Appends the extents `read_data_at` reads for `len` bytes at `offset`: the part inside the
    /// file, then zeros. False for a block device: abuse.ko reads only regular files.
    #[must_use]
    pub fn map_data(&self, offset: u64, len: u64, out: &mut Extents) -> bool {
        use std::os::fd::AsRawFd;
        let Backing::Local(file) = &self.file else { return false };
        let inside = self.size.saturating_sub(offset).min(len);
        self.regular
            && out.push(Extent::Data { fd: file.as_raw_fd(), offset, len: inside })
            && out.push(Extent::Zero { len: len - inside })
    }

    /// Reads a whole structure of `len` bytes into a new buffer, checking `len` against `limit`.
    pub fn read_vec(&self, offset: u64, len: u64, limit: u64, what: &str) -> Result<Vec<u8>> {
        crate::limits::check(&self.path, &format!("size of {what}"), len, limit)?;
        // Checked against the file before allocating: a tiny file cannot make us allocate `limit`.
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(Error::corrupt(
                &self.path,
                format!(
                    "{what} at offset {offset} ({len} bytes) lies past the end of the file ({} bytes); the image is truncated or corrupt",
                    self.size
                ),
            ));
        }
        let mut v = crate::limits::alloc(&self.path, what, len)?;
        self.read_exact_at(&mut v, offset, what)?;
        Ok(v)
    }
}

/// A number that tells one opened image file from every other one in this process (cache keys).
fn new_file_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Refuses anything but a regular file or a block device.
fn check_file_type(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    if ft.is_file() || ft.is_block_device() {
        Ok(())
    } else if ft.is_dir() {
        Err(Error::unsupported(path, "is a directory, not a disk image"))
    } else {
        Err(Error::unsupported(
            path,
            "is not a regular file or block device (a FIFO, socket or character device cannot hold a disk image)",
        ))
    }
}

fn block_device_size(file: &File) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    let mut size: u64 = 0;
    // BLKGETSIZE64 = _IOR(0x12, 114, size_t)
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut size) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(size)
}

/// For header tests: the message of the error `r` was expected to be.
#[cfg(test)]
pub(crate) fn refused<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => panic!("accepted, but a refusal was expected"),
        Err(e) => e.to_string(),
    }
}

/// For header tests: `image` changed by `edit`, written to a temporary file and parsed by
/// `parse`; the header, or the refusal's message.
#[cfg(test)]
pub(crate) fn parse_edited<T>(
    mut image: Vec<u8>,
    edit: impl Fn(&mut Vec<u8>),
    parse: impl FnOnce(&ImageFile) -> Result<T>,
) -> std::result::Result<T, String> {
    edit(&mut image);
    let (_tmp, file) = test_file(&image);
    parse(&file).map_err(|e| e.to_string())
}

/// For header tests: `r` is a refusal whose message mentions `needle`.
#[cfg(test)]
pub(crate) fn assert_refused<T>(r: std::result::Result<T, String>, needle: &str) {
    match r {
        Ok(_) => panic!("accepted, expected a refusal mentioning {needle:?}"),
        Err(e) => assert!(e.contains(needle), "{e:?} does not mention {needle:?}"),
    }
}

/// For header tests: `bytes` written to a temporary file and opened. Keep the first value alive
/// as long as the file is used.
#[cfg(test)]
pub(crate) fn test_file(bytes: &[u8]) -> (tempfile::NamedTempFile, ImageFile) {
    use std::io::Write;
    let mut tmp = tempfile::NamedTempFile::new().unwrap();
    tmp.write_all(bytes).unwrap();
    tmp.flush().unwrap();
    let file = ImageFile::open(tmp.path()).unwrap();
    (tmp, file)
}
