//! VHD (Virtual PC / Hyper-V, qemu's "vpc"): fixed disks (the data, then a footer), dynamic
//! disks (footer copy, dynamic header, block allocation table, blocks each led by a sector
//! bitmap) and differencing disks (a dynamic disk whose sectors with a clear bitmap bit come
//! from a parent).

mod dynamic;
mod footer;
mod parent;

use super::image_file::ImageFile;
use super::{clamp_to_size, Chain, DiskImage, ImageInfo, OpenOptions};
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::limits::{self, MAX_VIRTUAL_SIZE};
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
            ("creator application".into(), format!("{:?} version {}.{}", text4(&footer.creator_app), footer.creator_major, footer.creator_minor)),
            ("creator host OS".into(), format!("{:?}", text4(&footer.creator_os))),
            ("current size".into(), footer.current_size.to_string()),
            ("original size".into(), footer.original_size.to_string()),
            (
                "CHS geometry".into(),
                format!("{}/{}/{} ({} bytes)", footer.cylinders, footer.heads, footer.sectors_per_track, footer.chs_size()),
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

    /// Reads `buf` from one block of a sparse disk (`pos` is the disk offset; the read does not
    /// cross a block boundary).
    fn read_in_block(&self, header: &DynamicHeader, parent: Option<&parent::Parent>, buf: &mut [u8], pos: u64) -> Result<()> {
        let map = BlockMap { file: &self.file, header, cache: &self.cache };
        let block = pos / header.block_size;
        let within = pos % header.block_size;
        let Some(bitmap_at) = map.bitmap_offset(block)? else {
            // Not in this file: the parent's, or zeros in a dynamic disk.
            return match parent {
                Some(p) => p.image.read_at(buf, pos),
                None => {
                    buf.fill(0);
                    Ok(())
                }
            };
        };
        // bitmap_at is a 32-bit sector number times 512 and the bitmap at most 64 KiB: no overflow.
        let data_at = bitmap_at + header.bitmap_size();
        let Some(parent) = parent else {
            // A dynamic disk's block is read whole, bitmap ignored, as qemu reads it (writers
            // fill the block with the data or zeros; qemu itself sets every bit).
            return self.file.read_data_at(buf, data_at + within);
        };

        // Differencing: each sector comes from this file if its bitmap bit is set, else from the
        // parent. Runs of sectors with the same source are read in one call.
        let bitmap = map.bitmap(bitmap_at)?;
        let last_sector = (within + buf.len() as u64).saturating_sub(1) / SECTOR;
        let mut done = 0usize;
        while done < buf.len() {
            let at = within + done as u64;
            let from_child = sector_is_set(&bitmap, at / SECTOR);
            let mut end_sector = at / SECTOR + 1;
            while end_sector <= last_sector && sector_is_set(&bitmap, end_sector) == from_child {
                end_sector += 1;
            }
            let run_end = (end_sector * SECTOR).min(within + buf.len() as u64);
            let run = &mut buf[done..(run_end - within) as usize];
            if from_child {
                self.file.read_data_at(run, data_at + at)?;
            } else {
                parent.image.read_at(run, pos + done as u64)?;
            }
            done = (run_end - within) as usize;
        }
        Ok(())
    }
}

impl DiskImage for VhdImage {
    fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let n = clamp_to_size(buf, offset, self.virtual_size);
        let buf = &mut buf[..n];
        match &self.layout {
            Layout::Fixed { data_end } => {
                let avail = data_end.saturating_sub(offset).min(n as u64) as usize;
                let (data, past) = buf.split_at_mut(avail);
                past.fill(0);
                self.file.read_data_at(data, offset)
            }
            Layout::Sparse { header, parent } => {
                let mut done = 0usize;
                while done < n {
                    let pos = offset + done as u64;
                    let left_in_block = header.block_size - pos % header.block_size;
                    let len = (n - done).min(usize::try_from(left_in_block).unwrap_or(usize::MAX));
                    self.read_in_block(header, parent.as_ref(), &mut buf[done..done + len], pos)?;
                    done += len;
                }
                Ok(())
            }
        }
    }

    fn info(&self) -> ImageInfo {
        let (cluster_size, backing) = match &self.layout {
            Layout::Fixed { .. } => (None, None),
            Layout::Sparse { header, parent } => {
                (Some(header.block_size), parent.as_ref().map(|p| Box::new(p.image.info())))
            }
        };
        let mut details = self.details.clone();
        if let Layout::Sparse { header, .. } = &self.layout {
            details.push(("block size".into(), header.block_size.to_string()));
            details.push(("block allocation table".into(), format!("{} entries at offset {}", header.max_table_entries, header.table_offset)));
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
        }
    }
}

/// A 4-byte code (creator application, host OS) as text.
fn text4(b: &[u8; 4]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
