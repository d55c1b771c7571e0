//! Apple's sparse disk images: the disk cut into bands of a fixed size, only the bands written
//! stored, as they are, in the order they were first written; a band never written reads as
//! zeros. A `.sparseimage` is one file whose band map is in its header (header.rs); a
//! `.sparsebundle` is a folder with an Info.plist and one file per band (bundle.rs). Both are
//! here rather than in dmg/: they share the band idea, not UDIF's chunk tables. Bands are served
//! as extents of the files they are stored in.

pub mod bundle;
mod header;
mod info_plist;

use super::layer::{Layer, LayerImage, Source};
use super::{Chain, DiskImage, ImageInfo, OpenOptions};
use crate::error::Result;
use crate::source::file::ImageFile;
pub use header::MAGIC;
use header::{read_band_map, read_header, BandMap, Header};
use std::path::Path;
use std::sync::Arc;

pub struct SparseImage {
    file: ImageFile,
    header: Header,
    map: BandMap,
}

impl SparseImage {
    pub fn open(file: ImageFile, _chain: &Chain, opts: &OpenOptions) -> Result<SparseImage> {
        let (header, node) = read_header(&file)?;
        let map = read_band_map(&file, &header, &node, &opts.budget)?;
        Ok(SparseImage { file, header, map })
    }
}

/// The run at `pos` of a disk cut into `band_bytes` bands: the band, the offset in it, and how
/// many bytes (at most `max`) stay in it.
fn band_run(pos: u64, max: u64, band_bytes: u64) -> (u64, u64, u64) {
    let within = pos % band_bytes;
    (pos / band_bytes, within, max.min(band_bytes - within))
}

impl Layer for SparseImage {
    fn path(&self) -> &Path {
        &self.file.path
    }
    fn size(&self) -> u64 {
        self.header.size()
    }
    fn lookup(&self, pos: u64, max: u64) -> Result<(Source<'_>, u64)> {
        let (band, within, len) = band_run(pos, max, self.header.band_bytes);
        let stored = &self.map.stored;
        // Data past the end of the file (a copy cut short) reads as zeros.
        let source = match stored.binary_search_by_key(&band, |s| s.0) {
            Ok(i) => Source::Data { file: &self.file, offset: stored[i].1 + within },
            Err(_) => Source::Zero,
        };
        Ok((source, len))
    }
    fn below(&self) -> Option<&Arc<dyn DiskImage>> {
        None
    }
}

impl LayerImage for SparseImage {
    fn describe(&self) -> ImageInfo {
        let h = &self.header;
        let mut details = vec![
            ("version".to_string(), h.version.to_string()),
            ("band size".into(), format!("{} ({} sectors)", h.band_bytes, h.sectors_per_band)),
            ("bands".into(), format!("{} ({} allocated)", h.bands, self.map.stored.len())),
            (
                "band map nodes".into(),
                format!("{} (the header and {} index nodes)", self.map.nodes, self.map.nodes - 1),
            ),
            ("flags".into(), format!("{:#x}", h.flags)),
        ];
        if u64::from(h.sectors_low) != h.sectors {
            details.push(("32-bit size field".into(), format!("{} sectors (the 64-bit one is used)", h.sectors_low)));
        }
        let end = self.map.stored.iter().map(|s| s.1 + h.band_bytes).max().unwrap_or(0);
        if end > self.file.size {
            details.push((
                "truncated".into(),
                format!(
                    "the file ends {} bytes before its last band does; the rest reads as zeros",
                    end - self.file.size
                ),
            ));
        }
        ImageInfo {
            path: self.file.path.clone(),
            format: "sparseimage".into(),
            virtual_size: h.size(),
            cluster_size: Some(h.band_bytes),
            logical_sector_size: 512,
            details,
            ..Default::default()
        }
    }
}
