//! VHDX (MS-VHDX): fixed, dynamic and differencing images, with the log replayed in memory.
//!
//! Open order follows the specification: file identifier, the current of the two headers, the
//! log (replayed into an overlay when the header names one), the region tables, the metadata,
//! the BAT, then the parent of a differencing image.

mod bat;
pub mod guid;
mod header;
mod log;
mod metadata;
mod overlay;
mod parent;
mod region;

use super::layer::{Layer, LayerImage, Source};
use super::{Chain, DiskImage, ImageInfo, LayerId, OpenOptions};
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::source::file::ImageFile;
use bat::{Bat, Payload};
use log::LogState;
use metadata::Metadata;
use overlay::{Overlay, VhdxFile};
use region::Region;
use std::sync::Arc;

pub struct VhdxImage {
    file: VhdxFile,
    cache: Arc<Cache>,
    meta: Metadata,
    bat: Bat,
    parent: Option<Arc<dyn DiskImage>>,
    details: Vec<(String, String)>,
    data_write_guid: guid::Guid,
}

impl VhdxImage {
    pub fn open(file: ImageFile, chain: &Chain, opts: &OpenOptions) -> Result<VhdxImage> {
        let creator = header::read_creator(&file)?;
        let headers = header::read_headers(&file)?;
        let h = &headers.current;
        let log_region = (h.log_length > 0)
            .then(|| {
                h.log_offset
                    .checked_add(h.log_length as u64)
                    .map(|_| Region { offset: h.log_offset, length: h.log_length as u64 })
            })
            .flatten();

        let (overlay, min_size, log_text) = match log::replay(&file, h, &opts.budget)? {
            LogState::Clean => (Overlay::default(), 0, "clean".to_string()),
            LogState::NoActiveSequence => {
                (Overlay::default(), 0, "log GUID set but no valid entry sequence found: nothing to replay".to_string())
            }
            LogState::Replayed(r) => (
                r.overlay,
                r.last_file_offset,
                format!(
                    "replayed {} entr{} (sequence {}..{}) in memory; the file was not changed",
                    r.entries,
                    if r.entries == 1 { "y" } else { "ies" },
                    r.first_sequence,
                    r.last_sequence
                ),
            ),
        };
        let file = VhdxFile::new(file, overlay, min_size);
        let regions = region::read_regions(&file, log_region)?;
        let meta = metadata::read_metadata(&file, regions.metadata)?;
        let bat = Bat::new(&file, regions.bat, &meta)?;
        let parent = if meta.has_parent {
            Some(parent::open_parent(&file.file.path, meta.parent_locator.as_ref(), chain, opts)?)
        } else {
            None
        };

        let kind = if meta.has_parent {
            "differencing"
        } else if meta.leave_blocks_allocated {
            "fixed"
        } else {
            "dynamic"
        };
        let mut details = vec![
            ("type".to_string(), kind.to_string()),
            ("creator".to_string(), if creator.is_empty() { "(empty)".to_string() } else { creator }),
            (
                "physical sector size".to_string(),
                meta.physical_sector_size.map_or("(not recorded)".into(), |s| s.to_string()),
            ),
            ("log".to_string(), log_text),
            ("current header".to_string(), format!("{} (sequence number {})", headers.current_number, h.sequence)),
            ("data write GUID".to_string(), h.data_write_guid.to_string()),
        ];
        if let Some(g) = meta.page83 {
            details.push(("virtual disk id (page 83)".to_string(), g.to_string()));
        }
        if let Some(p) = headers.other_problem {
            details.push(("warning".to_string(), p));
        }
        if let Some(p) = regions.problem {
            details.push(("warning".to_string(), format!("{p}; region table 2 used")));
        }
        if let Some(loc) = &meta.parent_locator {
            for (k, v) in &loc.entries {
                details.push((format!("parent locator {k}"), v.clone()));
            }
        }
        Ok(VhdxImage {
            file,
            cache: opts.cache.clone(),
            meta,
            bat,
            parent,
            details,
            data_write_guid: h.data_write_guid,
        })
    }

    /// For a partially present block: whether the logical sector at `within` is in this file
    /// (its sector bitmap bit set) or the parent's, and how many bytes from there (at most
    /// `max_len`) have the same bit.
    fn bitmap_run(&self, block: u64, within: u64, max_len: u64) -> Result<(bool, u64)> {
        let bitmap = self.bat.sector_bitmap(&self.file, &self.cache, block)?;
        let sector = self.meta.logical_sector_size as u64;
        let bit = |at: u64| {
            let s = (at / sector) as usize;
            bitmap.get(s / 8).is_some_and(|b| b & (1 << (s % 8)) != 0)
        };
        let end = within + max_len;
        let in_child = bit(within);
        let mut run_end = (within / sector + 1) * sector;
        while run_end < end && bit(run_end) == in_child {
            run_end += sector;
        }
        Ok((in_child, run_end.min(end) - within))
    }
}

impl Layer for VhdxImage {
    fn path(&self) -> &std::path::Path {
        &self.file.file.path
    }
    fn size(&self) -> u64 {
        self.meta.virtual_size
    }
    /// Where the disk's bytes from `pos` (below the virtual size) come from, and for how many
    /// bytes (1 to `max_len`). `read_at` and `map` both walk the disk with this, so the two
    /// cannot disagree.
    fn lookup(&self, pos: u64, max_len: u64) -> Result<(Source<'_>, u64)> {
        let block_size = self.bat.block_size;
        let (block, within) = (pos / block_size, pos % block_size);
        let max_len = max_len.min(block_size - within);
        let (base, len) = match self.bat.payload(&self.file, &self.cache, block)? {
            Payload::NotPresent => return Ok((Source::Below, max_len)),
            Payload::Zeros => return Ok((Source::Zero, max_len)),
            Payload::Present(base) => (base, max_len),
            Payload::Partial(base) => match self.bitmap_run(block, within, max_len)? {
                (true, len) => (base, len),
                (false, len) => return Ok((Source::Below, len)),
            },
        };
        match base.checked_add(within).filter(|at| at.checked_add(len).is_some()) {
            Some(at) => Ok((Source::Data { file: &self.file, offset: at }, len)),
            None => Err(Error::corrupt(
                &self.file.file.path,
                format!("a BAT entry points at offset {base}, beyond any file"),
            )),
        }
    }
    fn below(&self) -> Option<&Arc<dyn DiskImage>> {
        self.parent.as_ref()
    }
}

impl LayerImage for VhdxImage {
    fn logical_sector_size(&self) -> u32 {
        self.meta.logical_sector_size
    }

    fn describe(&self) -> ImageInfo {
        ImageInfo {
            path: self.file.file.path.clone(),
            format: "vhdx".into(),
            virtual_size: self.meta.virtual_size,
            cluster_size: Some(self.bat.block_size),
            logical_sector_size: self.meta.logical_sector_size,
            features: Vec::new(),
            details: self.details.clone(),
            backing: self.parent.as_ref().map(|p| Box::new(p.info())),
            error: None,
        }
    }

    fn layer_id(&self) -> LayerId {
        LayerId::VhdxDataWriteGuid(self.data_write_guid)
    }
}
