//! A backing layer that could not be opened, kept in the chain so `vdmount info` can show every
//! layer and, for this one, why (`OpenOptions::describe_failed_layers`). Reading it fails.

use super::{DiskImage, ImageInfo};
use crate::error::{Error, Result};
use std::path::PathBuf;

pub struct FailedLayer {
    path: PathBuf,
    why: String,
}

impl FailedLayer {
    pub fn new(path: PathBuf, error: Error) -> FailedLayer {
        FailedLayer { path, why: error.to_string() }
    }
}

impl DiskImage for FailedLayer {
    fn virtual_size(&self) -> u64 {
        0
    }

    fn read_at(&self, _buf: &mut [u8], _offset: u64) -> Result<()> {
        Err(Error::Unsupported { path: self.path.clone(), msg: self.why.clone() })
    }

    fn info(&self) -> ImageInfo {
        ImageInfo {
            path: self.path.clone(),
            format: "not opened".into(),
            error: Some(self.why.clone()),
            ..Default::default()
        }
    }
}
