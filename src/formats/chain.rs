//! A backing chain on the way down: the layers opened so far, the depth limit, the loop check
//! and the confinement of the files images name.

use super::failed::FailedLayer;
use super::{DiskImage, Format, OpenOptions};
use crate::error::{Error, Result};
use crate::limits::MAX_CHAIN_DEPTH;
use crate::source::confine::resolve_beside;
use crate::source::file::ImageFile;
use crate::source::Confinement;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The images opened so far on the way down a backing chain, top first, and the rules for the
/// files they name.
#[derive(Clone)]
pub struct Chain {
    pub paths: Vec<PathBuf>,
    /// Device and inode of each layer: a chain that comes back to a file under another name
    /// (a hard link, a symlink, "sub/../x") is a loop too.
    inodes: Vec<(u64, u64)>,
    pub confine: Arc<Confinement>,
    /// Opens one layer of any format (`open::open_layer`): handed down rather than called by
    /// name, so the readers, which open their parents through it, do not depend on the place
    /// that knows every reader.
    open_layer: OpenLayer,
}

/// Detects a layer's format (or takes the one given) and opens it with its reader.
pub type OpenLayer = fn(ImageFile, Option<Format>, &Chain, &OpenOptions) -> Result<Arc<dyn DiskImage>>;

impl Chain {
    /// The chain of a top image: no layer opened yet.
    pub fn new(confine: Confinement, open_layer: OpenLayer) -> Chain {
        Chain { paths: Vec::new(), inodes: Vec::new(), confine: Arc::new(confine), open_layer }
    }

    /// The chain with `file` added as its next layer, or an error if `file` is already in it.
    pub fn enter(&self, file: &ImageFile) -> Result<Chain> {
        let path = file.path.clone();
        if let Some(inode) = file.inode() {
            if self.inodes.contains(&inode) {
                return Err(Error::Refused {
                    path: self.child().to_path_buf(),
                    msg: format!("its backing chain loops back on itself: {}", self.describe(&path)),
                });
            }
        }
        // A remote layer has no inode: the same URL twice is the loop.
        if file.is_remote() && self.paths.contains(&path) {
            return Err(Error::Refused {
                path: self.child().to_path_buf(),
                msg: format!("its backing chain loops back on itself: {}", self.describe(&path)),
            });
        }
        let mut chain = self.clone();
        chain.paths.push(path.clone());
        chain.inodes.extend(file.inode());
        Ok(chain)
    }

    fn describe(&self, last: &Path) -> String {
        let mut names: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
        names.push(last.display().to_string());
        names.join(" -> ")
    }

    /// The layer the next one is opened for.
    fn child(&self) -> &Path {
        self.paths.last().map_or(Path::new(""), |p| p.as_path())
    }
}

/// Opens the backing file (or parent) `name` of the image `child`, which is the last entry of
/// `chain`. A relative `name` is taken relative to the child's folder, never the working
/// directory; the file must be where the chain's confinement allows. `format` is the format the
/// child recorded, if it did.
pub fn open_backing(
    child: &Path,
    name: &Path,
    format: Option<Format>,
    chain: &Chain,
    opts: &OpenOptions,
) -> Result<Arc<dyn DiskImage>> {
    open_backing_with(child, name, || chain.confine.open(child, name, "backing file"), format, chain, opts)
}

/// `open_backing` of the file `open` gives: one found by `first_present`, already opened.
pub fn open_backing_with(
    child: &Path,
    name: &Path,
    open: impl FnOnce() -> Result<ImageFile>,
    format: Option<Format>,
    chain: &Chain,
    opts: &OpenOptions,
) -> Result<Arc<dyn DiskImage>> {
    let opened = if chain.paths.len() >= MAX_CHAIN_DEPTH {
        Err(Error::Refused {
            path: chain.paths[0].clone(),
            msg: format!(
                "its backing chain is more than {MAX_CHAIN_DEPTH} images deep; the image is corrupt or hostile"
            ),
        })
    } else {
        open().and_then(|file| (chain.open_layer)(file, format, chain, opts).map_err(|e| e.in_layer_of(child)))
    };
    match opened {
        Err(e) if opts.describe_failed_layers => Ok(Arc::new(FailedLayer::new(resolve_beside(child, name), e))),
        r => r,
    }
}

/// The first of `names` (as the image `child` gives them) that something is at, opened through
/// the chain's confinement (or why it could not be), for readers that try several recorded
/// parent names; None when nothing is at any. Probing by opening makes a remote parent cost one
/// request, not a probe and then an open.
pub fn first_present<'a>(
    child: &Path,
    names: impl IntoIterator<Item = &'a PathBuf>,
    chain: &Chain,
) -> Option<(&'a PathBuf, Result<ImageFile>)> {
    for name in names {
        match chain.confine.open_if_present(child, name, "backing file") {
            Ok(None) => continue,
            Ok(Some(file)) => return Some((name, Ok(file))),
            Err(e) => return Some((name, Err(e))),
        }
    }
    None
}
