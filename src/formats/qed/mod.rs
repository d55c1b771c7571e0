//! QED (qemu's "QEMU Enhanced Disk"): a header, a fixed L1 table held in memory, L2 tables read
//! through the shared cache, data clusters stored as-is; clusters an L2 table does not hold come
//! from the backing file (of any format), or are zeros.

mod header;
mod table;

use super::layer::{Layer, LayerImage, Source};
use super::{open_backing, Chain, DiskImage, Format, ImageInfo, OpenOptions};
use crate::cache::{Cache, Kind};
use crate::error::{Error, Result};
use crate::formats::cached::load_table;
use crate::limits::{self, MAX_L1_BYTES, QED_TABLE_PIECE_BYTES};
use crate::source::file::ImageFile;
use header::{read_header, table_offset_problem, Header};
use std::path::Path;
use std::sync::Arc;
use table::{entry_at, Entry};

pub use header::MAGIC;

pub struct QedImage {
    file: ImageFile,
    header: Header,
    /// The L1 entries that cover the virtual size (the rest are never looked up).
    l1: Vec<u64>,
    backing: Option<Arc<dyn DiskImage>>,
    cache: Arc<Cache>,
}

impl QedImage {
    pub fn open(file: ImageFile, chain: &Chain, opts: &OpenOptions) -> Result<QedImage> {
        let header = read_header(&file)?;
        let l1 = read_l1(&file, &header, opts)?;
        let backing = match &header.backing_file {
            Some(name) => {
                // QED records no backing format, only "raw, do not probe"; otherwise qemu probes.
                let format = header.backing_is_raw().then_some(Format::Raw);
                let mut backing_opts = opts.clone();
                backing_opts.snapshot = None;
                Some(open_backing(&file.path, path_from_bytes(name), format, chain, &backing_opts)?)
            }
            None => None,
        };
        Ok(QedImage { file, header, l1, backing, cache: opts.cache.clone() })
    }

    /// The piece of the L2 table at `table` that holds entry `index`, and the index within it.
    fn l2_piece(&self, l1_index: usize, table: u64, index: u64) -> Result<(Arc<[u8]>, usize)> {
        if let Some(why) = table_offset_problem(&self.header, self.file.size, table) {
            return Err(Error::corrupt(
                &self.file.path,
                format!(
                    "L1 entry {l1_index} points to an L2 table at offset {table}, which {why}; the image is corrupt"
                ),
            ));
        }
        let piece = QED_TABLE_PIECE_BYTES.min(self.header.table_bytes());
        let per_piece = piece / 8;
        let at = table + index / per_piece * piece;
        let bytes = load_table(&self.cache, &self.file, Kind::Table, at, piece, QED_TABLE_PIECE_BYTES, "an L2 table")?;
        Ok((bytes, (index % per_piece) as usize))
    }
}

/// Reads the L1 entries covering the virtual size, checked against qemu's L1 limit and the
/// chain's memory budget before allocating (open checked the whole table lies in the file).
fn read_l1(file: &ImageFile, h: &Header, opts: &OpenOptions) -> Result<Vec<u64>> {
    let what = "the L1 table";
    let bytes = h.image_size.div_ceil(h.l2_span()) * 8;
    limits::check(&file.path, "size of the L1 table", bytes, MAX_L1_BYTES)?;
    // Held as u64s beside the bytes while converting: take both from the budget.
    opts.budget.take(&file.path, what, bytes * 2)?;
    let raw = file.read_vec(h.l1_table_offset, bytes, MAX_L1_BYTES, what)?;
    Ok(raw.chunks_exact(8).map(|c| entry_at(c, 0)).collect())
}

/// A file name stored in an image, as a path (names are bytes; no lossy conversion).
fn path_from_bytes(name: &[u8]) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(name))
}

impl Layer for QedImage {
    fn path(&self) -> &Path {
        &self.file.path
    }
    fn size(&self) -> u64 {
        self.header.image_size
    }
    fn lookup(&self, pos: u64, max: u64) -> Result<(Source<'_>, u64)> {
        let h = &self.header;
        let span = h.l2_span();
        let l1_index = (pos / span) as usize;
        let in_table = pos % span;
        let limit = max.min(span - in_table);
        let table = self.l1.get(l1_index).copied().unwrap_or(0);
        if table == 0 {
            return Ok((Source::Below, limit));
        }
        let (piece, mut i) = self.l2_piece(l1_index, table, in_table / h.cluster_size)?;
        let decode = |i: usize| Entry::decode(h, self.file.size, entry_at(&piece, i));
        let first = decode(i).map_err(|why| {
            Error::corrupt(&self.file.path, format!("the L2 entry for disk offset {pos} {why}; the image is corrupt"))
        })?;
        // Extend the run over the following entries of this piece while they continue it; a bad
        // entry ends the run and is reported when it is looked up itself.
        let entries_in_piece = piece.len() / 8;
        let mut len = h.cluster_size - pos % h.cluster_size;
        let mut last = first;
        while len < limit && i + 1 < entries_in_piece {
            match decode(i + 1) {
                Ok(next) if last.continues_with(next, h.cluster_size) => last = next,
                _ => break,
            }
            i += 1;
            len += h.cluster_size;
        }
        let source = match first {
            Entry::Unallocated => Source::Below,
            Entry::Zero => Source::Zero,
            Entry::Data(at) => Source::Data { file: &self.file, offset: at + pos % h.cluster_size },
        };
        Ok((source, len.min(limit)))
    }
    fn below(&self) -> Option<&Arc<dyn DiskImage>> {
        self.backing.as_ref()
    }
}

impl LayerImage for QedImage {
    fn describe(&self) -> ImageInfo {
        let h = &self.header;
        let mut details = vec![
            ("table size".to_string(), format!("{} clusters ({} entries)", h.table_size, h.entries())),
            ("header size".to_string(), format!("{} clusters", h.header_size)),
            ("L1 table".to_string(), format!("at offset {}", h.l1_table_offset)),
        ];
        if let Some(name) = &h.backing_file {
            details.push(("backing file".into(), String::from_utf8_lossy(name).into_owned()));
            let fmt = if h.backing_is_raw() { "raw (not probed)" } else { "probed" };
            details.push(("backing format".into(), fmt.into()));
        }
        if h.need_check() {
            details.push((
                "need check".into(),
                "set: the image was not closed cleanly; read as it is, as qemu reads it read-only".into(),
            ));
        }
        ImageInfo {
            path: self.file.path.clone(),
            format: "qed".into(),
            virtual_size: h.image_size,
            cluster_size: Some(h.cluster_size),
            logical_sector_size: 512,
            features: h.feature_list(),
            details,
            backing: self.backing.as_ref().map(|b| Box::new(b.info())),
            error: None,
        }
    }
}
