//! Guest writes, discards and write-zeroes: data first, then the L2 entries that point at it.

use super::*;

impl Qcow2Overlay {
    /// Writes `data` at guest `offset` (inside the disk).
    pub(super) fn write_range(&self, data: &[u8], offset: u64) -> Result<()> {
        if offset.checked_add(data.len() as u64).is_none_or(|end| end > self.size) {
            return Err(Error::from_errno(libc::EINVAL));
        }
        let mut m = self.meta();
        // Pieces in clusters already allocated are written in place; the others get a cluster
        // of their own (copy-on-write of the rest of the cluster) and a new L2 entry.
        let mut in_place: Vec<(u64, usize, usize)> = Vec::new();
        let mut new_entries: Vec<(u64, u64)> = Vec::new();
        let mut sync_before_entries = false;
        let mut pos = 0usize;
        while pos < data.len() {
            let guest = offset + pos as u64;
            let cluster = guest / CLUSTER;
            let in_cluster = guest % CLUSTER;
            let n = ((CLUSTER - in_cluster) as usize).min(data.len() - pos);
            let piece = &data[pos..pos + n];
            let entry = self.entry(&mut m, cluster)?;
            match place(entry) {
                Place::Data(host) => in_place.push((host + in_cluster, pos, n)),
                view => {
                    // A zeroed cluster keeps its allocation: reuse it.
                    let reused = entry & OFFSET_MASK;
                    let host = if reused != 0 { reused } else { self.alloc_cluster(&mut m)? };
                    if n as u64 == CLUSTER {
                        self.pwrite(piece, host, "data")?;
                    } else {
                        let mut buf = vec![0u8; CLUSTER as usize];
                        if view == Place::Backing {
                            self.base.read_at(&mut buf, cluster * CLUSTER)?;
                        }
                        let at = in_cluster as usize;
                        buf[at..at + n].copy_from_slice(piece);
                        // Bytes the guest did not write that must not read as zeros after a cut.
                        if buf[..at].iter().chain(&buf[at + n..]).any(|&b| b != 0) {
                            sync_before_entries = true;
                        }
                        self.pwrite(&buf, host, "data")?;
                    }
                    // A reused cluster holds stale data until this write is durable.
                    if reused != 0 {
                        sync_before_entries = true;
                    }
                    new_entries.push((cluster, host | COPIED));
                }
            }
            pos += n;
        }
        if new_entries.is_empty() {
            // Nothing changes in the metadata: the data goes in without holding the lock.
            drop(m);
            for &(host, at, n) in &in_place {
                self.pwrite(&data[at..at + n], host, "data")?;
            }
            return Ok(());
        }
        for &(host, at, n) in &in_place {
            self.pwrite(&data[at..at + n], host, "data")?;
        }
        if sync_before_entries {
            self.sync()?;
        }
        self.set_entries(&mut m, &new_entries)
    }

    /// Sets the zero flag on guest clusters [first, end), keeping their allocations.
    pub(super) fn zero_clusters(&self, first: u64, end: u64) -> Result<()> {
        let mut cluster = first;
        while cluster < end {
            // One L2 table's worth at a time, so the lock is not held for a whole disk.
            let stop = ((cluster / L2_ENTRIES + 1) * L2_ENTRIES).min(end);
            let mut m = self.meta();
            let mut updates = Vec::new();
            for c in cluster..stop {
                let entry = self.entry(&mut m, c)?;
                let host = entry & OFFSET_MASK;
                let zeroed = if host != 0 { host | COPIED | ZERO } else { ZERO };
                if zeroed != entry {
                    updates.push((c, zeroed));
                }
            }
            self.set_entries(&mut m, &updates)?;
            cluster = stop;
        }
        Ok(())
    }
}
