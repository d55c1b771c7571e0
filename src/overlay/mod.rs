//! Views over a read-only chain, as the transports serve them: `Backend` is every block op the
//! kernel can send. A read-only image answers reads and flushes (`ReadOnly`); a copy-on-write
//! overlay answers them all: `ephemeral` (--cow, a throwaway file) or `qcow2` (--cow=FILE).

pub mod ephemeral;
pub mod qcow2;
pub mod safe_open;

pub use ephemeral::CowOverlay;
pub use qcow2::Qcow2Overlay;

use crate::error::{Error, Result};
use crate::formats::layer::{map_layer, read_layer, Layer};
use crate::formats::{DiskImage, Extents};
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
        Err(Error::from_errno(libc::EROFS))
    }
    /// Makes every completed write durable.
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    /// The range reads as zeros afterwards (discard of a COW overlay is not advisory).
    fn discard(&self, _offset: u64, _len: u64) -> Result<()> {
        Err(Error::from_errno(libc::EOPNOTSUPP))
    }
    fn write_zeroes(&self, _offset: u64, _len: u64) -> Result<()> {
        Err(Error::from_errno(libc::EOPNOTSUPP))
    }
    /// Called once when serving ends: leave everything durable and tidy.
    fn close(&self) -> Result<()> {
        self.flush()
    }
}

/// Writes over a layer: what a copy-on-write overlay adds to reading it. Every overlay is served
/// the same way (the `Backend` impl below): reads through the one layer loop, with the block size
/// of the image below.
pub trait Overlay: Layer + Send + Sync {
    /// With `fua`, the data is durable when this returns.
    fn write(&self, data: &[u8], offset: u64, fua: bool) -> Result<()>;
    /// Makes every completed write durable.
    fn flush(&self) -> Result<()>;
    /// The range reads as zeros afterwards.
    fn discard(&self, offset: u64, len: u64) -> Result<()>;
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()>;
    /// Called once when serving ends: leave everything durable and tidy.
    fn close(&self) -> Result<()> {
        self.flush()
    }
}

impl<O: Overlay> Backend for O {
    fn size(&self) -> u64 {
        Layer::size(self)
    }
    fn block_size(&self) -> u32 {
        self.below().map_or(512, |b| b.logical_sector_size())
    }
    fn writable(&self) -> bool {
        true
    }
    fn read(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        read_layer(self, buf, offset)
    }
    fn map_read(&self, offset: u64, len: u64, out: &mut Extents) -> Result<bool> {
        map_layer(self, offset, len, out)
    }
    fn write(&self, data: &[u8], offset: u64, fua: bool) -> Result<()> {
        Overlay::write(self, data, offset, fua)
    }
    fn flush(&self) -> Result<()> {
        Overlay::flush(self)
    }
    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        Overlay::discard(self, offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        Overlay::write_zeroes(self, offset, len)
    }
    fn close(&self) -> Result<()> {
        Overlay::close(self)
    }
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
