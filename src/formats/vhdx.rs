//! Placeholder while the vhdx reader is written: refuses every image.

use super::image_file::ImageFile;
use super::{Chain, DiskImage, ImageInfo, OpenOptions};
use crate::error::{Error, Result};

pub struct VhdxImage;

impl VhdxImage {
    pub fn open(file: ImageFile, _chain: &Chain, _opts: &OpenOptions) -> Result<VhdxImage> {
        Err(Error::unsupported(&file.path, "vhdx images are not readable yet by this version of vdmount"))
    }
}

impl DiskImage for VhdxImage {
    fn virtual_size(&self) -> u64 {
        0
    }
    fn read_at(&self, _buf: &mut [u8], _offset: u64) -> Result<()> {
        unreachable!()
    }
    fn info(&self) -> ImageInfo {
        unreachable!()
    }
}
