//! A Parallels expanding image: the header, a BAT of 32-bit entries held in memory (one per
//! cluster; zero: not in this image), and clusters stored as-is. In a bundle, a snapshot image's
//! unallocated clusters are its parent's (`below`); alone, they read as zeros.

use super::header::{describe_extension, read_header, Header, HEADER_LEN};
use crate::error::{Error, Result};
use crate::formats::layer::{Layer, LayerImage, Source};
use crate::formats::{DiskImage, ImageInfo, OpenOptions};
use crate::limits::MAX_TABLE_BYTES;
use crate::source::file::ImageFile;
use std::path::Path;
use std::sync::Arc;

pub struct ExpandingImage {
    file: ImageFile,
    header: Header,
    /// The BAT entries that cover the virtual size (the rest are never looked up).
    bat: Vec<u32>,
    below: Option<Arc<dyn DiskImage>>,
    extension: Option<String>,
}

impl ExpandingImage {
    pub fn open(file: ImageFile, below: Option<Arc<dyn DiskImage>>, opts: &OpenOptions) -> Result<ExpandingImage> {
        let header = read_header(&file)?;
        let used = header.virtual_size().div_ceil(header.cluster_size()).min(u64::from(header.bat_entries));
        // Held as u32s beside the bytes while converting: take both from the budget.
        opts.budget.take(&file.path, "the Parallels BAT", used * 8)?;
        let raw = file.read_vec(HEADER_LEN, used * 4, MAX_TABLE_BYTES, "the Parallels BAT")?;
        let bat = raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let extension = describe_extension(&file, &header);
        Ok(ExpandingImage { file, header, bat, below, extension })
    }

    /// Where cluster `index` is stored: None if not in this image; Err says why an entry
    /// cannot be used.
    fn cluster(&self, index: u64) -> std::result::Result<Option<u64>, String> {
        let entry = usize::try_from(index).ok().and_then(|i| self.bat.get(i)).copied().unwrap_or(0);
        if entry == 0 {
            return Ok(None);
        }
        let at = u64::from(entry) * self.header.bat_unit();
        if at < self.header.data_start {
            Err(format!(
                "BAT entry {index} ({entry}) points to offset {at}, before the data area (from offset {})",
                self.header.data_start
            ))
        } else if at >= self.file.size {
            Err(format!(
                "BAT entry {index} ({entry}) points to offset {at}, past the end of the file ({} bytes)",
                self.file.size
            ))
        } else {
            Ok(Some(at))
        }
    }
}

impl Layer for ExpandingImage {
    fn path(&self) -> &Path {
        &self.file.path
    }
    fn size(&self) -> u64 {
        self.header.virtual_size()
    }
    fn lookup(&self, pos: u64, max: u64) -> Result<(Source<'_>, u64)> {
        let c = self.header.cluster_size();
        let mut index = pos / c;
        let first = self
            .cluster(index)
            .map_err(|why| Error::corrupt(&self.file.path, format!("{why}; the image is corrupt")))?;
        // Extend the run over following clusters that continue it; a bad entry ends the run and
        // is reported when it is looked up itself.
        let mut len = c - pos % c;
        let mut last = first;
        while len < max {
            index += 1;
            if last.is_none() && index >= self.bat.len() as u64 {
                // No entries past the BAT: the rest of the disk is not in this image.
                len = max;
                break;
            }
            match (last, self.cluster(index)) {
                (None, Ok(None)) => {}
                (Some(a), Ok(Some(b))) if a + c == b => last = Some(b),
                _ => break,
            }
            len += c;
        }
        let source = match first {
            None => Source::Below,
            Some(at) => Source::Data { file: &self.file, offset: at + pos % c },
        };
        Ok((source, len.min(max)))
    }
    fn below(&self) -> Option<&Arc<dyn DiskImage>> {
        self.below.as_ref()
    }
}

impl LayerImage for ExpandingImage {
    fn describe(&self) -> ImageInfo {
        let h = &self.header;
        let version = if h.v2 {
            "WithouFreSpacExt (BAT entries in clusters)"
        } else {
            "WithoutFreeSpace (BAT entries in sectors)"
        };
        let mut details = vec![
            ("signature".to_string(), version.to_string()),
            ("BAT".to_string(), format!("{} entries at offset {HEADER_LEN}", h.bat_entries)),
            ("data area".to_string(), format!("from offset {}", h.data_start)),
            ("geometry".to_string(), format!("{} cylinders, {} heads", h.cylinders, h.heads)),
            ("in use".to_string(), h.in_use_text()),
        ];
        if h.flags != 0 {
            details.push(("flags".into(), format!("{:#x} (ignored, as qemu does)", h.flags)));
        }
        if let Some(ext) = &self.extension {
            details.push(("format extension".into(), ext.clone()));
        }
        ImageInfo {
            path: self.file.path.clone(),
            format: "parallels".into(),
            virtual_size: h.virtual_size(),
            cluster_size: Some(h.cluster_size()),
            logical_sector_size: 512,
            features: if h.dirty() { vec!["dirty".into()] } else { Vec::new() },
            details,
            backing: self.below.as_ref().map(|b| Box::new(b.info())),
            error: None,
        }
    }
}
