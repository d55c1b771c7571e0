//! For the extent header tests (KDMV, seSparse, COWD): `bytes` opened as an extent.

use crate::cache::Cache;
use crate::error::Result;
use crate::source::file::{refused, test_file, ImageFile};
use std::sync::Arc;

/// What `open` (an extent constructor) makes of `bytes`, written to a temporary file.
pub fn open_extent<T>(bytes: &[u8], open: fn(ImageFile, Arc<Cache>) -> Result<T>) -> Result<T> {
    let (_tmp, file) = test_file(bytes);
    open(file, Cache::new(1 << 20))
}

/// The message `open` refuses `bytes` with.
pub fn extent_refusal<T>(bytes: &[u8], open: fn(ImageFile, Arc<Cache>) -> Result<T>) -> String {
    refused(open_extent(bytes, open))
}
