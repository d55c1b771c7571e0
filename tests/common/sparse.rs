//! Writes Apple sparse images (.sparseimage) and sparse bundles (.sparsebundle) from a source
//! disk, as hdiutil lays them out (libmodi's "Mac OS disk image types"; index nodes as
//! apfs-fuse's AppleSparseimage writes them). No Linux tool writes these and qemu cannot read
//! them: tests compare `vdmount cat` with the source disk they were made from.

use std::path::Path;

pub const NODE: usize = 4096;
const HEADER_SLOTS: usize = 1008;
const INDEX_SLOTS: usize = 1010;

/// The bands of `src` (cut into `band` bytes) holding anything but zeros.
pub fn nonzero_bands(src: &[u8], band: usize) -> Vec<usize> {
    src.chunks(band).enumerate().filter(|(_, b)| b.iter().any(|&x| x != 0)).map(|(i, _)| i).collect()
}

/// A deterministic shuffle: bands are stored in the order they were first written, not disk order.
pub fn shuffled(mut v: Vec<usize>, seed: u64) -> Vec<usize> {
    let mut rng = super::rng::Rng(seed | 1);
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i as u64 + 1) as usize);
    }
    v
}

/// A .sparseimage of `src` with bands of `sectors_per_band` sectors, storing `order` (bands of
/// the disk, from 0) in that order; more than 1008 bands add index nodes.
pub fn sparseimage(src: &[u8], sectors_per_band: u32, order: &[usize]) -> Vec<u8> {
    let band = sectors_per_band as usize * 512;
    let sectors = src.len().div_ceil(512) as u64;
    let mut out = vec![0u8; NODE];
    out[..4].copy_from_slice(b"sprs");
    out[4..8].copy_from_slice(&3u32.to_be_bytes());
    out[8..12].copy_from_slice(&sectors_per_band.to_be_bytes());
    out[12..16].copy_from_slice(&1u32.to_be_bytes());
    out[16..20].copy_from_slice(&(sectors as u32).to_be_bytes());
    out[28..36].copy_from_slice(&sectors.to_be_bytes());
    // The node being filled: its offset, where its slots start, how many it has and has used.
    let (mut node, mut slots_at, mut slots, mut used) = (0usize, 64usize, HEADER_SLOTS, 0usize);
    let mut node_number = 0u32;
    for &b in order {
        if used == slots {
            let at = out.len();
            let next_field = if node == 0 { 20 } else { node + 12 };
            out[next_field..next_field + 8].copy_from_slice(&(at as u64).to_be_bytes());
            out.resize(at + NODE, 0);
            out[at..at + 4].copy_from_slice(b"sprs");
            out[at + 4..at + 8].copy_from_slice(&node_number.to_be_bytes());
            out[at + 8..at + 12].copy_from_slice(&1u32.to_be_bytes());
            node_number += 1;
            (node, slots_at, slots, used) = (at, at + 56, INDEX_SLOTS, 0);
        }
        out[slots_at + 4 * used..slots_at + 4 * used + 4].copy_from_slice(&(b as u32 + 1).to_be_bytes());
        used += 1;
        let start = b * band;
        let mut data = src[start..(start + band).min(src.len())].to_vec();
        data.resize(band, 0);
        out.extend_from_slice(&data);
    }
    out
}

/// What to put in a sparse bundle besides its bands.
pub struct Bundle<'a> {
    pub band_size: u64,
    /// Store only the bands listed (of the disk, from 0).
    pub bands: &'a [usize],
    /// Cut each band file's trailing zeros (a short band reads as zeros past its end).
    pub trim: bool,
}

pub fn info_plist(band_size: &str, size: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n<dict>\n\
         \t<key>CFBundleInfoDictionaryVersion</key>\n\t<string>6.0</string>\n\
         \t<key>band-size</key>\n\t{band_size}\n\
         \t<key>bundle-backingstore-version</key>\n\t<integer>1</integer>\n\
         \t<key>diskimage-bundle-type</key>\n\t<string>com.apple.diskimage.sparsebundle</string>\n\
         \t<key>size</key>\n\t{size}\n\
         </dict>\n</plist>\n"
    )
}

/// Writes the bundle folder `dir` (Info.plist, Info.bckup, token, bands/) holding `src`.
pub fn sparsebundle(dir: &Path, src: &[u8], plan: &Bundle) {
    std::fs::create_dir_all(dir.join("bands")).unwrap();
    let plist =
        info_plist(&format!("<integer>{}</integer>", plan.band_size), &format!("<integer>{}</integer>", src.len()));
    std::fs::write(dir.join("Info.plist"), &plist).unwrap();
    std::fs::write(dir.join("Info.bckup"), &plist).unwrap();
    std::fs::write(dir.join("token"), b"").unwrap();
    let band = plan.band_size as usize;
    for &b in plan.bands {
        let start = b * band;
        let mut data = &src[start..(start + band).min(src.len())];
        if plan.trim {
            let keep = data.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1);
            data = &data[..keep];
        }
        std::fs::write(dir.join("bands").join(format!("{b:x}")), data).unwrap();
    }
}
