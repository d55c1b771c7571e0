//! Handing out clusters from a durable reservation at the end of the file (see mod.rs for the
//! crash-safety rules).

use super::*;

impl Qcow2Overlay {
    /// A cluster whose refcount is already durably 1 and which reads as zeros (host offset).
    pub(super) fn alloc_cluster(&self, m: &mut Meta) -> Result<u64> {
        while m.next_free >= m.file_end {
            self.reserve(m)?;
        }
        let cluster = m.next_free;
        m.next_free += 1;
        Ok(cluster * CLUSTER)
    }

    /// Extends the file by a run of clusters with refcount 1, synced before any is used. A run
    /// never crosses into the next refcount block's range; a missing block is made at the start
    /// of its range (covering itself).
    pub(super) fn reserve(&self, m: &mut Meta) -> Result<()> {
        let start = m.file_end;
        let block_index = start / REFCOUNTS_PER_BLOCK;
        let Some(&block) = m.refcount_table.get(block_index as usize) else {
            return Err(Error::io(
                &self.path,
                "the qcow2 overlay's refcount table is full (the file would pass its size limit)",
                io::Error::from_raw_os_error(libc::ENOSPC),
            ));
        };
        let range_end = (block_index + 1) * REFCOUNTS_PER_BLOCK;
        let count = (start / 8).clamp(MIN_RESERVE_CLUSTERS, MAX_RESERVE_CLUSTERS);
        if block == 0 {
            let end = (start + 1 + count).min(range_end);
            let mut buf = vec![0u8; CLUSTER as usize];
            for c in start..end {
                let at = ((c % REFCOUNTS_PER_BLOCK) * 2) as usize;
                buf[at..at + 2].copy_from_slice(&1u16.to_be_bytes());
            }
            self.file.set_len(end * CLUSTER).map_err(|e| self.io_err("extending", e))?;
            self.pwrite(&buf, start * CLUSTER, "a refcount block")?;
            self.sync()?;
            // The table points at the block only once the block is durable.
            self.pwrite(
                &(start * CLUSTER).to_be_bytes(),
                m.refcount_table_offset + block_index * 8,
                "the refcount table",
            )?;
            self.sync()?;
            m.refcount_table[block_index as usize] = start * CLUSTER;
            m.next_free = start + 1;
            m.file_end = end;
        } else {
            let end = (start + count).min(range_end);
            let ones: Vec<u8> = (start..end).flat_map(|_| 1u16.to_be_bytes()).collect();
            // The file grows first, so no refcount ever lies past its end.
            self.file.set_len(end * CLUSTER).map_err(|e| self.io_err("extending", e))?;
            self.pwrite(&ones, block + (start % REFCOUNTS_PER_BLOCK) * 2, "a refcount block")?;
            self.sync()?;
            m.next_free = start;
            m.file_end = end;
        }
        Ok(())
    }
}
