//! VHD (Virtual PC / Hyper-V, qemu's "vpc"): fixed disks (the data, then a footer), dynamic
//! disks (footer copy, dynamic header, block allocation table, blocks each led by a sector
//! bitmap) and differencing disks (a dynamic disk whose sectors with a clear bitmap bit come
//! from a parent).

mod dynamic;
mod footer;
mod parent;

use super::layer::{Layer, LayerImage, Source};
use super::{Chain, DiskImage, ImageInfo, LayerId, OpenOptions};
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::limits::{self, MAX_VIRTUAL_SIZE};
use crate::source::file::ImageFile;
use dynamic::{sector_is_set, BlockMap, DynamicHeader, SECTOR};
use footer::{DiskType, Footer};
use std::sync::Arc;

pub struct VhdImage {
    file: ImageFile,
    footer: Footer,
    virtual_size: u64,
    layout: Layout,
    cache: Arc<Cache>,
    details: Vec<(String, String)>,
}

enum Layout {
    /// The disk's bytes are the file's bytes up to `data_end` (where the footer starts).
    Fixed { data_end: u64 },
    /// Dynamic (no parent) or differencing (with one).
    Sparse { header: DynamicHeader, parent: Option<parent::Parent> },
}

impl VhdImage {
    pub fn open(file: ImageFile, chain: &Chain, opts: &OpenOptions) -> Result<VhdImage> {
        let located = footer::locate(&file)?;
        let footer = located.footer;
        let (virtual_size, size_rule) = footer.virtual_size();
        limits::check(&file.path, "the VHD virtual size", virtual_size, MAX_VIRTUAL_SIZE)?;

        let mut details = vec![
            ("type".to_string(), footer.disk_type.name().to_string()),
            (
                "creator application".into(),
                format!("{:?} version {}.{}", text4(&footer.creator_app), footer.creator_major, footer.creator_minor),
            ),
            ("creator host OS".into(), format!("{:?}", text4(&footer.creator_os))),
            ("current size".into(), footer.current_size.to_string()),
            ("original size".into(), footer.original_size.to_string()),
            (
                "CHS geometry".into(),
                format!(
                    "{}/{}/{} ({} bytes)",
                    footer.cylinders,
                    footer.heads,
                    footer.sectors_per_track,
                    footer.chs_size()
                ),
            ),
            ("size rule".into(), size_rule.into()),
            ("footer".into(), located.state),
            ("unique id".into(), parent::uuid(&footer.unique_id)),
            ("timestamp".into(), format!("{} (seconds since 2000-01-01 UTC)", footer.timestamp)),
        ];
        if footer.saved_state {
            details.push(("saved state".into(), "set (the VM was saved, not shut down, when this was copied)".into()));
        }

        let layout = match footer.disk_type {
            DiskType::Fixed => {
                let data_end = located.tail_offset.unwrap_or(file.size);
                // A fixed disk holds all its data before the footer; a shorter file was cut and
                // given a footer again, or the footer's size is wrong.
                if virtual_size > data_end {
                    return Err(Error::corrupt(
                        &file.path,
                        format!(
                            "this fixed VHD's size is {virtual_size} bytes ({size_rule}), but the file holds only {data_end} bytes of data before its footer; the image is truncated or its footer corrupt"
                        ),
                    ));
                }
                Layout::Fixed { data_end }
            }
            DiskType::Dynamic | DiskType::Differencing => {
                let header = DynamicHeader::read(&file, footer.data_offset)?;
                if header.table_coverage() < virtual_size {
                    return Err(Error::corrupt(
                        &file.path,
                        format!(
                            "the VHD block allocation table has {} entries of {} bytes, covering {} bytes, less than the disk's {virtual_size} bytes; the image is corrupt",
                            header.max_table_entries,
                            header.block_size,
                            header.table_coverage()
                        ),
                    ));
                }
                details.push(("dynamic header checksum".into(), header.checksum_state.clone()));
                let parent = if footer.disk_type == DiskType::Differencing {
                    let p = parent::open_parent(&file, &header, chain, opts)?;
                    details.extend(p.details.iter().cloned());
                    Some(p)
                } else {
                    None
                };
                Layout::Sparse { header, parent }
            }
        };
        Ok(VhdImage { file, footer, virtual_size, layout, cache: opts.cache.clone(), details })
    }
}

impl Layer for VhdImage {
    fn path(&self) -> &std::path::Path {
        &self.file.path
    }
    fn size(&self) -> u64 {
        self.virtual_size
    }
    /// Where the disk's bytes from `pos` (below the virtual size) come from, and for how many
    /// bytes (1 to `max_len`). `read_at` and `map` both walk the disk with this, so the two
    /// cannot disagree.
    fn lookup(&self, pos: u64, max_len: u64) -> Result<(Source<'_>, u64)> {
        let (header, parent) = match &self.layout {
            Layout::Fixed { data_end } if pos < *data_end => {
                return Ok((Source::Data { file: &self.file, offset: pos }, (data_end - pos).min(max_len)))
            }
            // Open checks that the data reaches the virtual size; past it would read as zeros.
            Layout::Fixed { .. } => return Ok((Source::Zero, max_len)),
            Layout::Sparse { header, parent } => (header, parent),
        };
        let map = BlockMap { file: &self.file, header, cache: &self.cache };
        let block = pos / header.block_size;
        let within = pos % header.block_size;
        let max_len = max_len.min(header.block_size - within);
        let Some(bitmap_at) = map.bitmap_offset(block)? else {
            // Not in this file: the parent's, or zeros in a dynamic disk.
            return Ok((Source::Below, max_len));
        };
        // bitmap_at is a 32-bit sector number times 512 and the bitmap at most 64 KiB: no overflow.
        let data_at = bitmap_at + header.bitmap_size() + within;
        if parent.is_none() {
            // A dynamic disk's block is read whole, bitmap ignored, as qemu reads it (writers
            // fill the block with the data or zeros; qemu itself sets every bit).
            return Ok((Source::Data { file: &self.file, offset: data_at }, max_len));
        }

        // Differencing: each sector comes from this file if its bitmap bit is set, else from the
        // parent; the run goes on while the bits stay the same.
        let bitmap = map.bitmap(bitmap_at)?;
        let end = within + max_len;
        let from_child = sector_is_set(&bitmap, within / SECTOR);
        let mut run_end = (within / SECTOR + 1) * SECTOR;
        while run_end < end && sector_is_set(&bitmap, run_end / SECTOR) == from_child {
            run_end += SECTOR;
        }
        let len = run_end.min(end) - within;
        Ok((if from_child { Source::Data { file: &self.file, offset: data_at } } else { Source::Below }, len))
    }
    fn below(&self) -> Option<&Arc<dyn DiskImage>> {
        match &self.layout {
            Layout::Sparse { parent: Some(p), .. } => Some(&p.image),
            _ => None,
        }
    }
}

impl LayerImage for VhdImage {
    fn describe(&self) -> ImageInfo {
        let (cluster_size, backing) = match &self.layout {
            Layout::Fixed { .. } => (None, None),
            Layout::Sparse { header, parent } => {
                (Some(header.block_size), parent.as_ref().map(|p| Box::new(p.image.info())))
            }
        };
        let mut details = self.details.clone();
        if let Layout::Sparse { header, .. } = &self.layout {
            details.push(("block size".into(), header.block_size.to_string()));
            details.push((
                "block allocation table".into(),
                format!("{} entries at offset {}", header.max_table_entries, header.table_offset),
            ));
            if self.footer.disk_type == DiskType::Differencing {
                details.push(("parent timestamp (recorded in child)".into(), header.parent_timestamp.to_string()));
            }
        }
        ImageInfo {
            path: self.file.path.clone(),
            format: "vhd".into(),
            virtual_size: self.virtual_size,
            cluster_size,
            logical_sector_size: 512,
            features: vec![self.footer.disk_type.name().to_string()],
            details,
            backing,
            error: None,
        }
    }

    fn layer_id(&self) -> LayerId {
        LayerId::VhdUniqueId(self.footer.unique_id)
    }
}

/// A 4-byte code (creator application, host OS) as text.
fn text4(b: &[u8; 4]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
