//! The overlay file's header: what `create` writes, and the backing file name `open` checks.

use super::*;

/// qemu's driver name for a format name as vdmount or qemu spell it.
pub(super) fn qemu_format_name(path: &Path, format: &str) -> Result<&'static str> {
    Ok(match format.to_ascii_lowercase().as_str() {
        "raw" => "raw",
        "qcow2" => "qcow2",
        "qcow" => "qcow",
        "vmdk" => "vmdk",
        "vhd" | "vpc" => "vpc",
        "vhdx" => "vhdx",
        "vdi" => "vdi",
        "qed" => "qed",
        other => {
            return Err(Error::unsupported(
                path,
                format!("cannot record backing format {other:?} in a qcow2 overlay: qemu knows no such format"),
            ))
        }
    })
}

/// The backing file name a qcow2 overlay records, read from the already opened `file` (so it
/// is the very file we will write to, not whatever its name points at by now). A relative name
/// is resolved against the overlay's folder, as qemu does.
pub fn backing_file_name(file: &dyn OverlayFile, path: &Path) -> Result<Option<PathBuf>> {
    let mut h = [0u8; 20];
    file.read_at(&mut h, 0).map_err(|e| Error::io(path, "cannot read the qcow2 overlay's header", e))?;
    if &h[0..4] != MAGIC {
        return Err(Error::unsupported(path, "is not a qcow2 file; give a qcow2 overlay, or a new FILE to create one"));
    }
    let (offset, len) = (be64(&h, 8), be32(&h, 16) as usize);
    if offset == 0 || len == 0 {
        return Ok(None);
    }
    if len as u64 > MAX_BACKING_NAME {
        return Err(Error::corrupt(
            path,
            format!("qcow2 overlay: backing file name of {len} bytes (at most {MAX_BACKING_NAME})"),
        ));
    }
    let mut name = vec![0u8; len];
    file.read_at(&mut name, offset)
        .map_err(|e| Error::io(path, "cannot read the qcow2 overlay's backing file name", e))?;
    let name = PathBuf::from(std::ffi::OsStr::from_bytes(&name));
    Ok(Some(match path.parent() {
        Some(dir) if name.is_relative() => dir.join(name),
        _ => name,
    }))
}

/// The header cluster: v3 header, backing format extension, end of extensions, backing name.
pub(super) fn header_cluster(
    size: u64,
    l1_size: u32,
    l1_offset: u64,
    refcount_table_clusters: u32,
    format: &str,
    name: &[u8],
) -> Vec<u8> {
    let mut h = Vec::with_capacity(CLUSTER as usize);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&3u32.to_be_bytes());
    let name_offset_at = h.len();
    h.extend_from_slice(&0u64.to_be_bytes()); // backing file offset, filled below
    h.extend_from_slice(&(name.len() as u32).to_be_bytes());
    h.extend_from_slice(&CLUSTER_BITS.to_be_bytes());
    h.extend_from_slice(&size.to_be_bytes());
    h.extend_from_slice(&0u32.to_be_bytes()); // no encryption
    h.extend_from_slice(&l1_size.to_be_bytes());
    h.extend_from_slice(&l1_offset.to_be_bytes());
    h.extend_from_slice(&CLUSTER.to_be_bytes()); // refcount table offset
    h.extend_from_slice(&refcount_table_clusters.to_be_bytes());
    h.extend_from_slice(&0u32.to_be_bytes()); // no snapshots
    h.extend_from_slice(&0u64.to_be_bytes()); // snapshots offset
    h.extend_from_slice(&0u64.to_be_bytes()); // incompatible features
    h.extend_from_slice(&0u64.to_be_bytes()); // compatible features
    h.extend_from_slice(&0u64.to_be_bytes()); // autoclear features
    h.extend_from_slice(&REFCOUNT_ORDER.to_be_bytes());
    h.extend_from_slice(&V3_HEADER_LEN.to_be_bytes());
    h.push(0); // compression type zlib
    h.resize(V3_HEADER_LEN as usize, 0);
    h.extend_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
    h.extend_from_slice(&(format.len() as u32).to_be_bytes());
    h.extend_from_slice(format.as_bytes());
    h.resize(h.len().next_multiple_of(8), 0);
    h.extend_from_slice(&[0u8; 8]); // end of extensions
    let name_offset = h.len() as u64;
    h[name_offset_at..name_offset_at + 8].copy_from_slice(&name_offset.to_be_bytes());
    h.extend_from_slice(name);
    h.resize(CLUSTER as usize, 0);
    h
}
