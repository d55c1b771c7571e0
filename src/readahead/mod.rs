//! Read-ahead of decoded data: a sequential reader of compressed data (dd of a device, `cat`,
//! `verify`, a filesystem reading a large file) has the data ahead of it decompressed on
//! several threads, instead of one cluster at a time on the thread that asks.
//!
//! `ReadAhead` wraps any `DiskImage` and knows no format: it sits between the readers
//! (src/formats/) and those who read a disk (the CLI, the server), which is why it has its own
//! folder rather than a place in either. It tracks a few sequential streams (streams.rs); a
//! read that continues one, and that the image cannot describe as extents (what `map` describes
//! the kernel reads itself, so there is nothing to decode), has the next window queued as
//! pieces for a small pool of threads (pieces.rs). Reads take their bytes from decoded pieces,
//! wait for pieces being decoded, and read the rest themselves. A piece that failed is read
//! again by each reader that needs its bytes, so an error reaches exactly the reads covering
//! the bad data, with the reader's own message. Memory is bounded by `limits::READAHEAD_*`.
//!
//! Threads: the pool starts on the first prefetch, and never before the process may have
//! threads: the server forks after opening the image and reading its partition table, and a
//! thread started before the fork would vanish in the child (and might hold a lock there).
//! Before the fork only the thread that opened the image exists (launch.rs relies on it too),
//! so prefetching is armed once a read comes from another thread (the server's queue threads,
//! `cat`'s and `verify`'s readers) or from another process than the opener's (the forked
//! server, whose main thread serves queue 0). The sandbox allows new threads. The other way
//! round is not handled: a process that forks once the pool runs must not read the same
//! `ReadAhead` in the child (vdmount's later forks, in detach, read no image).

mod pieces;
mod streams;

use crate::error::Result;
use crate::formats::{len_inside, DiskImage, Extents, ImageInfo, LayerId, StoredDigests};
use crate::limits::{
    READAHEAD_PIECE_BYTES as PIECE, READAHEAD_STREAMS, READAHEAD_THREADS, READAHEAD_WINDOWS, READAHEAD_WINDOW_BYTES,
};
use pieces::{Pieces, Take};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::ThreadId;

pub struct ReadAhead {
    pieces: Arc<Pieces>,
    inner: Arc<dyn DiskImage>,
    opener: ThreadId,
    opener_pid: u32,
    /// Set once a read shows threads are safe to start (see above).
    armed: AtomicBool,
    /// Decoding threads, and the number of readers inside `read_at` from which on nothing is
    /// prefetched: that many readers already keep that many cores decoding (`cat`'s readers).
    threads: usize,
    reading: AtomicUsize,
}

impl ReadAhead {
    /// Wraps `inner`, with one decoding thread per core; until another thread or process reads,
    /// nothing is prefetched (see above).
    pub fn new(inner: Arc<dyn DiskImage>) -> ReadAhead {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        ReadAhead::with_threads(inner, cores)
    }

    /// As `new`, with `threads` decoding threads (at most READAHEAD_THREADS).
    pub fn with_threads(inner: Arc<dyn DiskImage>, threads: usize) -> ReadAhead {
        let most = (READAHEAD_WINDOWS * READAHEAD_WINDOW_BYTES / PIECE) as usize;
        let threads = threads.clamp(1, READAHEAD_THREADS);
        ReadAhead {
            pieces: Pieces::new(inner.clone(), most, READAHEAD_STREAMS, threads),
            inner,
            opener: std::thread::current().id(),
            opener_pid: std::process::id(),
            armed: AtomicBool::new(false),
            threads,
            reading: AtomicUsize::new(0),
        }
    }

    /// Bytes decoded ahead by the pool, and bytes readers took from what it decoded.
    pub fn stats(&self) -> (u64, u64) {
        self.pieces.stats()
    }

    /// Whether threads may be started (see above).
    fn armed(&self) -> bool {
        if self.armed.load(Ordering::Relaxed) {
            return true;
        }
        let safe = std::thread::current().id() != self.opener || std::process::id() != self.opener_pid;
        if safe {
            self.armed.store(true, Ordering::Relaxed);
        }
        safe
    }

    /// Whether this read continues a stream over data the kernel cannot read itself.
    fn wants_prefetch(&self, offset: u64, len: u64) -> bool {
        if !self.armed() || !self.pieces.note(offset, len) {
            return false;
        }
        if self.reading.load(Ordering::Relaxed) >= self.threads {
            return false;
        }
        !pieces::describable(&*self.inner, offset, len)
    }
}

impl DiskImage for ReadAhead {
    fn virtual_size(&self) -> u64 {
        self.inner.virtual_size()
    }
    fn logical_sector_size(&self) -> u32 {
        self.inner.logical_sector_size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let len = buf.len() as u64;
        if len == 0 {
            return Ok(());
        }
        self.reading.fetch_add(1, Ordering::Relaxed);
        let result = self.read_counted(buf, offset);
        self.reading.fetch_sub(1, Ordering::Relaxed);
        result
    }

    fn map(&self, offset: u64, len: u64, out: &mut Extents) -> Result<bool> {
        self.inner.map(offset, len, out)
    }
    fn layer_id(&self) -> LayerId {
        self.inner.layer_id()
    }
    fn stored_digests(&self) -> StoredDigests {
        self.inner.stored_digests()
    }
    fn info(&self) -> ImageInfo {
        self.inner.info()
    }
}

impl ReadAhead {
    /// `read_at`, counted in `reading`.
    fn read_counted(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let len = buf.len() as u64;
        if self.wants_prefetch(offset, len) {
            // The window starts at the first piece after this read: this read's own pieces
            // are read below, by this thread, so queuing them would only add a copy.
            let from = (offset + len).div_ceil(PIECE);
            self.pieces.prefetch(from, READAHEAD_WINDOW_BYTES.div_ceil(PIECE));
        }
        // Piece by piece: decoded bytes are copied, the rest is read here, in runs as long as
        // the pieces allow (a read nothing was prefetched for is one read of the image).
        // Past the end there are no pieces: the image reads zeros there itself.
        let inside = len_inside(offset, len, self.inner.virtual_size());
        let mut done = 0u64;
        let mut run_start = 0u64;
        while done < inside {
            let pos = offset + done;
            let part = (PIECE - pos % PIECE).min(inside - done);
            let out = &mut buf[done as usize..(done + part) as usize];
            if let Take::Copied = self.pieces.take(pos, out) {
                if run_start < done {
                    self.inner.read_at(&mut buf[run_start as usize..done as usize], offset + run_start)?;
                }
                run_start = done + part;
            }
            done += part;
        }
        if run_start < len {
            self.inner.read_at(&mut buf[run_start as usize..], offset + run_start)?;
        }
        Ok(())
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.pieces.close();
    }
}
