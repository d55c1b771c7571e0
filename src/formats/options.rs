//! What the user asked for when opening an image, shared by every layer of its chain.

use super::Format;
use crate::cache::Cache;
use crate::limits::MemoryBudget;
use std::path::PathBuf;
use std::sync::Arc;

/// How to open an image: what the user asked for, and the cache every layer shares.
#[derive(Clone)]
pub struct OpenOptions {
    /// Force the top image's format instead of detecting it.
    pub format: Option<Format>,
    /// qcow2 internal snapshot, or Parallels bundle snapshot, to expose instead of the live disk.
    pub snapshot: Option<String>,
    /// Open a child whose recorded parent id does not match its parent's.
    pub ignore_parent_id: bool,
    /// Folders beyond the top image's own where files the images name may lie (--allow-dir).
    pub allow_dirs: Vec<PathBuf>,
    /// Follow names an image gives anywhere (--allow-any-path).
    pub allow_any_path: bool,
    /// For `info`: a backing layer that cannot be opened becomes a placeholder saying why,
    /// instead of failing the whole chain.
    pub describe_failed_layers: bool,
    pub cache: Arc<Cache>,
    /// Memory the chain's long-lived tables may take, all layers together.
    pub budget: Arc<MemoryBudget>,
}

impl OpenOptions {
    pub fn new(cache: Arc<Cache>) -> OpenOptions {
        OpenOptions {
            format: None,
            snapshot: None,
            ignore_parent_id: false,
            allow_dirs: Vec::new(),
            allow_any_path: false,
            describe_failed_layers: false,
            cache,
            budget: Arc::new(MemoryBudget::default()),
        }
    }
}
