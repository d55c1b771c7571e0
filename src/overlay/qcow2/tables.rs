//! The L1 table and the cached L2 tables: where a guest cluster is, and changing that.

use super::*;

/// Where a guest cluster's bytes come from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    Backing,
    Zero,
    Data(u64),
}

pub(super) fn place(entry: u64) -> Place {
    if entry & ZERO != 0 {
        Place::Zero
    } else if entry & OFFSET_MASK != 0 {
        Place::Data(entry & OFFSET_MASK)
    } else {
        Place::Backing
    }
}

impl Qcow2Overlay {
    /// Where the guest bytes from `guest` come from, and how many of them (at most `max` and
    /// one L2 table's reach) come from there alike: `read` and `map_read` both walk with this.
    pub(super) fn run_at(&self, guest: u64, max: u64) -> Result<(Place, u64)> {
        let table = self.table((guest / CLUSTER / L2_ENTRIES) as usize)?;
        // u64::MAX past the table's end: the run stops there (another table, looked up anew).
        let at = |cluster: u64| -> u64 {
            if cluster / L2_ENTRIES != guest / CLUSTER / L2_ENTRIES {
                return u64::MAX;
            }
            table.as_ref().map_or(0, |t| t[(cluster % L2_ENTRIES) as usize].load(Ordering::Acquire))
        };
        let first = place(at(guest / CLUSTER));
        let mut len = (CLUSTER - guest % CLUSTER).min(max);
        while len < max {
            let next = guest + len;
            let entry = at(next / CLUSTER);
            if entry == u64::MAX {
                break;
            }
            let following = place(entry);
            // Data continues only where the clusters are contiguous in the file.
            let continues = match (first, following) {
                (Place::Data(h0), Place::Data(h)) => h == h0 + (next / CLUSTER - guest / CLUSTER) * CLUSTER,
                (Place::Data(_), _) | (_, Place::Data(_)) => false,
                (a, b) => a == b,
            };
            if !continues {
                break;
            }
            len += CLUSTER.min(max - len);
        }
        Ok((first, len))
    }

    /// L2 table `l1i`, from the cache or the file; None if it does not exist yet. Takes no lock
    /// unless the table must be loaded.
    pub(super) fn table(&self, l1i: usize) -> Result<Option<L2Table>> {
        if let Some(t) = self.l2.get(&l1i) {
            return Ok(Some(t));
        }
        if self.l1.get(l1i).is_none_or(|e| e.load(Ordering::Acquire) & OFFSET_MASK == 0) {
            return Ok(None);
        }
        let m = self.meta();
        self.table_locked(&m, l1i)
    }

    /// `table`, for a caller holding `meta` (which every change of the tables holds, so what
    /// is loaded from the file is current).
    pub(super) fn table_locked(&self, m: &Meta, l1i: usize) -> Result<Option<L2Table>> {
        if let Some(t) = self.l2.get(&l1i) {
            return Ok(Some(t));
        }
        let offset = self.l1.get(l1i).map_or(0, |e| e.load(Ordering::Acquire)) & OFFSET_MASK;
        if offset == 0 {
            return Ok(None);
        }
        let mut raw = vec![0u8; CLUSTER as usize];
        self.pread(&mut raw, offset, "an L2 table")?;
        let table: Vec<u64> = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
        for (i, &e) in table.iter().enumerate() {
            let host = e & OFFSET_MASK;
            let bad = if e & COMPRESSED != 0 {
                Some("is a compressed cluster, which vdmount does not write to")
            } else if e & L2_RESERVED != 0 || !host.is_multiple_of(CLUSTER) || host / CLUSTER >= m.file_end {
                Some("is malformed or points past the end of the file")
            } else if host != 0 && e & COPIED == 0 {
                Some("points at a shared cluster, which vdmount does not write to")
            } else {
                None
            };
            if let Some(why) = bad {
                return Err(Error::unsupported(
                    &self.path,
                    format!("qcow2 overlay: L2 entry {i} ({e:#x}) of the table at offset {offset} {why}; start a new overlay"),
                ));
            }
        }
        let table: L2Table = table.into_iter().map(AtomicU64::new).collect();
        self.l2.insert(l1i, table.clone());
        Ok(Some(table))
    }

    /// The L2 entry of guest cluster `cluster` (0 where no L2 table exists).
    pub(super) fn entry(&self, cluster: u64) -> Result<u64> {
        let table = self.table((cluster / L2_ENTRIES) as usize)?;
        Ok(table.map_or(0, |t| t[(cluster % L2_ENTRIES) as usize].load(Ordering::Acquire)))
    }

    /// Writes L2 entries `(guest cluster, entry)`, sorted by cluster, making L2 tables as needed:
    /// one write per table touched. The callers have already made whatever the entries point at
    /// safe to point at.
    pub(super) fn set_entries(&self, m: &mut Meta, updates: &[(u64, u64)]) -> Result<()> {
        let mut i = 0;
        while i < updates.len() {
            let l1i = (updates[i].0 / L2_ENTRIES) as usize;
            let group_len = updates[i..].iter().take_while(|(c, _)| (c / L2_ENTRIES) as usize == l1i).count();
            let group = &updates[i..i + group_len];
            i += group_len;
            if l1i >= self.l1.len() {
                return Err(Error::from_errno(libc::EINVAL));
            }
            let (table, table_offset, new_table) = match self.table_locked(m, l1i)? {
                Some(t) => (t, self.l1[l1i].load(Ordering::Acquire) & OFFSET_MASK, false),
                // A fresh cluster reads as zeros: an empty table until the entries land.
                None => ((0..L2_ENTRIES).map(|_| AtomicU64::new(0)).collect::<L2Table>(), self.alloc_cluster(m)?, true),
            };
            let lo = group[0].0 % L2_ENTRIES;
            let hi = group[group_len - 1].0 % L2_ENTRIES;
            // The entries from lo to hi as they will be, written in one go.
            let mut span: Vec<u64> =
                table[lo as usize..=hi as usize].iter().map(|e| e.load(Ordering::Acquire)).collect();
            for &(c, e) in group {
                span[(c % L2_ENTRIES - lo) as usize] = e;
            }
            let mut result = self.pwrite(&table_bytes(&span), table_offset + lo * 8, "an L2 table");
            if result.is_ok() && new_table {
                // The L1 entry goes after the table's entries: a cut in between leaves an
                // unreferenced (leaked) cluster, never a table with stale contents.
                result = self.pwrite(
                    &(table_offset | COPIED).to_be_bytes(),
                    self.l1_offset + l1i as u64 * 8,
                    "the L1 table",
                );
            }
            if result.is_err() {
                // Forget what may not match the file; it is reloaded from there.
                self.l2.remove(&l1i);
                return result;
            }
            for &(c, e) in group {
                table[(c % L2_ENTRIES) as usize].store(e, Ordering::Release);
            }
            if new_table {
                self.l2.insert(l1i, table);
                self.l1[l1i].store(table_offset | COPIED, Ordering::Release);
            }
        }
        Ok(())
    }
}
