//! A `.hdd` bundle as one disk: each storage (a range of the disk) is read through its stack of
//! images for the chosen snapshot, top first, each image's unallocated clusters coming from the
//! one below. Storage images address their own range from 0, so the bundle passes each read on
//! at the storage's offset instead of answering `lookup` itself.

use super::bundle::{parse, Descriptor, Kind};
use super::expanding::ExpandingImage;
use crate::error::{Error, Result};
use crate::formats::failed::FailedLayer;
use crate::formats::raw::RawImage;
use crate::formats::SECTOR;
use crate::formats::{clamp_to_size, len_inside, Chain, DiskImage, Extent, Extents, ImageInfo, OpenOptions};
use crate::limits::MAX_DESCRIPTOR_BYTES;
use crate::source::confine::resolve_beside;
use crate::source::file::ImageFile;
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct StorageStack {
    /// Byte range of the disk.
    start: u64,
    end: u64,
    top: Arc<dyn DiskImage>,
}

pub struct BundleImage {
    path: PathBuf,
    size: u64,
    storages: Vec<StorageStack>,
    descriptor: Descriptor,
    /// The images read, top first.
    chain: Vec<String>,
    /// The snapshot asked for, if not the current state.
    snapshot: Option<String>,
}

impl BundleImage {
    pub fn open(file: ImageFile, chain: &Chain, opts: &OpenOptions) -> Result<BundleImage> {
        let path = file.path.clone();
        let text = file.read_vec(0, file.size, MAX_DESCRIPTOR_BYTES, "the disk descriptor")?;
        let text = std::str::from_utf8(&text)
            .map_err(|_| Error::corrupt(&path, "the disk descriptor is not UTF-8 text; the file is corrupt"))?;
        let descriptor =
            parse(text).map_err(|why| Error::corrupt(&path, format!("Parallels disk descriptor: {why}")))?;
        let guids = descriptor.chain(opts.snapshot.as_deref()).map_err(|why| {
            if why.starts_with("--snapshot") {
                Error::Usage(format!("{}: {why}", path.display()))
            } else {
                Error::corrupt(&path, format!("Parallels disk descriptor: {why}"))
            }
        })?;
        let mut storages = Vec::new();
        for (i, s) in descriptor.storages.iter().enumerate() {
            let mut below: Option<Arc<dyn DiskImage>> = None;
            for guid in guids.iter().rev() {
                let entry = s.images.iter().find(|e| &e.guid == guid).ok_or_else(|| {
                    Error::corrupt(
                        &path,
                        format!("storage {i} has no image for snapshot {{{guid}}}; the bundle is incomplete"),
                    )
                })?;
                let role = format!("image file of snapshot {{{guid}}}");
                let opened = chain.confine.open(&path, Path::new(&entry.file), &role).and_then(|file| {
                    Ok(match entry.kind {
                        Kind::Plain => Arc::new(RawImage::new(file)) as Arc<dyn DiskImage>,
                        Kind::Compressed => {
                            Arc::new(ExpandingImage::open(file, below.take(), opts).map_err(|e| e.in_layer_of(&path))?)
                        }
                    })
                });
                below = Some(match opened {
                    // For `info`: the image stays in the chain, saying why it could not be opened.
                    Err(e) if opts.describe_failed_layers => {
                        Arc::new(FailedLayer::new(resolve_beside(&path, Path::new(&entry.file)), e))
                    }
                    r => r?,
                });
            }
            let Some(top) = below else {
                return Err(Error::corrupt(&path, "internal error: an empty snapshot chain"));
            };
            storages.push(StorageStack { start: s.start * SECTOR, end: s.end * SECTOR, top });
        }
        let size = descriptor.disk_sectors * SECTOR;
        let snapshot = opts.snapshot.as_ref().map(|_| guids[0].clone());
        Ok(BundleImage { path, size, storages, descriptor, chain: guids, snapshot })
    }

    /// The storage holding `pos`, or where the next one starts (a gap reads as zeros).
    fn at(&self, pos: u64) -> std::result::Result<&StorageStack, u64> {
        match self.storages.iter().find(|s| s.end > pos) {
            Some(s) if s.start <= pos => Ok(s),
            Some(s) => Err(s.start),
            None => Err(self.size),
        }
    }
}

impl DiskImage for BundleImage {
    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let n = clamp_to_size(buf, offset, self.size);
        let mut done = 0usize;
        while done < n {
            let pos = offset + done as u64;
            let left = (n - done) as u64;
            let len = match self.at(pos) {
                Ok(s) => {
                    let len = left.min(s.end - pos) as usize;
                    s.top.read_at(&mut buf[done..done + len], pos - s.start)?;
                    len
                }
                Err(next) => {
                    let len = left.min(next - pos) as usize;
                    buf[done..done + len].fill(0);
                    len
                }
            };
            done += len;
        }
        Ok(())
    }

    fn map(&self, offset: u64, len: u64, out: &mut Extents) -> Result<bool> {
        let n = len_inside(offset, len, self.size);
        let mut done = 0u64;
        while done < n {
            let pos = offset + done;
            let left = n - done;
            let (described, run) = match self.at(pos) {
                Ok(s) => {
                    let run = left.min(s.end - pos);
                    (s.top.map(pos - s.start, run, out)?, run)
                }
                Err(next) => {
                    let run = left.min(next - pos);
                    (out.push(Extent::Zero { len: run }), run)
                }
            };
            if !described {
                return Ok(false);
            }
            done += run;
        }
        Ok(out.push(Extent::Zero { len: len - n }))
    }

    fn info(&self) -> ImageInfo {
        let d = &self.descriptor;
        let which = match &self.snapshot {
            Some(g) => format!("{{{g}}} (an older snapshot, read-only)"),
            None => format!("the current state (top image {{{}}})", self.chain[0]),
        };
        let chain: Vec<String> = self.chain.iter().map(|g| format!("{{{g}}}")).collect();
        let mut details = vec![
            ("snapshot".to_string(), which),
            ("image chain".to_string(), chain.join(" -> ")),
            ("snapshots".to_string(), d.shots.len().to_string()),
        ];
        for (i, s) in d.storages.iter().enumerate() {
            let images: Vec<String> =
                s.images.iter().map(|e| format!("{{{}}} {:?} \"{}\"", e.guid, e.kind, e.file)).collect();
            details.push((format!("storage {i}"), format!("sectors {} to {}: {}", s.start, s.end, images.join(", "))));
        }
        ImageInfo {
            path: self.path.clone(),
            format: "parallels".into(),
            virtual_size: self.size,
            cluster_size: d.storages[0].block_size.map(|b| b * SECTOR),
            logical_sector_size: 512,
            features: vec!["bundle".into()],
            details,
            backing: Some(Box::new(self.storages[0].top.info())),
            error: None,
        }
    }
}
