//! VDI (VirtualBox): a header, a block map of 32-bit entries (which stored block holds each
//! block of the disk, or none), then the blocks. Static images have every block stored,
//! dynamic ones only those written; a differencing image's blocks not stored come from its
//! parent, which it names only by UUID (parent.rs).

mod header;
mod parent;

use super::layer::{Layer, LayerImage, Source};
use super::{Chain, DiskImage, ImageInfo, LayerId, OpenOptions};
use crate::cache::{Cache, Kind};
use crate::error::{Error, Result};
use crate::formats::bytes::le32;
use crate::formats::cached::load_table;
use crate::limits::MAX_TABLE_BYTES;
use crate::source::file::ImageFile;
use header::{uuid_text, Header, ImageType};
pub use header::{SIGNATURE, SIGNATURE_AT};
use std::sync::Arc;

/// Never written: the parent's bytes, or zeros without one.
const UNALLOCATED: u32 = 0xffff_ffff;
/// Discarded (or written as zeros): zeros, whatever the parent holds.
const ZERO: u32 = 0xffff_fffe;
/// Block map entries loaded (and cached) together: 64 KiB of the map.
const MAP_PAGE_ENTRIES: u64 = 16384;

pub struct VdiImage {
    file: ImageFile,
    header: Header,
    parent: Option<parent::Parent>,
    cache: Arc<Cache>,
}

impl VdiImage {
    pub fn open(file: ImageFile, chain: &Chain, opts: &OpenOptions) -> Result<VdiImage> {
        let header = Header::read(&file)?;
        let parent = match header.image_type {
            ImageType::Differencing => Some(parent::open_parent(&file, &header, chain, opts)?),
            _ => None,
        };
        Ok(VdiImage { file, header, parent, cache: opts.cache.clone() })
    }

    /// The block map entry of disk block `block` (below `header.blocks`), read through the cache
    /// a page at a time: a huge map is never held whole.
    fn map_entry(&self, block: u64) -> Result<u32> {
        let h = &self.header;
        let page = block / MAP_PAGE_ENTRIES;
        let entries = (h.blocks - page * MAP_PAGE_ENTRIES).min(MAP_PAGE_ENTRIES);
        let table = load_table(
            &self.cache,
            &self.file,
            Kind::Table,
            h.map_offset + page * MAP_PAGE_ENTRIES * 4,
            entries * 4,
            MAX_TABLE_BYTES,
            "the VDI block map",
        )?;
        let at = ((block % MAP_PAGE_ENTRIES) * 4) as usize;
        Ok(table.get(at..at + 4).map_or(UNALLOCATED, |e| le32(e, 0)))
    }
}

impl Layer for VdiImage {
    fn path(&self) -> &std::path::Path {
        &self.file.path
    }
    fn size(&self) -> u64 {
        self.header.virtual_size
    }
    fn lookup(&self, pos: u64, max: u64) -> Result<(Source<'_>, u64)> {
        let h = &self.header;
        let block = pos / h.block_size;
        let within = pos % h.block_size;
        let len = max.min(h.block_size - within);
        // Open checked that the map covers the disk: block < blocks.
        let source = match self.map_entry(block)? {
            UNALLOCATED => Source::Below,
            ZERO => Source::Zero,
            stored if u64::from(stored) >= h.blocks => {
                return Err(Error::corrupt(
                    &self.file.path,
                    format!(
                        "VDI block map entry {block} is {stored}, past the {} blocks the image can hold; the image is corrupt",
                        h.blocks
                    ),
                ))
            }
            // Past the end of the file (a copy cut short), the data reads as zeros, as qemu does.
            stored => Source::Data { file: &self.file, offset: h.block_data_at(u64::from(stored)) + within },
        };
        Ok((source, len))
    }
    fn below(&self) -> Option<&Arc<dyn DiskImage>> {
        self.parent.as_ref().map(|p| &p.image)
    }
}

impl LayerImage for VdiImage {
    fn layer_id(&self) -> LayerId {
        LayerId::VdiUuids { create: self.header.uuid_create, modify: self.header.uuid_modify }
    }

    fn describe(&self) -> ImageInfo {
        let h = &self.header;
        let mut details = vec![
            ("type".to_string(), h.image_type.name().to_string()),
            ("text".into(), format!("{:?}", h.text)),
            ("version".into(), format!("{}.{}", h.version >> 16, h.version & 0xffff)),
            ("header size".into(), h.header_size.to_string()),
            ("block size".into(), h.block_size.to_string()),
            ("blocks".into(), format!("{} ({} allocated, says the header)", h.blocks, h.blocks_allocated)),
            ("block map offset".into(), h.map_offset.to_string()),
            ("data offset".into(), h.data_offset.to_string()),
            ("creation UUID".into(), uuid_text(&h.uuid_create)),
            ("modification UUID".into(), uuid_text(&h.uuid_modify)),
        ];
        if h.block_extra != 0 {
            details.push(("block extra data".into(), format!("{} bytes before each block", h.block_extra)));
        }
        if h.virtual_size != h.disk_size {
            details.push(("disk size".into(), format!("{} (rounded up to whole sectors, as qemu does)", h.disk_size)));
        }
        if h.flags != 0 {
            details.push(("flags".into(), format!("{:#x}", h.flags)));
        }
        if !h.comment.is_empty() {
            details.push(("comment".into(), format!("{:?}", h.comment)));
        }
        if let Some(p) = &self.parent {
            details.extend(p.details.iter().cloned());
        }
        ImageInfo {
            path: self.file.path.clone(),
            format: "vdi".into(),
            virtual_size: h.virtual_size,
            cluster_size: Some(h.block_size),
            logical_sector_size: 512,
            features: vec![h.image_type.name().to_string()],
            details,
            backing: self.parent.as_ref().map(|p| Box::new(p.image.info())),
            error: None,
        }
    }
}
