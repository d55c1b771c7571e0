//! Raw images: the file's bytes are the disk's bytes.

use super::{clamp_to_size, len_inside, DiskImage, Extent, Extents, ImageInfo};
use crate::error::Result;
use crate::source::file::ImageFile;

pub struct RawImage {
    file: ImageFile,
}

impl RawImage {
    pub fn new(file: ImageFile) -> RawImage {
        RawImage { file }
    }
}

impl DiskImage for RawImage {
    fn virtual_size(&self) -> u64 {
        self.file.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let n = clamp_to_size(buf, offset, self.file.size);
        self.file.read_data_at(&mut buf[..n], offset)
    }

    fn map(&self, offset: u64, len: u64, out: &mut Extents) -> Result<bool> {
        let n = len_inside(offset, len, self.file.size);
        Ok(self.file.map_data(offset, n, out) && out.push(Extent::Zero { len: len - n }))
    }

    fn info(&self) -> ImageInfo {
        ImageInfo {
            path: self.file.path.clone(),
            format: "raw".into(),
            virtual_size: self.file.size,
            logical_sector_size: 512,
            details: vec![("note".into(), "no known signature: the file's bytes are the disk's bytes".into())],
            ..Default::default()
        }
    }
}
