//! Reading a reader's tables through the shared cache: the cache knows keys and loaders, the
//! file knows its id and how to read; this puts the two together.

use crate::cache::{Cache, Key, Kind};
use crate::error::Result;
use crate::source::file::ImageFile;
use std::sync::Arc;

/// The `len`-byte structure `what` (a table, a bitmap) at `offset` in `file`: read once,
/// checked against `limit` and the file's size, then served from `cache`.
pub fn load_table(
    cache: &Cache,
    file: &ImageFile,
    kind: Kind,
    offset: u64,
    len: u64,
    limit: u64,
    what: &str,
) -> Result<Arc<[u8]>> {
    cache.get_or_load(Key { file: file.id, kind, offset }, || file.read_vec(offset, len, limit, what))
}

/// Fills `out`, exactly one whole cluster, with the decompressed cluster `key`: from the cache if
/// it holds the whole of it, else `decompress(input, output)` into per-thread buffers, without
/// filling the cache with clusters a sequential reader will not read again. `output` is one
/// byte longer than a cluster (to tell over-long output from exact); `decompress` returns how
/// many bytes it produced, at most a cluster; the rest of `out` reads as zeros. False if the
/// cache holds only a prefix: the caller then reads through the cache.
pub fn whole_cluster(
    cache: &Cache,
    key: Key,
    out: &mut [u8],
    decompress: impl FnOnce(&mut Vec<u8>, &mut [u8]) -> Result<usize>,
) -> Result<bool> {
    if let Some(cached) = cache.get(&key) {
        if cached.len() != out.len() {
            return Ok(false);
        }
        out.copy_from_slice(&cached);
        return Ok(true);
    }
    // No allocation per cluster: clusters and their compressed input are at most a few MiB.
    thread_local! {
        static SCRATCH: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    }
    SCRATCH.with(|cell| {
        let (input, cluster) = &mut *cell.borrow_mut();
        cluster.resize(out.len() + 1, 0);
        let n = decompress(input, cluster)?.min(out.len());
        out[..n].copy_from_slice(&cluster[..n]);
        out[n..].fill(0);
        Ok(true)
    })
}
