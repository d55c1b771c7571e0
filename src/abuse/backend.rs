//! What the service loop serves: every block op the kernel can send. A read-only image
//! answers reads and flushes; a copy-on-write overlay (src/cow.rs) answers them all.

use crate::error::{Error, Result};
use crate::formats::{DiskImage, Extents};
use std::io;
use std::sync::Arc;

pub trait Backend: Send + Sync {
    /// Bytes the device shows.
    fn size(&self) -> u64;
    fn block_size(&self) -> u32;
    /// Whether writes, discards and write-zeroes are accepted (the device is read-only if not).
    fn writable(&self) -> bool;
    fn read(&self, buf: &mut [u8], offset: u64) -> Result<()>;
    /// Describes what `read` would give as extents of open files, for the kernel to read
    /// itself (see `DiskImage::map`); Ok(false) if it cannot, and then `read` answers.
    fn map_read(&self, _offset: u64, _len: u64, _out: &mut Extents) -> Result<bool> {
        Ok(false)
    }
    /// With `fua`, the data is durable when this returns.
    fn write(&self, _data: &[u8], _offset: u64, _fua: bool) -> Result<()> {
        Err(errno(libc::EROFS))
    }
    /// Makes every completed write durable.
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    /// The range reads as zeros afterwards (discard of a COW overlay is not advisory).
    fn discard(&self, _offset: u64, _len: u64) -> Result<()> {
        Err(errno(libc::EOPNOTSUPP))
    }
    fn write_zeroes(&self, _offset: u64, _len: u64) -> Result<()> {
        Err(errno(libc::EOPNOTSUPP))
    }
    /// Called once when serving ends: leave everything durable and tidy.
    fn close(&self) -> Result<()> {
        self.flush()
    }
}

/// An error that carries just an errno for the kernel.
pub fn errno(e: i32) -> Error {
    Error::Io { path: Default::default(), context: "request".into(), source: io::Error::from_raw_os_error(e) }
}

/// A disk image served as it is: reads only.
pub struct ReadOnly(pub Arc<dyn DiskImage>);

impl Backend for ReadOnly {
    fn size(&self) -> u64 {
        self.0.virtual_size()
    }
    fn block_size(&self) -> u32 {
        self.0.logical_sector_size()
    }
    fn writable(&self) -> bool {
        false
    }
    fn read(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.0.read_at(buf, offset)
    }
    fn map_read(&self, offset: u64, len: u64, out: &mut Extents) -> Result<bool> {
        self.0.map(offset, len, out)
    }
}
