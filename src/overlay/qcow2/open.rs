//! Reopening an overlay `create` made, after checking everything its header and tables say.

use super::*;

impl Qcow2Overlay {
    /// Reopens an overlay made by `create` (a second session, or after a crash) over `base`.
    /// The file must be a regular file of the user running vdmount, not a symlink.
    pub fn open(path: &Path, base: Arc<dyn DiskImage>) -> Result<Qcow2Overlay> {
        let file = crate::overlay::safe_open::open_own_file(path, "qcow2 overlay")?.ok_or_else(|| {
            Error::io(path, "cannot open the qcow2 overlay", io::Error::from_raw_os_error(libc::ENOENT))
        })?;
        Self::open_on(Box::new(file), path, base)
    }

    /// `open` on an already opened file (tests pass a recording wrapper).
    #[doc(hidden)]
    pub fn open_on(file: Box<dyn OverlayFile>, path: &Path, base: Arc<dyn DiskImage>) -> Result<Qcow2Overlay> {
        let corrupt = |msg: String| Error::corrupt(path, format!("qcow2 overlay: {msg}"));
        let refuse = |msg: &str| {
            Error::unsupported(
                path,
                format!(
                    "{msg}; vdmount appends only to overlays it made itself (start a new overlay with --cow=NEWFILE)"
                ),
            )
        };
        let file_len = file.size().map_err(|e| Error::io(path, "cannot stat the qcow2 overlay", e))?;
        let mut h = [0u8; V3_HEADER_LEN as usize];
        if file_len < h.len() as u64 {
            return Err(corrupt(format!("the file is {file_len} bytes, too short for a qcow2 v3 header")));
        }
        file.read_at(&mut h, 0).map_err(|e| Error::io(path, "cannot read the qcow2 overlay's header", e))?;
        if &h[0..4] != MAGIC {
            return Err(refuse("this is not a qcow2 file"));
        }
        if be32(&h, 4) != 3 {
            return Err(refuse(&format!("qcow2 version {} (only version 3 is written)", be32(&h, 4))));
        }
        if be32(&h, 20) != CLUSTER_BITS {
            return Err(refuse(&format!("cluster size 2^{} (only 64 KiB clusters are written)", be32(&h, 20))));
        }
        if be32(&h, 32) != 0 {
            return Err(refuse("the overlay is encrypted"));
        }
        if be32(&h, 60) != 0 {
            return Err(refuse("the overlay has internal snapshots"));
        }
        let incompatible = be64(&h, 72);
        if incompatible & 2 != 0 {
            return Err(corrupt(
                "qemu marked it corrupt (incompatible bit 1); repair it with `qemu-img check -r all` first".into(),
            ));
        }
        if incompatible != 0 {
            return Err(refuse(&format!(
                "the overlay uses incompatible features {incompatible:#x} (dirty lazy refcounts, external data file, compression type or extended L2)"
            )));
        }
        if be32(&h, 96) != REFCOUNT_ORDER {
            return Err(refuse(&format!("refcount order {} (only 16-bit refcounts are written)", be32(&h, 96))));
        }
        if be32(&h, 100) < 104 {
            return Err(corrupt(format!("header length {} is shorter than the 104 bytes of version 3", be32(&h, 100))));
        }
        let size = be64(&h, 24);
        limits::check(path, "qcow2 overlay virtual size", size, MAX_VIRTUAL_SIZE)?;
        let l1_size = u64::from(be32(&h, 36));
        let l1_offset = be64(&h, 40);
        if l1_size < size.div_ceil(CLUSTER * L2_ENTRIES) {
            return Err(corrupt(format!("its L1 table ({l1_size} entries) does not cover its virtual size {size}")));
        }
        limits::check(path, "qcow2 overlay L1 table size", l1_size * 8, MAX_L1_BYTES)?;
        let refcount_table_offset = be64(&h, 48);
        let refcount_table_bytes = u64::from(be32(&h, 56)) * CLUSTER;
        limits::check(path, "qcow2 overlay refcount table size", refcount_table_bytes, MAX_TABLE_BYTES)?;
        for (what, offset, len) in
            [("L1 table", l1_offset, l1_size * 8), ("refcount table", refcount_table_offset, refcount_table_bytes)]
        {
            if !offset.is_multiple_of(CLUSTER)
                || offset == 0
                || offset.checked_add(len).is_none_or(|end| end > file_len)
            {
                return Err(corrupt(format!("its {what} at offset {offset} ({len} bytes) is misaligned or past the end of the file ({file_len} bytes)")));
            }
        }
        let file_end = file_len.div_ceil(CLUSTER);
        let read_table = |offset: u64, len: u64, what: &str| -> Result<Vec<u64>> {
            let mut raw = vec![0u8; len as usize];
            file.read_at(&mut raw, offset)
                .map_err(|e| Error::io(path, format!("cannot read the overlay's {what}"), e))?;
            Ok(raw.chunks_exact(8).map(|c| be64(c, 0)).collect())
        };
        let l1 = read_table(l1_offset, l1_size * 8, "L1 table")?;
        for (i, &e) in l1.iter().enumerate() {
            let offset = e & OFFSET_MASK;
            if e & L1_RESERVED != 0 || !offset.is_multiple_of(CLUSTER) || offset / CLUSTER >= file_end {
                return Err(corrupt(format!("L1 entry {i} ({e:#x}) is malformed or points past the end of the file")));
            }
            if offset != 0 && e & COPIED == 0 {
                return Err(refuse(&format!("L1 entry {i} points at a shared L2 table")));
            }
        }
        let refcount_table = read_table(refcount_table_offset, refcount_table_bytes, "refcount table")?;
        for (i, &e) in refcount_table.iter().enumerate() {
            if !e.is_multiple_of(CLUSTER) || e / CLUSTER >= file_end {
                return Err(corrupt(format!(
                    "refcount table entry {i} ({e:#x}) is misaligned or points past the end of the file"
                )));
            }
        }
        if refcount_table.first().is_none_or(|&e| e == 0) {
            return Err(corrupt("it has no refcount block for its first clusters".into()));
        }
        if be64(&h, 88) != 0 {
            // Autoclear features (persistent bitmaps) are invalid once someone who does not
            // update them writes: the specification says to clear them.
            file.write_at(&[0u8; 8], 88)
                .and_then(|_| file.sync())
                .map_err(|e| Error::io(path, "cannot update the overlay's header", e))?;
        }
        let meta = Meta { refcount_table_offset, refcount_table, next_free: file_end, file_end };
        Ok(Qcow2Overlay::assemble(path, file, base, size, l1_offset, l1, meta))
    }
}
