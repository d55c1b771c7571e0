//! The pieces of the disk queued, being decoded, or decoded and not yet read, and the threads
//! that decode them. One lock guards it all; nothing slow happens under it (a decode runs
//! unlocked, on a buffer the piece owns while it is being decoded).

use super::streams::Streams;
use crate::abuse::uapi::ABUSE_MAX_EXTENTS;
use crate::formats::{DiskImage, Extents};
use crate::limits::{READAHEAD_PIECE_BYTES as PIECE, READAHEAD_THREADS};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

enum State {
    Queued,
    Decoding,
    Ready(Vec<u8>),
    /// The decode failed: whoever needs these bytes reads them itself, and gets the error.
    Failed,
}

struct Piece {
    state: State,
    /// Bytes of it readers took: once all were, it is dropped.
    taken: u64,
    /// When it was queued, to drop the oldest first when room is needed.
    born: u64,
}

struct Inner {
    streams: Streams,
    /// By piece index (offset / PIECE).
    map: HashMap<u64, Piece>,
    queue: VecDeque<u64>,
    spare: Vec<Vec<u8>>,
    threads: usize,
    /// Threads could not be started: no prefetching.
    no_threads: bool,
    closed: bool,
    clock: u64,
}

pub struct Pieces {
    disk: Arc<dyn DiskImage>,
    size: u64,
    /// Most pieces held, whatever their state.
    most: usize,
    /// Decoding threads to start.
    threads: usize,
    inner: Mutex<Inner>,
    /// A piece finished decoding.
    decoded: Condvar,
    /// A piece was queued, or the image closed.
    queued: Condvar,
    /// Bytes decoded by the threads, and bytes readers took from them (for tests and benches).
    decoded_bytes: AtomicU64,
    taken_bytes: AtomicU64,
}

/// What `take` did.
pub enum Take {
    /// The bytes came from a decoded piece.
    Copied,
    /// There was none: the caller reads them.
    Absent,
}

impl Pieces {
    pub fn new(disk: Arc<dyn DiskImage>, most: usize, streams: usize, threads: usize) -> Arc<Pieces> {
        Arc::new(Pieces {
            size: disk.virtual_size(),
            disk,
            most: most.max(1),
            threads: threads.clamp(1, READAHEAD_THREADS),
            inner: Mutex::new(Inner {
                streams: Streams::new(streams),
                map: HashMap::new(),
                queue: VecDeque::new(),
                spare: Vec::new(),
                threads: 0,
                no_threads: false,
                closed: false,
                clock: 0,
            }),
            decoded: Condvar::new(),
            queued: Condvar::new(),
            decoded_bytes: AtomicU64::new(0),
            taken_bytes: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not stop reads: the state stays consistent between statements.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// See `Streams::note`.
    pub fn note(&self, offset: u64, len: u64) -> bool {
        self.lock().streams.note(offset, len)
    }

    /// The length of piece `index` (the last one ends at the disk's end), 0 past the end.
    fn piece_len(&self, index: u64) -> u64 {
        self.size.saturating_sub(index.saturating_mul(PIECE)).min(PIECE)
    }

    /// Queues pieces `from .. from + count` that are not held yet, as room allows.
    pub fn prefetch(self: &Arc<Self>, from: u64, count: u64) {
        let mut g = self.lock();
        if g.no_threads || g.closed {
            return;
        }
        let mut queued = false;
        for index in from..from.saturating_add(count) {
            if self.piece_len(index) == 0 {
                break;
            }
            if g.map.contains_key(&index) {
                continue;
            }
            if g.map.len() >= self.most && !drop_stale(&mut g, self.most as u64) {
                break;
            }
            g.clock += 1;
            let born = g.clock;
            g.map.insert(index, Piece { state: State::Queued, taken: 0, born });
            g.queue.push_back(index);
            queued = true;
        }
        if queued {
            self.start_threads(&mut g);
            self.queued.notify_all();
        }
    }

    /// Copies the bytes at `pos` (all within one piece) into `out` if that piece is held,
    /// waiting for it if it is being decoded; a queued piece is dropped (the caller reads it
    /// now, so no thread should decode it too).
    pub fn take(&self, pos: u64, out: &mut [u8]) -> Take {
        let index = pos / PIECE;
        let mut g = self.lock();
        loop {
            let Some(p) = g.map.get_mut(&index) else { return Take::Absent };
            match &p.state {
                State::Decoding => g = self.decoded.wait(g).unwrap_or_else(|p| p.into_inner()),
                State::Queued => {
                    g.map.remove(&index);
                    return Take::Absent;
                }
                State::Failed => {
                    p.taken += out.len() as u64;
                    self.drop_if_taken(&mut g, index);
                    return Take::Absent;
                }
                State::Ready(bytes) => {
                    let at = (pos - index * PIECE) as usize;
                    out.copy_from_slice(&bytes[at..at + out.len()]);
                    p.taken += out.len() as u64;
                    self.drop_if_taken(&mut g, index);
                    self.taken_bytes.fetch_add(out.len() as u64, Ordering::Relaxed);
                    return Take::Copied;
                }
            }
        }
    }

    fn drop_if_taken(&self, g: &mut Inner, index: u64) {
        if g.map.get(&index).is_some_and(|p| p.taken >= self.piece_len(index)) {
            if let Some(Piece { state: State::Ready(buf), .. }) = g.map.remove(&index) {
                g.spare.push(buf);
            }
        }
    }

    /// Starts the decoding threads on the first prefetch. If none can be started, prefetching
    /// stops.
    fn start_threads(self: &Arc<Self>, g: &mut Inner) {
        while g.threads < self.threads {
            let me = self.clone();
            // Unnamed: naming a thread is one more system call the sandbox would have to allow.
            if std::thread::Builder::new().spawn(move || me.decode_loop()).is_err() {
                break;
            }
            g.threads += 1;
        }
        if g.threads == 0 {
            g.no_threads = true;
            g.map.clear();
            g.queue.clear();
        }
    }

    /// A decoding thread: takes the oldest queued piece, decodes it unlocked, publishes it.
    fn decode_loop(self: Arc<Self>) {
        let mut g = self.lock();
        loop {
            if g.closed {
                return;
            }
            let Some(index) = g.queue.pop_front() else {
                g = self.queued.wait(g).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            // Dropped or taken over by a reader since it was queued.
            let Some(p) = g.map.get_mut(&index).filter(|p| matches!(p.state, State::Queued)) else { continue };
            p.state = State::Decoding;
            let len = self.piece_len(index) as usize;
            drop(g);
            // Data stored as is gains nothing from being read here: the reader reads it into
            // its own buffer (or the kernel does), one copy fewer.
            if describable(&*self.disk, index * PIECE, len as u64) {
                g = self.lock();
                g.map.remove(&index);
                self.decoded.notify_all();
                continue;
            }
            let mut buf = self.lock().spare.pop().unwrap_or_default();
            buf.resize(len, 0);
            // A reader that panics fails the piece rather than leaving its waiters waiting.
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.disk.read_at(&mut buf, index * PIECE)));
            let ok = matches!(result, Ok(Ok(())));
            if ok {
                self.decoded_bytes.fetch_add(len as u64, Ordering::Relaxed);
            }
            g = self.lock();
            if let Some(p) = g.map.get_mut(&index) {
                p.state = if ok { State::Ready(buf) } else { State::Failed };
            }
            self.decoded.notify_all();
        }
    }

    /// Bytes the threads decoded, and bytes readers took from them.
    pub fn stats(&self) -> (u64, u64) {
        (self.decoded_bytes.load(Ordering::Relaxed), self.taken_bytes.load(Ordering::Relaxed))
    }

    /// The image is dropped: the threads end once their current piece is done.
    pub fn close(&self) {
        let mut g = self.lock();
        g.closed = true;
        g.map.clear();
        g.queue.clear();
        self.queued.notify_all();
    }
}

/// Whether `disk` can describe these bytes as extents (stored as is, or zeros): then there is
/// nothing to decode.
pub fn describable(disk: &dyn DiskImage, offset: u64, len: u64) -> bool {
    thread_local! {
        static EXTENTS: std::cell::RefCell<Extents> = std::cell::RefCell::new(Extents::new(ABUSE_MAX_EXTENTS as usize));
    }
    EXTENTS.with(|e| {
        let mut e = e.borrow_mut();
        e.clear();
        matches!(disk.map(offset, len, &mut e), Ok(true))
    })
}

/// Makes room for one piece by dropping the oldest one that is decoded (or failed) and was
/// queued before the last `2 * most` pieces: its reader has moved on or stopped. Newer ones
/// are kept for the readers about to take them (dropping those would only decode them twice).
fn drop_stale(g: &mut Inner, most: u64) -> bool {
    let oldest = g
        .map
        .iter()
        .filter(|(_, p)| matches!(p.state, State::Ready(_) | State::Failed) && p.born + 2 * most < g.clock)
        .min_by_key(|(_, p)| p.born)
        .map(|(&i, _)| i);
    match oldest.and_then(|i| g.map.remove(&i)) {
        Some(Piece { state: State::Ready(buf), .. }) => {
            g.spare.push(buf);
            true
        }
        Some(_) => true,
        None => false,
    }
}
