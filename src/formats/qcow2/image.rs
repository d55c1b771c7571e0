//! A qcow2 image (versions 2 and 3): L1 table in memory, L2 tables and decompressed clusters
//! through the shared cache, unallocated clusters from the backing file.

use super::compressed::{decompress, decompress_into};
use super::header::{read_header, Header};
use super::l2::{BadEntry, Layout, OFFSET_MASK};
use super::read::{ClusterMap, Extent};
use super::snapshot::{self, Snapshot};
use super::{open_backing_layer, path_from_bytes, read_l1_table};
use crate::cache::{Cache, Key, Kind};
use crate::error::{Error, Result};
use crate::formats::cached::{load_table, whole_cluster};
use crate::formats::{Chain, DiskImage, ImageInfo, OpenOptions};
use crate::limits;
use crate::source::file::ImageFile;
use std::path::Path;
use std::sync::Arc;

pub struct Qcow2 {
    file: ImageFile,
    /// The external data file, for images with incompatible bit 2.
    data_file: Option<ImageFile>,
    header: Header,
    layout: Layout,
    /// The L1 table being read: the live disk's, or the chosen snapshot's.
    l1: Vec<u64>,
    virtual_size: u64,
    backing: Option<Arc<dyn DiskImage>>,
    cache: Arc<Cache>,
    snapshots: Vec<Snapshot>,
    /// Why the snapshot table could not be read, if it could not (the live disk still can be).
    snapshot_error: Option<String>,
    /// The snapshot exposed instead of the live disk.
    reading_snapshot: Option<String>,
}

impl Qcow2 {
    pub fn open(file: ImageFile, chain: &Chain, opts: &OpenOptions) -> Result<Qcow2> {
        let header = read_header(&file)?;
        let layout = Layout {
            cluster_bits: header.cluster_bits,
            extended_l2: header.extended_l2(),
            has_data_file: header.has_data_file(),
        };
        let cluster_size = header.cluster_size();
        let (snapshots, snapshot_error) =
            match snapshot::read_table(&file, header.snapshots_offset, header.nb_snapshots, cluster_size) {
                Ok(list) => (list, None),
                Err(e) if opts.snapshot.is_none() => (Vec::new(), Some(e.to_string())),
                Err(e) => return Err(e),
            };

        // qemu counts whole sectors only.
        let live_size = header.size / 512 * 512;
        let (l1_offset, l1_size, virtual_size, reading_snapshot) = match &opts.snapshot {
            None => {
                check_l1_covers(&file.path, &layout, header.l1_size, live_size)?;
                (header.l1_table_offset, header.l1_size, live_size, None)
            }
            Some(wanted) => {
                let s = snapshot::find(&file.path, &snapshots, wanted)?;
                let size = s.disk_size.map_or(live_size, |d| d / 512 * 512);
                limits::check(&file.path, "snapshot virtual size", size, limits::MAX_VIRTUAL_SIZE)?;
                (s.l1_table_offset, s.l1_size, size, Some(snapshot::describe(s, live_size)))
            }
        };
        if l1_size > 0 && !l1_offset.is_multiple_of(cluster_size) {
            return Err(Error::corrupt(
                &file.path,
                format!("the L1 table offset {l1_offset} is not a multiple of the cluster size ({cluster_size}); the image is corrupt"),
            ));
        }
        let l1 = read_l1_table(&file, l1_offset, u64::from(l1_size), opts)?;

        let data_file = match &header.data_file {
            Some(name) if header.has_data_file() => {
                Some(chain.confine.open(&file.path, path_from_bytes(name), "external data file")?)
            }
            _ => None,
        };
        let backing = match &header.backing_file {
            Some(name) => Some(open_backing_layer(&file.path, name, header.backing_format.as_deref(), chain, opts)?),
            None => None,
        };
        Ok(Qcow2 {
            file,
            data_file,
            header,
            layout,
            l1,
            virtual_size,
            backing,
            cache: opts.cache.clone(),
            snapshots,
            snapshot_error,
            reading_snapshot,
        })
    }

    /// The L2 table at `offset`, loaded on first use.
    fn l2_table(&self, offset: u64) -> Result<Arc<[u8]>> {
        let size = self.layout.cluster_size();
        if !offset.is_multiple_of(size) {
            return Err(Error::corrupt(
                &self.file.path,
                format!("an L1 entry points to an L2 table at offset {offset}, which is not cluster aligned; the image is corrupt"),
            ));
        }
        load_table(&self.cache, &self.file, Kind::Table, offset, size, limits::MAX_TABLE_BYTES, "an L2 table")
    }

    /// The extent of guest offset `guest`, whose L2 table is `table` (covering guests from `base`).
    fn decode(&self, table: &[u8], base: u64, guest: u64) -> Result<Extent> {
        let index = ((guest - base) >> self.layout.cluster_bits) as usize;
        let esize = self.layout.entry_size() as usize;
        let at = index * esize;
        let word = |i: usize| table.get(i..i + 8).map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])));
        let entry = word(at).unwrap_or(0);
        let bitmap = if self.layout.extended_l2 { word(at + 8).unwrap_or(0) } else { 0 };
        self.layout.decode(entry, bitmap, guest).map_err(|bad| {
            let why = match bad {
                BadEntry::UnalignedOffset(o) => format!("points to data at offset {o}, which is not cluster aligned"),
                BadEntry::CompressedWithDataFile => {
                    "is compressed, which an image with an external data file cannot be".into()
                }
                BadEntry::BadSubclusterBitmap(b) => format!("has an invalid subcluster bitmap {b:#018x}"),
            };
            Error::corrupt(
                &self.file.path,
                format!("the L2 entry for guest offset {guest} {why}; the image is corrupt"),
            )
        })
    }
}

impl ClusterMap for Qcow2 {
    fn cluster_at(&self, guest: u64, max_len: u64) -> Result<(Extent, u64)> {
        let cluster_size = self.layout.cluster_size();
        let table_span = cluster_size / self.layout.entry_size() * cluster_size;
        let l1_index = guest / table_span;
        let base = l1_index * table_span;
        let limit = max_len.min(base + table_span - guest);
        let l2_offset = match self.l1.get(l1_index as usize) {
            Some(e) => e & OFFSET_MASK,
            None => 0,
        };
        if l2_offset == 0 {
            return Ok((Extent::Backing, limit));
        }
        let table = self.l2_table(l2_offset)?;
        let first = self.decode(&table, base, guest)?;
        if let Extent::Compressed { skip, .. } = first {
            return Ok((first, limit.min(cluster_size - skip)));
        }
        // Extend the run over the following units of the same table while they continue it.
        let unit = self.layout.unit_size();
        let mut len = (guest / unit + 1) * unit - guest;
        while len < limit {
            if !first.continues_with(self.decode(&table, base, guest + len)?, len) {
                break;
            }
            len += unit;
        }
        Ok((first, len.min(limit)))
    }

    fn data_file(&self) -> &ImageFile {
        self.data_file.as_ref().unwrap_or(&self.file)
    }

    fn compressed_cluster(&self, host: u64, len: u64, need: usize) -> Result<Arc<[u8]>> {
        let key = Key { file: self.file.id, kind: Kind::Cluster, offset: host };
        let cluster = self.layout.cluster_size() as usize;
        self.cache.get_prefix_or_load(key, need, cluster, |want| {
            let mut input = vec![0u8; len as usize];
            self.file.read_data_at(&mut input, host)?;
            decompress(self.header.compression, &input, cluster, want, &self.file.path, host)
        })
    }

    fn whole_compressed_cluster(&self, host: u64, len: u64, out: &mut [u8]) -> Result<bool> {
        if out.len() as u64 != self.layout.cluster_size() {
            return Ok(false);
        }
        let key = Key { file: self.file.id, kind: Kind::Cluster, offset: host };
        whole_cluster(&self.cache, key, out, |input, cluster| {
            // `len` is at most two clusters (the entry's sector count field is cluster_bits - 8
            // bits wide).
            input.resize(len as usize, 0);
            self.file.read_data_at(input, host)?;
            decompress_into(self.header.compression, input, cluster, &self.file.path, host)?;
            Ok(cluster.len() - 1)
        })
    }

    fn basics(&self) -> (&ImageFile, u64, Option<&Arc<dyn DiskImage>>) {
        (&self.file, self.virtual_size, self.backing.as_ref())
    }

    fn describe(&self) -> ImageInfo {
        let h = &self.header;
        let version = if h.version == 2 { "2 (compat 0.10)" } else { "3 (compat 1.1)" };
        let mut details = vec![
            ("version".to_string(), version.to_string()),
            ("compression type".to_string(), h.compression.name().to_string()),
        ];
        if let Some(name) = &h.backing_file {
            details.push(("backing file".into(), String::from_utf8_lossy(name).into_owned()));
        }
        if let Some(fmt) = &h.backing_format {
            details.push(("backing format".into(), fmt.clone()));
        }
        if let (Some(name), Some(f)) = (&h.data_file, &self.data_file) {
            details.push(("data file".into(), format!("{} ({})", String::from_utf8_lossy(name), f.path.display())));
        }
        details.push(("snapshots".into(), self.snapshots.len().to_string()));
        for s in &self.snapshots {
            details.push(("snapshot".into(), snapshot::describe(s, h.size)));
        }
        if let Some(e) = &self.snapshot_error {
            details.push(("snapshot table".into(), format!("unreadable: {e}")));
        }
        if let Some(s) = &self.reading_snapshot {
            details.push(("reading snapshot".into(), s.clone()));
        }
        ImageInfo {
            path: self.file.path.clone(),
            format: "qcow2".into(),
            virtual_size: self.virtual_size,
            cluster_size: Some(self.layout.cluster_size()),
            logical_sector_size: 512,
            features: h.feature_list(),
            details,
            backing: self.backing.as_ref().map(|b| Box::new(b.info())),
            error: None,
        }
    }
}

/// Refuses an L1 table too small for the virtual size, as qemu does.
fn check_l1_covers(path: &Path, layout: &Layout, l1_size: u32, size: u64) -> Result<()> {
    let cluster_size = layout.cluster_size();
    let table_span = cluster_size / layout.entry_size() * cluster_size;
    let needed = size.div_ceil(table_span);
    if u64::from(l1_size) < needed {
        return Err(Error::corrupt(
            path,
            format!("the L1 table has {l1_size} entries, but the virtual size ({size} bytes) needs {needed}; the image is corrupt"),
        ));
    }
    Ok(())
}
