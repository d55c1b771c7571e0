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
