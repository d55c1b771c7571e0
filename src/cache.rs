//! The cache every reader shares: metadata tables (qcow2 L2 tables, VMDK grain tables, VHD and
//! VHDX bitmaps) and decompressed clusters, bounded in bytes, least recently used out first.
//!
//! quick_cache is used rather than a Mutex<lru::LruCache>: it is sharded (the server's worker
//! threads do not serialise on one lock), weighs entries in bytes, and lets only one thread load
//! a missing entry while the others wait for it.

use crate::error::Result;
use quick_cache::sync::Cache as QuickCache;
use quick_cache::Weighter;
use std::sync::Arc;

/// What kind of thing an entry is, so two kinds at the same file offset never collide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Table,
    /// A piece of a directory of tables (VMDK grain directories), which a hostile file may
    /// place where a table is.
    Directory,
    Cluster,
    Bitmap,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// Id of the file the entry was read from: each reader's files give their own, unique in
    /// the process (`ImageFile::id`).
    pub file: u64,
    pub kind: Kind,
    /// Byte offset in that file (or any number unique to the entry within the file and kind).
    pub offset: u64,
}

#[derive(Clone)]
struct ByteWeighter;

impl Weighter<Key, Arc<[u8]>> for ByteWeighter {
    fn weight(&self, _key: &Key, val: &Arc<[u8]>) -> u64 {
        // Count a fixed overhead so that many tiny entries cannot exceed the bound either.
        val.len() as u64 + 64
    }
}

pub struct Cache {
    inner: QuickCache<Key, Arc<[u8]>, ByteWeighter>,
}

/// Default size: enough for the L2 tables of a multi-terabyte qcow2 and a few hundred
/// decompressed clusters.
pub const DEFAULT_CACHE_BYTES: u64 = 256 << 20;

impl Cache {
    pub fn new(max_bytes: u64) -> Arc<Cache> {
        // quick_cache wants an estimate of the entry count; 64 KiB is a typical entry.
        let items = (max_bytes / 65536).clamp(16, 1 << 20) as usize;
        Arc::new(Cache { inner: QuickCache::with_weighter(items, max_bytes.max(1 << 16), ByteWeighter) })
    }

    /// For compressed clusters, which a random 4 KiB read needs only the start of (a deflate or
    /// zstd stream cannot be entered in the middle, but can stop early): the entry for `key` if
    /// it holds at least `need` bytes. Otherwise `load(len)` decompresses `len` bytes: the
    /// prefix this read needs (rounded up to 4 KiB) the first time, the `full` cluster if a
    /// shorter prefix was there already, so no cluster is decompressed more than twice. The new
    /// entry replaces the old.
    pub fn get_prefix_or_load(
        &self,
        key: Key,
        need: usize,
        full: usize,
        load: impl FnOnce(usize) -> Result<Vec<u8>>,
    ) -> Result<Arc<[u8]>> {
        let shorter = match self.inner.get(&key) {
            Some(v) if v.len() >= need => return Ok(v),
            Some(_) => true,
            None => false,
        };
        let len = if shorter { full } else { need.next_multiple_of(4096).min(full) };
        let v: Arc<[u8]> = Arc::from(load(len)?);
        self.inner.insert(key, v.clone());
        Ok(v)
    }

    /// The entry for `key`, loaded by `load` if it is not cached. Concurrent callers for the same
    /// key wait for one load instead of each doing it. A failed load is not cached.
    pub fn get_or_load(&self, key: Key, load: impl FnOnce() -> Result<Vec<u8>>) -> Result<Arc<[u8]>> {
        self.inner.get_or_insert_with(&key, || load().map(Arc::from))
    }

    /// The entry for `key` if it is cached; never loads. For readers that can do without
    /// caching (a whole compressed cluster read straight into the caller's buffer).
    pub fn get(&self, key: &Key) -> Option<Arc<[u8]>> {
        self.inner.get(key)
    }

    /// Bytes held now (for `info --verbose` and the memory tests).
    pub fn weight(&self) -> u64 {
        self.inner.weight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_loaded_first_and_the_whole_cluster_at_most_once_after() {
        let cache = Cache::new(1 << 20);
        let key = Key { file: 1, kind: Kind::Cluster, offset: 0 };
        let mut loads = Vec::new();
        let mut get = |need: usize| {
            cache
                .get_prefix_or_load(key, need, 65536, |len| {
                    loads.push(len);
                    Ok(vec![7u8; len])
                })
                .unwrap()
                .len()
        };
        assert_eq!(get(100), 4096); // rounded up to 4 KiB
        assert_eq!(get(4096), 4096); // served from the cache
        assert_eq!(get(5000), 65536); // more than the prefix: the whole cluster, not a longer prefix
        assert_eq!(get(65536), 65536);
        assert_eq!(get(1), 65536);
        assert_eq!(loads, vec![4096, 65536]);
    }
}
