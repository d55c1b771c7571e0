//! Making a new overlay over an image (the layout is in mod.rs).

use super::header::{header_cluster, qemu_format_name};
use super::*;

impl Qcow2Overlay {
    /// Creates the overlay FILE at `path` over `base` (the image at `base_path`, of format
    /// `base_format`). Refuses if `path` exists.
    ///
    /// The backing file name stored is the absolute canonical path of the base: the overlay is
    /// often made in another folder than the evidence (a scratch disk), and a relative name
    /// would break as soon as either moves; `qemu-img rebase -u -b NEW` changes it if needed.
    pub fn create(path: &Path, base: Arc<dyn DiskImage>, base_path: &Path, base_format: &str) -> Result<Qcow2Overlay> {
        // 0600 and never through a symlink: the overlay holds what the guest wrote.
        let file = crate::overlay::safe_open::create_private(path, "qcow2 overlay")?;
        let kept = file.try_clone().map_err(|e| Error::io(path, "cannot create the qcow2 overlay", e))?;
        match Self::create_on(Box::new(file), path, base, base_path, base_format) {
            Ok(overlay) => {
                // The new name must survive a power cut too.
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
                Ok(overlay)
            }
            Err(e) => {
                crate::overlay::safe_open::remove_if_same(path, &kept);
                Err(e)
            }
        }
    }

    /// `create` on an already opened, empty file (tests pass a recording wrapper).
    #[doc(hidden)]
    pub fn create_on(
        file: Box<dyn OverlayFile>,
        path: &Path,
        base: Arc<dyn DiskImage>,
        base_path: &Path,
        base_format: &str,
    ) -> Result<Qcow2Overlay> {
        let format = qemu_format_name(path, base_format)?;
        let canonical = std::fs::canonicalize(base_path).map_err(|e| {
            Error::io(base_path, "cannot resolve the image's full path for the overlay's backing file name", e)
        })?;
        let name = canonical.as_os_str().as_bytes().to_vec();
        if name.len() as u64 > MAX_BACKING_NAME {
            return Err(Error::unsupported(
                path,
                format!(
                    "the image's full path is {} bytes long, more than the {MAX_BACKING_NAME} a qcow2 backing file name may hold; move the image to a shorter path",
                    name.len()
                ),
            ));
        }
        let size = base.virtual_size().checked_add(511).map(|s| s & !511).unwrap_or(u64::MAX);
        limits::check(path, "virtual size of the overlay", size, MAX_VIRTUAL_SIZE)?;
        if size == 0 {
            return Err(Error::unsupported(path, "the image is empty (0 bytes): there is nothing to write to"));
        }
        let l1_size = size.div_ceil(CLUSTER * L2_ENTRIES);
        limits::check(path, "L1 table size of the overlay", l1_size * 8, MAX_L1_BYTES)?;
        let l1_clusters = (l1_size * 8).div_ceil(CLUSTER);
        // Room for a file somewhat larger than the disk (metadata, leaks), at least 16 TiB.
        let max_file = size.saturating_add(size / 64).saturating_add(1 << 30);
        let refcount_entries = max_file.div_ceil(REFCOUNTS_PER_BLOCK * CLUSTER);
        let refcount_table_clusters = (refcount_entries * 8).div_ceil(CLUSTER).max(1);
        let refcount_table_offset = CLUSTER;
        let block0 = 1 + refcount_table_clusters;
        let l1_cluster = block0 + 1;
        let metadata_end = l1_cluster + l1_clusters;
        // Refcount block 0 must cover all the initial metadata (always true below ~1 EiB disks).
        limits::check(path, "clusters of initial overlay metadata", metadata_end, REFCOUNTS_PER_BLOCK)?;

        let io = |e| Error::io(path, "cannot write the new qcow2 overlay", e);
        file.set_len(metadata_end * CLUSTER).map_err(io)?;
        file.write_at(
            &header_cluster(size, l1_size as u32, l1_cluster * CLUSTER, refcount_table_clusters as u32, format, &name),
            0,
        )
        .map_err(io)?;
        file.write_at(&(block0 * CLUSTER).to_be_bytes(), refcount_table_offset).map_err(io)?;
        let refcounts: Vec<u8> = (0..metadata_end).flat_map(|_| 1u16.to_be_bytes()).collect();
        file.write_at(&refcounts, block0 * CLUSTER).map_err(io)?;
        file.sync().map_err(io)?;

        let mut refcount_table = vec![0u64; (refcount_table_clusters * CLUSTER / 8) as usize];
        refcount_table[0] = block0 * CLUSTER;
        let meta = Meta { refcount_table_offset, refcount_table, next_free: metadata_end, file_end: metadata_end };
        Ok(Qcow2Overlay::assemble(path, file, base, size, l1_cluster * CLUSTER, vec![0; l1_size as usize], meta))
    }
}
