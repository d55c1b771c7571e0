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
        let mut m = self.meta();
        let first = place(self.entry(&mut m, guest / CLUSTER)?);
        let mut len = (CLUSTER - guest % CLUSTER).min(max);
        while len < max && len < CLUSTER * L2_ENTRIES {
            let next = guest + len;
            let following = place(self.entry(&mut m, next / CLUSTER)?);
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

    /// Loads L2 table `l1i` into the cache; false if it does not exist yet.
    pub(super) fn load_table(&self, m: &mut Meta, l1i: usize) -> Result<bool> {
        if m.l2.contains_key(&l1i) {
            return Ok(true);
        }
        let offset = m.l1.get(l1i).copied().unwrap_or(0) & OFFSET_MASK;
        if offset == 0 {
            return Ok(false);
        }
        let mut raw = vec![0u8; CLUSTER as usize];
        self.pread(&mut raw, offset, "an L2 table")?;
        let table: Box<[u64]> = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
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
        self.cache_table(m, l1i, table);
        Ok(true)
    }

    pub(super) fn cache_table(&self, m: &mut Meta, l1i: usize, table: Box<[u64]>) {
        if m.l2.len() >= MAX_CACHED_L2 {
            if let Some(&victim) = m.l2.keys().find(|&&k| k != l1i) {
                m.l2.remove(&victim);
            }
        }
        m.l2.insert(l1i, table);
    }

    /// The L2 entry of guest cluster `cluster` (0 where no L2 table exists).
    pub(super) fn entry(&self, m: &mut Meta, cluster: u64) -> Result<u64> {
        let l1i = (cluster / L2_ENTRIES) as usize;
        if !self.load_table(m, l1i)? {
            return Ok(0);
        }
        Ok(m.l2.get(&l1i).and_then(|t| t.get((cluster % L2_ENTRIES) as usize)).copied().unwrap_or(0))
    }

    /// Writes L2 entries `(guest cluster, entry)`, sorted by cluster, making L2 tables as needed.
    /// The callers have already made whatever the entries point at safe to point at.
    pub(super) fn set_entries(&self, m: &mut Meta, updates: &[(u64, u64)]) -> Result<()> {
        let mut i = 0;
        while i < updates.len() {
            let l1i = (updates[i].0 / L2_ENTRIES) as usize;
            let group_len = updates[i..].iter().take_while(|(c, _)| (c / L2_ENTRIES) as usize == l1i).count();
            let group = &updates[i..i + group_len];
            i += group_len;
            if l1i >= m.l1.len() {
                return Err(Error::from_errno(libc::EINVAL));
            }
            let new_table = !self.load_table(m, l1i)?;
            let table_offset = if new_table {
                // A fresh cluster reads as zeros: an empty table until the entries land.
                let offset = self.alloc_cluster(m)?;
                self.cache_table(m, l1i, vec![0u64; L2_ENTRIES as usize].into_boxed_slice());
                offset
            } else {
                m.l1[l1i] & OFFSET_MASK
            };
            let Some(table) = m.l2.get_mut(&l1i) else { return Err(Error::from_errno(libc::EIO)) };
            for &(c, e) in group {
                table[(c % L2_ENTRIES) as usize] = e;
            }
            let lo = group[0].0 % L2_ENTRIES;
            let hi = group[group_len - 1].0 % L2_ENTRIES;
            let bytes = table_bytes(&table[lo as usize..=hi as usize]);
            let mut result = self.pwrite(&bytes, table_offset + lo * 8, "an L2 table");
            if result.is_ok() && new_table {
                // The L1 entry goes after the table's entries: a cut in between leaves an
                // unreferenced (leaked) cluster, never a table with stale contents.
                result =
                    self.pwrite(&(table_offset | COPIED).to_be_bytes(), m.l1_offset + l1i as u64 * 8, "the L1 table");
                if result.is_ok() {
                    m.l1[l1i] = table_offset | COPIED;
                }
            }
            if result.is_err() {
                // Forget what may not match the file; it is reloaded from there.
                m.l2.remove(&l1i);
                return result;
            }
        }
        Ok(())
    }
}
