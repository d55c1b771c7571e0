//! The two loops of a layered reader whose bytes come, run by run, from its data file, its
//! parent or zeros (VHD, VHDX): `read_runs` reads the runs (`DiskImage::read_at`), `map_runs`
//! describes them as extents (`DiskImage::map`). Both walk the disk with the reader's one
//! `lookup`, so what the kernel is told to read is exactly what `read_at` reads.

use super::{clamp_to_size, len_inside, DiskImage, Extent, Extents};
use crate::error::Result;
use std::sync::Arc;

/// Where a run of the disk's bytes comes from.
pub enum Source {
    /// The data file's bytes from this offset (zeros past its end).
    File(u64),
    /// The parent's bytes at the same disk offset, or zeros without a parent.
    Parent,
    Zero,
}

/// What the loops need from a reader.
pub trait Runs {
    /// Virtual size: bytes past it read as zeros.
    fn size(&self) -> u64;
    /// Where the bytes from `pos` (below `size()`) come from, and how many (1 to `max_len`).
    fn lookup(&self, pos: u64, max_len: u64) -> Result<(Source, u64)>;
    /// Reads the data file (`Source::File`), zeros past its end.
    fn read_file(&self, buf: &mut [u8], offset: u64) -> Result<()>;
    /// Describes the same bytes as `read_file` would read; false if it cannot.
    fn map_file(&self, offset: u64, len: u64, out: &mut Extents) -> bool;
    fn parent(&self) -> Option<&Arc<dyn DiskImage>>;
}

/// `DiskImage::read_at` for a `Runs` reader.
pub fn read_runs(r: &impl Runs, buf: &mut [u8], offset: u64) -> Result<()> {
    let n = clamp_to_size(buf, offset, r.size());
    let mut done = 0usize;
    while done < n {
        let pos = offset + done as u64;
        let (source, len) = r.lookup(pos, (n - done) as u64)?;
        let part = &mut buf[done..done + len as usize];
        match (source, r.parent()) {
            (Source::File(at), _) => r.read_file(part, at)?,
            (Source::Parent, Some(p)) => p.read_at(part, pos)?,
            (Source::Parent, None) | (Source::Zero, _) => part.fill(0),
        }
        done += part.len();
    }
    Ok(())
}

/// `DiskImage::map` for a `Runs` reader.
pub fn map_runs(r: &impl Runs, offset: u64, len: u64, out: &mut Extents) -> Result<bool> {
    let n = len_inside(offset, len, r.size());
    let mut done = 0u64;
    while done < n {
        let pos = offset + done;
        let (source, run) = r.lookup(pos, n - done)?;
        let described = match (source, r.parent()) {
            (Source::File(at), _) => r.map_file(at, run, out),
            (Source::Parent, Some(p)) => p.map(pos, run, out)?,
            (Source::Parent, None) | (Source::Zero, _) => out.push(Extent::Zero { len: run }),
        };
        if !described {
            return Ok(false);
        }
        done += run;
    }
    Ok(out.push(Extent::Zero { len: len - n }))
}
