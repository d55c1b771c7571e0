//! A layer whose bytes are read by ranges over the network: http(s):// URLs, presigned ones
//! included, and s3://bucket/key. `ImageFile` reads through this when its name is a URL, so
//! no format reader knows the difference. Large reads are split into pieces fetched in
//! parallel over the client's pool; sequential reads are served by a read-ahead that
//! background threads keep filled (readahead.rs).

mod disk_cache;
pub mod http;
mod listing;
mod readahead;
mod resolver;
pub mod s3;
pub mod url;

use crate::limits::{REMOTE_PARALLEL, REMOTE_PIECE_BYTES};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub use http::{configure, ClientOptions};
pub use listing::list_folder;
pub use url::is_url;

/// Set once any remote layer is opened: the sandbox then lets the server use the network.
static IN_USE: AtomicBool = AtomicBool::new(false);

/// For the sandbox's tests: as if a remote layer were open.
#[cfg(test)]
pub fn mark_in_use() {
    IN_USE.store(true, Ordering::Relaxed);
}

/// True when this process reads a remote layer.
pub fn in_use() -> bool {
    IN_USE.load(Ordering::Relaxed)
}

enum Target {
    Http(String),
    S3(Box<s3::S3Object>),
}

/// What a fetch needs: shared with the read-ahead's background threads.
pub(crate) struct Object {
    /// As the user or the image named it (the name in every message).
    url: String,
    target: Target,
    size: u64,
    /// The ETag at open: a later answer with another one means the object changed.
    etag: Option<String>,
    agent: &'static ureq::Agent,
}

pub struct Remote {
    /// As the user or the image named it (the name in every message).
    pub url: String,
    pub size: u64,
    object: Arc<Object>,
    /// Windows fetched ahead of sequential reads, by background threads.
    ahead: readahead::Readahead,
    /// `--cache-dir`: chunks kept on disk (then reads go through it, by whole chunks; the
    /// read-ahead's threads fill it too).
    disk: Option<Arc<disk_cache::DiskCache>>,
}

impl Remote {
    /// Opens `url`: asks for its first byte to learn its size and check that the server
    /// answers ranges.
    pub fn open(url: &str) -> Result<Remote, String> {
        Remote::open_or_missing(url).map_err(|(why, _)| why)
    }

    /// `open`, but None when the server says the object is not there (404, 410), so that one
    /// request both probes for a file and opens it.
    pub fn open_if_present(url: &str) -> Result<Option<Remote>, String> {
        match Remote::open_or_missing(url) {
            Ok(r) => Ok(Some(r)),
            Err((_, true)) => Ok(None),
            Err((why, false)) => Err(why),
        }
    }

    /// `open`, its error paired with whether it was the server's not-found.
    fn open_or_missing(url: &str) -> Result<Remote, (String, bool)> {
        let not_missing = |why: String| (why, false);
        let target = if url::has_prefix(url, "s3://") {
            Target::S3(Box::new(s3::S3Object::new(url).map_err(not_missing)?))
        } else {
            url::folder(url).map_err(not_missing)?;
            Target::Http(url.to_string())
        };
        let agent = http::agent().map_err(not_missing)?;
        IN_USE.store(true, Ordering::Relaxed);
        let mut object = Object { url: url.to_string(), target, size: 0, etag: None, agent };
        let mut one = [0u8; 1];
        let mut missing = false;
        let answer = http::with_retries(url, || {
            let answer = http::get_range(agent, &object.request_url(), 0, &mut [&mut one[..]]);
            missing = matches!(answer, Err(http::Failure::NotFound(_)));
            answer
        });
        let answer = answer.map_err(|why| (why, missing))?;
        object.size = answer.total;
        object.etag = answer.etag;
        let disk = match http::cache_dir() {
            Some(dir) => {
                let id = format!("{} {} {:?}", url.split('?').next().unwrap_or(url), object.size, object.etag);
                Some(Arc::new(disk_cache::DiskCache::open(&dir, &id, object.size).map_err(not_missing)?))
            }
            None => None,
        };
        let object = Arc::new(object);
        Ok(Remote {
            url: url.to_string(),
            size: object.size,
            ahead: readahead::Readahead::new(object.clone(), disk.clone()),
            object,
            disk,
        })
    }

    /// Reads exactly `buf.len()` bytes at `offset`, which the caller has checked lie inside.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), String> {
        if buf.is_empty() {
            return Ok(());
        }
        // What the disk cache holds is read from it straight away (no thread in between).
        if self.disk.as_ref().is_some_and(|disk| from_disk(disk, buf, offset)) {
            return Ok(());
        }
        // Sequential reads come from the read-ahead (which reads and fills the disk cache); the
        // rest asks for exactly what it reads, or goes through the disk cache by whole chunks.
        if self.ahead.read(buf, offset)? {
            return Ok(());
        }
        match &self.disk {
            Some(disk) => self.read_through(disk, buf, offset),
            None => self.object.fetch(buf, offset),
        }
    }

    /// Reads through the on-disk cache: whole chunks, those it lacks fetched (runs of them
    /// at once, in parallel pieces) and kept.
    fn read_through(&self, disk: &disk_cache::DiskCache, buf: &mut [u8], offset: u64) -> Result<(), String> {
        use disk_cache::CHUNK;
        let (first, last) = (offset / CHUNK, (offset + buf.len() as u64 - 1) / CHUNK);
        let start = first * CHUNK;
        let end = (last + 1) * CHUNK;
        let mut all = vec![0u8; (end.min(self.size) - start) as usize];
        let mut missing: Option<u64> = None;
        for n in first..=last + 1 {
            let have = n <= last && {
                let at = ((n - first) * CHUNK) as usize;
                let len = disk.chunk_len(n);
                disk.get(n, &mut all[at..at + len])
            };
            match (have || n > last, missing) {
                (false, None) => missing = Some(n),
                (true, Some(m)) => {
                    // Chunks m..n are missing: one fetch for the run, then kept chunk by chunk.
                    let (from, to) = (((m - first) * CHUNK) as usize, ((n - first) * CHUNK) as usize);
                    let to = to.min(all.len());
                    let run = &mut all[from..to];
                    self.object.fetch(run, m * CHUNK)?;
                    for (i, chunk) in run.chunks(CHUNK as usize).enumerate() {
                        disk.put(m + i as u64, chunk);
                    }
                    missing = None;
                }
                _ => {}
            }
        }
        let at = (offset - start) as usize;
        buf.copy_from_slice(&all[at..at + buf.len()]);
        Ok(())
    }
}

/// Fills `buf` from the disk cache alone; false if it lacks one of the chunks.
fn from_disk(disk: &disk_cache::DiskCache, buf: &mut [u8], offset: u64) -> bool {
    use disk_cache::CHUNK;
    let end = offset + buf.len() as u64;
    for n in offset / CHUNK..=(end - 1) / CHUNK {
        let (start, len) = (n * CHUNK, disk.chunk_len(n));
        if offset <= start && start + len as u64 <= end {
            // A whole chunk of `buf`: read in place.
            let at = (start - offset) as usize;
            if !disk.get(n, &mut buf[at..at + len]) {
                return false;
            }
            continue;
        }
        let mut chunk = vec![0u8; len];
        if !disk.get(n, &mut chunk) {
            return false;
        }
        let (from, to) = (offset.max(start), end.min(start + len as u64));
        buf[(from - offset) as usize..(to - offset) as usize]
            .copy_from_slice(&chunk[(from - start) as usize..(to - start) as usize]);
    }
    true
}

impl Object {
    fn request_url(&self) -> String {
        match &self.target {
            Target::Http(u) => u.clone(),
            Target::S3(o) => o.signed_url(),
        }
    }

    /// Fetches `buf` in pieces of at most REMOTE_PIECE_BYTES, up to REMOTE_PARALLEL at once.
    fn fetch(&self, buf: &mut [u8], offset: u64) -> Result<(), String> {
        let piece = REMOTE_PIECE_BYTES as usize;
        if buf.len() <= piece {
            return self.fetch_one(buf, offset);
        }
        let pieces: Vec<(u64, &mut [u8])> =
            buf.chunks_mut(piece).enumerate().map(|(i, c)| (offset + (i * piece) as u64, c)).collect();
        let queue = Mutex::new(pieces);
        let failed: Mutex<Option<String>> = Mutex::new(None);
        let threads = REMOTE_PARALLEL.min(queue.lock().map_or(1, |q| q.len()));
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                    let Some((at, chunk)) = next else { break };
                    if let Err(e) = self.fetch_one(chunk, at) {
                        failed.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                        break;
                    }
                });
            }
        });
        failed.into_inner().unwrap_or_else(|e| e.into_inner()).map_or(Ok(()), Err)
    }

    /// One range request, retried; an answer about another object (size, ETag) is an error.
    fn fetch_one(&self, buf: &mut [u8], offset: u64) -> Result<(), String> {
        self.fetch_into(&mut [buf], offset)
    }

    /// One range request for `bufs` one after the other, as `fetch_one`.
    fn fetch_into(&self, bufs: &mut [&mut [u8]], offset: u64) -> Result<(), String> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        let what = format!("{} bytes {}-{}", self.url, offset, offset + len as u64 - 1);
        http::with_retries(&what, || {
            let answer = http::get_range(self.agent, &self.request_url(), offset, bufs)?;
            if answer.total != self.size || (self.etag.is_some() && answer.etag != self.etag) {
                return Err(http::Failure::Fatal(format!(
                    "the file changed on the server while being read (size {} now {}, ETag {:?} now {:?})",
                    self.size, answer.total, self.etag, answer.etag
                )));
            }
            Ok(())
        })
    }
}
