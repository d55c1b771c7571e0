//! Guest writes, discards and write-zeroes: data first, then the L2 entries that point at it.

use super::*;

/// Guest clusters [first, last] claimed by one allocating write, released when dropped.
struct Claim<'a> {
    overlay: &'a Qcow2Overlay,
    first: u64,
    last: u64,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut claimed = self.overlay.claimed.lock().unwrap_or_else(|e| e.into_inner());
        for c in self.first..=self.last {
            claimed.remove(&c);
        }
        self.overlay.released.notify_all();
    }
}

impl Qcow2Overlay {
    /// Waits until no other write holds any of guest clusters [first, last], then holds them.
    fn claim(&self, first: u64, last: u64) -> Claim<'_> {
        let mut claimed = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
        while (first..=last).any(|c| claimed.contains(&c)) {
            claimed = self.released.wait(claimed).unwrap_or_else(|e| e.into_inner());
        }
        claimed.extend(first..=last);
        Claim { overlay: self, first, last }
    }

    /// Where each cluster-sized piece of a write at guest `offset` of `len` bytes goes:
    /// (guest cluster, offset in the cluster, bytes, L2 entry).
    fn pieces(&self, offset: u64, len: usize) -> Result<Vec<(u64, u64, usize, u64)>> {
        let mut out = Vec::new();
        let mut pos = 0usize;
        while pos < len {
            let guest = offset + pos as u64;
            let in_cluster = guest % CLUSTER;
            let n = ((CLUSTER - in_cluster) as usize).min(len - pos);
            out.push((guest / CLUSTER, in_cluster, n, self.entry(guest / CLUSTER)?));
            pos += n;
        }
        Ok(out)
    }

    /// Writes `data` at guest `offset` (inside the disk).
    pub(super) fn write_range(&self, data: &[u8], offset: u64) -> Result<()> {
        if offset.checked_add(data.len() as u64).is_none_or(|end| end > self.size) || data.is_empty() {
            return Err(Error::from_errno(libc::EINVAL));
        }
        let in_place = |pieces: &[(u64, u64, usize, u64)]| -> Result<()> {
            let mut at = 0;
            for &(_, in_cluster, n, entry) in pieces {
                if let Place::Data(host) = place(entry) {
                    self.pwrite(&data[at..at + n], host + in_cluster, "data")?;
                }
                at += n;
            }
            Ok(())
        };
        // Into clusters already allocated: in place, no lock, nothing else changes.
        let pieces = self.pieces(offset, data.len())?;
        if pieces.iter().all(|p| matches!(place(p.3), Place::Data(_))) {
            return in_place(&pieces);
        }
        // The others get a cluster of their own (copy-on-write of the rest of the cluster) and
        // a new L2 entry. Claimed, so no other write allocates them meanwhile; looked up again,
        // as a write that held them may have just allocated them.
        let _claim = self.claim(pieces[0].0, pieces[pieces.len() - 1].0);
        let pieces = self.pieces(offset, data.len())?;
        // A zeroed cluster keeps its allocation: reuse it.
        let mut hosts = Vec::with_capacity(pieces.len());
        {
            let mut m = self.meta();
            for p in &pieces {
                hosts.push(match place(p.3) {
                    Place::Data(host) => host,
                    _ if p.3 & OFFSET_MASK != 0 => p.3 & OFFSET_MASK,
                    _ => self.alloc_cluster(&mut m)?,
                });
            }
        }
        let mut new_entries: Vec<(u64, u64)> = Vec::new();
        let mut sync_before_entries = false;
        let mut at = 0usize;
        for (&(cluster, in_cluster, n, entry), &host) in pieces.iter().zip(&hosts) {
            let piece = &data[at..at + n];
            at += n;
            let view = place(entry);
            if matches!(view, Place::Data(_)) {
                continue;
            }
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
            if entry & OFFSET_MASK != 0 {
                sync_before_entries = true;
            }
            new_entries.push((cluster, host | COPIED));
        }
        in_place(&pieces)?;
        if sync_before_entries {
            self.sync()?;
        }
        let mut m = self.meta();
        self.set_entries(&mut m, &new_entries)
    }

    /// Sets the zero flag on guest clusters [first, end), keeping their allocations.
    pub(super) fn zero_clusters(&self, first: u64, end: u64) -> Result<()> {
        let mut cluster = first;
        while cluster < end {
            // One L2 table's worth at a time, so the lock is not held for a whole disk.
            let stop = ((cluster / L2_ENTRIES + 1) * L2_ENTRIES).min(end);
            let mut m = self.meta();
            let table = self.table_locked(&m, (cluster / L2_ENTRIES) as usize)?;
            let mut updates = Vec::new();
            for c in cluster..stop {
                let entry = table.as_ref().map_or(0, |t| t[(c % L2_ENTRIES) as usize].load(Ordering::Acquire));
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
