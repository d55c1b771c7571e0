//! Read-ahead for sequential remote reads. The object is cut into pieces of REMOTE_PIECE_BYTES;
//! a read that continues a sequential stream queues the pieces it covers and those of a window
//! beyond its end, and up to REMOTE_PARALLEL background threads fetch them (lowest offset
//! first, up to REMOTE_READAHEAD_RUN queued pieces in a row per request) while the caller decodes and writes what it already has. The window doubles whenever
//! a read had to wait for a piece, up to REMOTE_READAHEAD_MAX_BYTES; fetched pieces are held up
//! to REMOTE_READAHEAD_HELD_BYTES (oldest dropped first), so memory is bounded by our limits and
//! never by what a server says. A random read (not continuing one of the recent reads twice in a
//! row) queues nothing: it is fetched by the caller, exactly as asked. With `--cache-dir` a
//! piece is a chunk of the disk cache: taken from it when kept there, kept there once fetched.

use super::disk_cache::{DiskCache, CHUNK};
use super::Object;
use crate::limits::{
    REMOTE_PARALLEL, REMOTE_PIECE_BYTES as PIECE, REMOTE_READAHEAD_BYTES, REMOTE_READAHEAD_HELD_BYTES,
    REMOTE_READAHEAD_MAX_BYTES, REMOTE_READAHEAD_RUN,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Recent read ends remembered to tell sequential streams (several threads, each sequential,
/// interleave: `cat`'s readers, the kernel's queues).
const STREAMS: usize = 16;
/// Continuations in a row before a stream is read ahead of.
const SEQUENTIAL_AFTER: u32 = 2;
// A piece is one chunk of the disk cache.
const _: () = assert!(CHUNK == PIECE);

pub struct Readahead {
    shared: Arc<Shared>,
    /// The background threads, and the process they run in: a server that forks to go to the
    /// background after reading the partition table has none of them in the child.
    workers: Mutex<(u32, Vec<JoinHandle<()>>)>,
    /// The thread and process that opened the image: they never start the threads (see
    /// `start_workers`).
    opener: (std::thread::ThreadId, u32),
}

struct Shared {
    object: Arc<Object>,
    /// `--cache-dir`: pieces kept there are read from it, fetched ones are kept.
    disk: Option<Arc<DiskCache>>,
    state: Mutex<State>,
    /// Signalled when pieces are queued, and at close: wakes the background threads.
    queued: Condvar,
    /// Signalled when a piece is fetched or failed: wakes the readers (two condition variables,
    /// so a finished piece does not wake every idle thread).
    fetched: Condvar,
}

enum Status {
    Queued,
    Fetching,
    Ready(Vec<u8>),
    Failed(String),
}

struct Piece {
    status: Status,
    /// When it was queued: the oldest fetched piece is dropped first.
    born: u64,
}

#[derive(Default)]
struct State {
    /// By piece index.
    pieces: BTreeMap<u64, Piece>,
    /// (end, continuations in a row) of recent reads, the oldest overwritten first.
    streams: [(u64, u32); STREAMS],
    next_stream: usize,
    /// Bytes queued beyond a sequential read's end (0 until the first sequential read).
    window: u64,
    born: u64,
    /// Buffers of dropped pieces, used again: no fresh pages to fault in and zero per piece.
    spare: Vec<Vec<u8>>,
    closed: bool,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Readahead {
    pub fn new(object: Arc<Object>, disk: Option<Arc<DiskCache>>) -> Readahead {
        let shared = Shared { object, disk, state: Mutex::default(), queued: Condvar::new(), fetched: Condvar::new() };
        let opener = (std::thread::current().id(), std::process::id());
        Readahead { shared: Arc::new(shared), workers: Mutex::default(), opener }
    }

    /// Fills `buf` from the read-ahead if the read is sequential (or lies in fetched pieces):
    /// true if it did, false if the caller should fetch it itself. An error is a piece's fetch
    /// that failed after its retries.
    pub fn read(&self, buf: &mut [u8], offset: u64) -> Result<bool, String> {
        let size = self.shared.object.size;
        let end = offset + buf.len() as u64;
        let (first, last) = (offset / PIECE, (end - 1) / PIECE);
        self.after_fork();
        let mut st = lock(&self.shared.state);
        let held = (first..=last).all(|i| st.pieces.contains_key(&i));
        let sequential = st.note(offset, end);
        if !held && !sequential {
            return Ok(false);
        }
        // Nothing is queued without a thread to fetch it (one that cannot be started is left
        // to the caller's own fetch).
        if sequential && !held && !self.start_workers() {
            return Ok(false);
        }
        if sequential {
            st.window = st.window.max(REMOTE_READAHEAD_BYTES);
            let stop = (end + st.window).min(size);
            for i in first..=(stop - 1) / PIECE {
                if !st.pieces.contains_key(&i) {
                    if !st.make_room(first..=last) {
                        break;
                    }
                    st.born += 1;
                    let born = st.born;
                    st.pieces.insert(i, Piece { status: Status::Queued, born });
                }
            }
            drop(st);
            self.shared.queued.notify_all();
            st = lock(&self.shared.state);
        }
        let mut waited = false;
        loop {
            let mut ready = true;
            for i in first..=last {
                match st.pieces.get(&i).map(|p| &p.status) {
                    // Dropped for room, or never queued: the caller fetches it all itself.
                    None => return Ok(false),
                    Some(Status::Failed(why)) => {
                        let why = why.clone();
                        st.pieces.remove(&i);
                        return Err(why);
                    }
                    Some(Status::Queued | Status::Fetching) => ready = false,
                    Some(Status::Ready(_)) => {}
                }
            }
            if ready {
                break;
            }
            waited = true;
            st = self.shared.fetched.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        // The window was queued ahead and still fell behind: widen it.
        if waited && held {
            st.window = (st.window * 2).min(REMOTE_READAHEAD_MAX_BYTES);
        }
        for (i, piece) in st.pieces.range(first..=last) {
            let Status::Ready(data) = &piece.status else { unreachable!("checked above") };
            let from = offset.max(i * PIECE);
            let to = end.min(i * PIECE + data.len() as u64);
            let into = (from - offset) as usize..(to - offset) as usize;
            buf[into].copy_from_slice(&data[(from - i * PIECE) as usize..(to - i * PIECE) as usize]);
        }
        Ok(true)
    }

    /// Starts the background threads on first use (lazily: a serving process is sandboxed by
    /// then, and its filter allows threads). False if none could be started, and always in the
    /// thread that opened the image, in its process: `vdmount IMAGE` reads the partition table
    /// there and then forks its server (launch.rs), and a thread alive at the fork could hold a
    /// lock the child then waits on for ever. Readers on other threads (`cat`, `verify`, the
    /// server's queues) or in the forked server start them.
    fn start_workers(&self) -> bool {
        if self.opener == (std::thread::current().id(), std::process::id()) {
            return false;
        }
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        workers.0 = std::process::id();
        while workers.1.len() < REMOTE_PARALLEL {
            let shared = self.shared.clone();
            match std::thread::Builder::new().spawn(move || shared.work()) {
                Ok(h) => workers.1.push(h),
                Err(_) => break,
            }
        }
        !workers.1.is_empty()
    }

    /// In a child forked after the threads started: they are not here, so what they were to
    /// fetch is dropped (it would be waited for for ever) and they are started again when needed.
    fn after_fork(&self) {
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if workers.1.is_empty() || workers.0 == std::process::id() {
            return;
        }
        // Their handles name threads of another process: never joined.
        std::mem::forget(std::mem::take(&mut workers.1));
        lock(&self.shared.state).pieces.retain(|_, p| matches!(p.status, Status::Ready(_)));
    }
}

impl Drop for Readahead {
    /// Drops what is queued and waits for the fetches under way (with their retries and
    /// warnings), so no request outlives the object.
    fn drop(&mut self) {
        let mut st = lock(&self.shared.state);
        st.closed = true;
        st.pieces.retain(|_, p| !matches!(p.status, Status::Queued));
        drop(st);
        self.shared.queued.notify_all();
        self.after_fork();
        for h in self.workers.get_mut().unwrap_or_else(|e| e.into_inner()).1.drain(..) {
            let _ = h.join();
        }
    }
}

impl State {
    /// Records a read of `offset..end`; true if it continues a stream seen sequential before.
    fn note(&mut self, offset: u64, end: u64) -> bool {
        let run = match self.streams.iter_mut().find(|(e, _)| *e == offset && offset != 0) {
            Some(s) => {
                *s = (end, s.1 + 1);
                s.1
            }
            None => {
                self.streams[self.next_stream] = (end, 0);
                self.next_stream = (self.next_stream + 1) % STREAMS;
                0
            }
        };
        run >= SEQUENTIAL_AFTER
    }

    /// Makes room for one more piece by dropping the oldest fetched one outside `keep`; false
    /// if every held piece is still wanted or under way.
    fn make_room(&mut self, keep: std::ops::RangeInclusive<u64>) -> bool {
        if (self.pieces.len() as u64) < REMOTE_READAHEAD_HELD_BYTES / PIECE {
            return true;
        }
        let oldest = self
            .pieces
            .iter()
            .filter(|(i, p)| !keep.contains(i) && matches!(p.status, Status::Ready(_) | Status::Failed(_)))
            .min_by_key(|(_, p)| p.born)
            .map(|(i, _)| *i);
        let Some(piece) = oldest.and_then(|i| self.pieces.remove(&i)) else { return false };
        if let Status::Ready(data) = piece.status {
            self.spare.push(data);
        }
        true
    }
}

impl Shared {
    /// A background thread: fetches queued pieces, lowest offset first, until closed.
    fn work(&self) {
        let mut st = lock(&self.state);
        loop {
            if st.closed {
                return;
            }
            let next = st.pieces.iter().find(|(_, p)| matches!(p.status, Status::Queued)).map(|(i, _)| *i);
            let Some(first) = next else {
                st = self.queued.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            // Queued pieces in a row go in one request (fewer requests: S3 bills and slows
            // each), leaving some to the other threads while the window is short.
            let queued = (first..).take_while(|i| st.pieces.get(i).is_some_and(|p| matches!(p.status, Status::Queued)));
            let run = queued.count().div_ceil(2).clamp(1, REMOTE_READAHEAD_RUN) as u64;
            let mut bufs = Vec::new();
            for i in first..first + run {
                if let Some(p) = st.pieces.get_mut(&i) {
                    p.status = Status::Fetching;
                }
                let mut data = st.spare.pop().unwrap_or_default();
                data.resize((self.object.size - i * PIECE).min(PIECE) as usize, 0);
                bufs.push(data);
            }
            drop(st);
            let result = self.fill(first, &mut bufs);
            st = lock(&self.state);
            for (i, data) in (first..).zip(bufs) {
                if let Some(p) = st.pieces.get_mut(&i) {
                    p.status = match &result {
                        Ok(()) => Status::Ready(data),
                        Err(why) => Status::Failed(why.clone()),
                    };
                }
            }
            self.fetched.notify_all();
        }
    }

    /// Fills the pieces from `first` on: from the disk cache where it keeps them, the rest by
    /// one request per run of missing pieces (then kept there).
    fn fill(&self, first: u64, bufs: &mut [Vec<u8>]) -> Result<(), String> {
        let fetch = |bufs: &mut [Vec<u8>], at: u64| {
            let mut slices: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
            self.object.fetch_into(&mut slices, at * PIECE)
        };
        let Some(disk) = &self.disk else { return fetch(bufs, first) };
        let kept: Vec<bool> = (first..).zip(bufs.iter_mut()).map(|(i, b)| disk.get(i, b)).collect();
        let mut k = 0;
        while k < bufs.len() {
            if kept[k] {
                k += 1;
                continue;
            }
            let end = (k..bufs.len()).find(|&j| kept[j]).unwrap_or(bufs.len());
            fetch(&mut bufs[k..end], first + k as u64)?;
            for (i, b) in (first + k as u64..).zip(&bufs[k..end]) {
                disk.put(i, b);
            }
            k = end;
        }
        Ok(())
    }
}
