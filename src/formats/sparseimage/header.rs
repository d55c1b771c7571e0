//! A .sparseimage's header and band map. The file starts with a 4096-byte header node: "sprs",
//! a version, the band size in sectors, the disk size in sectors, the offset of the next index
//! node, and 1008 band slots. Each index node (4096 bytes, "sprs" too) holds 1010 more slots and
//! the offset of the next. Slot i of a node says which band of the disk (counted from 1; 0: the
//! slot is unused) is stored at node offset + 4096 + i × band size. Big-endian throughout.
//! Layout from libmodi's "Mac OS disk image types" and apfs-fuse's AppleSparseimage.

use crate::error::{Error, Result};
use crate::formats::bytes::{be32, be64};
use crate::formats::SECTOR;
use crate::limits::{self, MemoryBudget, MAX_SPARSE_BAND_BYTES, MAX_VIRTUAL_SIZE};
use crate::source::file::ImageFile;

pub const MAGIC: &[u8; 4] = b"sprs";
/// Header and index nodes are this long; band data follows each node.
pub const NODE_BYTES: u64 = 4096;
/// Where the header node's slots start (1008 of them), and an index node's (1010).
const HEADER_SLOTS_AT: usize = 64;
const INDEX_SLOTS_AT: usize = 56;

pub struct Header {
    pub version: u32,
    pub flags: u32,
    pub sectors_per_band: u32,
    /// The disk's size in sectors (the 64-bit field; the 32-bit one where that is 0).
    pub sectors: u64,
    /// The 32-bit size field, shown by `info` when it differs.
    pub sectors_low: u32,
    pub band_bytes: u64,
    /// Bands the disk is cut into (the last may be partial).
    pub bands: u64,
}

impl Header {
    pub fn size(&self) -> u64 {
        self.sectors * SECTOR
    }
}

/// Where each stored band's data lies.
pub struct BandMap {
    /// (band of the disk, from 0; offset of its data in the file), sorted by band, no repeats.
    pub stored: Vec<(u64, u64)>,
    /// Nodes read: the header and its index nodes.
    pub nodes: u64,
}

pub fn read_header(file: &ImageFile) -> Result<(Header, [u8; NODE_BYTES as usize])> {
    let path = &file.path;
    let mut node = [0u8; NODE_BYTES as usize];
    file.read_exact_at(&mut node, 0, "the sparse image header")?;
    if &node[..4] != MAGIC {
        return Err(Error::corrupt(path, "does not start with \"sprs\": not an Apple sparse image"));
    }
    let sectors_per_band = be32(&node, 8);
    if sectors_per_band == 0 {
        return Err(Error::corrupt(path, "the sparse image header gives bands of 0 sectors; the image is corrupt"));
    }
    let band_bytes = u64::from(sectors_per_band) * SECTOR;
    limits::check(path, "the band size", band_bytes, MAX_SPARSE_BAND_BYTES)?;
    let sectors_low = be32(&node, 16);
    let sectors = match be64(&node, 28) {
        0 => u64::from(sectors_low),
        n => n,
    };
    limits::check(path, "the disk size in sectors", sectors, MAX_VIRTUAL_SIZE / SECTOR)?;
    let header = Header {
        version: be32(&node, 4),
        flags: be32(&node, 12),
        sectors_per_band,
        sectors,
        sectors_low,
        band_bytes,
        bands: (sectors * SECTOR).div_ceil(band_bytes),
    };
    Ok((header, node))
}

/// Walks the header node `first` and its chain of index nodes, gathering every used slot.
pub fn read_band_map(file: &ImageFile, h: &Header, first: &[u8], budget: &MemoryBudget) -> Result<BandMap> {
    let path = &file.path;
    let corrupt = |msg: String| Error::corrupt(path, format!("{msg}; the image is corrupt"));
    // Every node but the last holds at least one new band (a chain of empty nodes is refused by
    // this count), so a well-formed chain is never longer.
    let most_nodes = h.bands / 1008 + 2;
    let mut stored = Vec::new();
    let mut node_at = 0u64;
    let mut node = first.to_vec();
    let mut nodes = 0u64;
    loop {
        nodes += 1;
        let (slots_at, next) =
            if node_at == 0 { (HEADER_SLOTS_AT, be64(&node, 20)) } else { (INDEX_SLOTS_AT, be64(&node, 12)) };
        let slots = (node.len() - slots_at) / 4;
        budget.take(path, "the sparse image band map", (slots * std::mem::size_of::<(u64, u64)>()) as u64)?;
        for i in 0..slots {
            let band = u64::from(be32(&node, slots_at + 4 * i));
            if band == 0 {
                continue;
            }
            if band > h.bands {
                return Err(corrupt(format!(
                    "slot {i} of the band map node at offset {node_at} names band {band}, but the disk has only {} bands",
                    h.bands
                )));
            }
            // node_at is inside the file and the band at most 4 GiB: no overflow.
            stored.push((band - 1, node_at + NODE_BYTES + i as u64 * h.band_bytes));
        }
        if next == 0 {
            break;
        }
        if next < node_at + NODE_BYTES {
            return Err(corrupt(format!(
                "the band map node at offset {node_at} says the next one is at {next}, not after it (a loop?)"
            )));
        }
        if nodes >= most_nodes {
            return Err(corrupt(format!(
                "its band map goes on past {most_nodes} nodes, more than {} bands need",
                h.bands
            )));
        }
        node_at = next;
        file.read_exact_at(&mut node, node_at, "a sparse image index node")?;
        if &node[..4] != MAGIC {
            return Err(corrupt(format!("the index node at offset {node_at} does not start with \"sprs\"")));
        }
    }
    stored.sort_unstable();
    if let Some(w) = stored.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(corrupt(format!(
            "band {} is stored twice, at offsets {} and {}",
            w[0].0 + 1,
            w[0].1.min(w[1].1),
            w[0].1.max(w[1].1)
        )));
    }
    stored.shrink_to_fit();
    Ok(BandMap { stored, nodes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::file::{assert_refused, parse_edited};

    /// A header node for a 4 MiB disk of 1 MiB bands storing bands 2 and 4 (libmodi's sample
    /// header has these fields), followed by their data.
    fn image() -> Vec<u8> {
        let mut b = vec![0u8; 4096 + 2 * (1 << 20)];
        b[..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        b[8..12].copy_from_slice(&2048u32.to_be_bytes());
        b[12..16].copy_from_slice(&1u32.to_be_bytes());
        b[16..20].copy_from_slice(&8192u32.to_be_bytes());
        b[28..36].copy_from_slice(&8192u64.to_be_bytes());
        b[64..68].copy_from_slice(&2u32.to_be_bytes());
        b[68..72].copy_from_slice(&4u32.to_be_bytes());
        b
    }

    fn parse(file: &ImageFile) -> Result<BandMap> {
        let (h, node) = read_header(file)?;
        read_band_map(file, &h, &node, &MemoryBudget::default())
    }

    #[test]
    fn reads_slots_in_file_order() {
        let map = parse_edited(image(), |_| {}, parse).unwrap();
        assert_eq!(map.stored, vec![(1, 4096), (3, 4096 + (1 << 20))]);
        assert_eq!(map.nodes, 1);
    }

    #[test]
    fn refuses_bad_maps() {
        fn set(at: usize, v: &[u8]) -> impl Fn(&mut Vec<u8>) + '_ {
            move |b: &mut Vec<u8>| b[at..at + v.len()].copy_from_slice(v)
        }
        assert_refused(parse_edited(image(), set(0, b"sprz"), parse), "does not start with \"sprs\"");
        assert_refused(parse_edited(image(), set(8, &0u32.to_be_bytes()), parse), "bands of 0 sectors");
        assert_refused(parse_edited(image(), set(72, &5u32.to_be_bytes()), parse), "has only 4 bands");
        assert_refused(parse_edited(image(), set(72, &2u32.to_be_bytes()), parse), "band 2 is stored twice");
        assert_refused(parse_edited(image(), set(20, &8u64.to_be_bytes()), parse), "not after it");
        assert_refused(parse_edited(image(), set(20, &(1u64 << 40).to_be_bytes()), parse), "past the end");
        assert_refused(parse_edited(image(), |b| b.truncate(4000), parse), "past the end of the file");
        assert_refused(parse_edited(image(), set(8, &u32::MAX.to_be_bytes()), parse), "band size");
        assert_refused(parse_edited(image(), set(28, &u64::MAX.to_be_bytes()), parse), "disk size");
    }

    #[test]
    fn follows_index_nodes() {
        // An index node after band 2's data holding band 1 in its first slot.
        let mut b = image();
        let at = b.len() as u64;
        b[20..28].copy_from_slice(&at.to_be_bytes());
        let mut node = vec![0u8; 4096];
        node[..4].copy_from_slice(MAGIC);
        node[56..60].copy_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(&node);
        let map = parse_edited(b.clone(), |_| {}, parse).unwrap();
        assert_eq!(map.stored[0], (0, at + 4096));
        assert_eq!(map.nodes, 2);
        // A node pointing back at itself is a loop.
        let looped =
            parse_edited(b, move |b| b[at as usize + 12..at as usize + 20].copy_from_slice(&at.to_be_bytes()), parse);
        assert_refused(looped, "not after it");
    }
}
