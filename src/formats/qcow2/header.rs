//! The qcow2 header (versions 2 and 3) and its extensions, with the checks that decide whether
//! vdmount can read the image at all.

use super::compressed::Compression;
use crate::error::{Error, Result};
use crate::formats::image_file::{be32, be64, ImageFile};
use crate::limits;

/// Incompatible feature bits (header offset 72, version 3).
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 = 0x1f;
/// Compatible and autoclear bits vdmount names in `info`.
const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;
const AUTOCLEAR_BITMAPS: u64 = 1 << 0;
const AUTOCLEAR_RAW_DATA: u64 = 1 << 1;

/// Header extension types.
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_NAMES: u32 = 0x6803_f857;
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// Length of the version 2 header; version 3 headers are at least 104 bytes.
const V2_HEADER_LEN: u64 = 72;
const V3_MIN_HEADER_LEN: u64 = 104;
/// qemu refuses backing file names longer than this.
const MAX_BACKING_NAME: u64 = 1023;
/// Cluster sizes qcow2 allows: 512 B to 2 MiB.
const MIN_CLUSTER_BITS: u32 = 9;
const MAX_CLUSTER_BITS: u32 = 21;

pub struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible: u64,
    pub compatible: u64,
    pub autoclear: u64,
    pub compression: Compression,
    pub backing_file: Option<Vec<u8>>,
    pub backing_format: Option<String>,
    pub data_file: Option<Vec<u8>>,
    /// (type, bit, name) from the feature name table: type 0 incompatible, 1 compatible, 2 autoclear.
    pub feature_names: Vec<(u8, u8, String)>,
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }
    pub fn extended_l2(&self) -> bool {
        self.incompatible & INCOMPAT_EXTENDED_L2 != 0
    }
    pub fn has_data_file(&self) -> bool {
        self.incompatible & INCOMPAT_DATA_FILE != 0
    }

    /// Feature names for `info`.
    pub fn feature_list(&self) -> Vec<String> {
        let mut f = Vec::new();
        let named = |kind: u8, bits: u64, known: &[(u64, &str)], f: &mut Vec<String>| {
            for bit in 0..64 {
                let mask = 1u64 << bit;
                if bits & mask == 0 {
                    continue;
                }
                match known.iter().find(|(m, _)| *m == mask) {
                    Some((_, name)) => f.push(name.to_string()),
                    None => {
                        let kind_name = ["incompatible", "compatible", "autoclear"][kind as usize];
                        f.push(match self.feature_name(kind, bit) {
                            Some(n) => format!("{kind_name} bit {bit} ({n})"),
                            None => format!("{kind_name} bit {bit}"),
                        })
                    }
                }
            }
        };
        named(
            0,
            self.incompatible & !INCOMPAT_COMPRESSION,
            &[(INCOMPAT_DIRTY, "dirty"), (INCOMPAT_DATA_FILE, "external_data_file"), (INCOMPAT_EXTENDED_L2, "extended_l2")],
            &mut f,
        );
        if self.compression != Compression::Zlib {
            f.push(format!("compression={}", self.compression.name()));
        }
        named(1, self.compatible, &[(COMPAT_LAZY_REFCOUNTS, "lazy_refcounts")], &mut f);
        named(2, self.autoclear, &[(AUTOCLEAR_BITMAPS, "bitmaps"), (AUTOCLEAR_RAW_DATA, "raw_external_data")], &mut f);
        f
    }

    fn feature_name(&self, kind: u8, bit: u32) -> Option<&str> {
        self.feature_names.iter().find(|(k, b, _)| *k == kind && u32::from(*b) == bit).map(|(_, _, n)| n.as_str())
    }
}

/// Reads and checks the header of a qcow2 file (version 2 or 3).
pub fn read_header(file: &ImageFile) -> Result<Header> {
    let path = &file.path;
    let mut fixed = [0u8; V2_HEADER_LEN as usize];
    file.read_exact_at(&mut fixed, 0, "the qcow2 header")?;
    let version = be32(&fixed, 4);
    if version != 2 && version != 3 {
        return Err(Error::unsupported(
            path,
            format!("qcow2 version {version} is not one vdmount reads (it reads versions 1, 2 and 3)"),
        ));
    }
    let cluster_bits = be32(&fixed, 20);
    if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
        return Err(Error::corrupt(
            path,
            format!("qcow2 header: cluster_bits is {cluster_bits}, but cluster sizes must be 512 B to 2 MiB (cluster_bits 9 to 21); the image is corrupt"),
        ));
    }
    let cluster_size = 1u64 << cluster_bits;
    let mut h = Header {
        version,
        cluster_bits,
        size: be64(&fixed, 24),
        l1_size: be32(&fixed, 36),
        l1_table_offset: be64(&fixed, 40),
        nb_snapshots: be32(&fixed, 60),
        snapshots_offset: be64(&fixed, 64),
        incompatible: 0,
        compatible: 0,
        autoclear: 0,
        compression: Compression::Zlib,
        backing_file: None,
        backing_format: None,
        data_file: None,
        feature_names: Vec::new(),
    };
    let backing_file_offset = be64(&fixed, 8);
    let backing_file_size = u64::from(be32(&fixed, 16));
    let crypt_method = be32(&fixed, 32);

    // Version 3 fields, and where the header extensions start.
    let mut header_length = V2_HEADER_LEN;
    let mut v3 = [0u8; (V3_MIN_HEADER_LEN - V2_HEADER_LEN) as usize];
    if version == 3 {
        file.read_exact_at(&mut v3, V2_HEADER_LEN, "the qcow2 version 3 header")?;
        h.incompatible = be64(&v3, 0);
        h.compatible = be64(&v3, 8);
        h.autoclear = be64(&v3, 16);
        header_length = u64::from(be32(&v3, 28));
        if header_length < V3_MIN_HEADER_LEN || header_length > cluster_size {
            return Err(Error::corrupt(
                path,
                format!("qcow2 header: header_length is {header_length}, outside 104..{cluster_size} (the cluster size); the image is corrupt"),
            ));
        }
    }

    // The header region holds the extensions: up to the backing file name or the end of the
    // first cluster. Bytes past the end of the file read as zeros (an end marker), as in qemu.
    let ext_end = if backing_file_offset != 0 { backing_file_offset.min(cluster_size) } else { cluster_size };
    let mut region = vec![0u8; ext_end.max(header_length) as usize];
    file.read_data_at(&mut region, 0)?;

    if version == 3 && header_length > V3_MIN_HEADER_LEN {
        h.compression = match region[V3_MIN_HEADER_LEN as usize] {
            0 => Compression::Zlib,
            1 => Compression::Zstd,
            t => {
                return Err(Error::unsupported(
                    path,
                    format!("qcow2 header: compression type {t} is unknown (vdmount reads zlib (0) and zstd (1))"),
                ))
            }
        };
    }
    parse_extensions(path, &region, header_length as usize, ext_end as usize, &mut h)?;

    check_features(path, &h)?;
    if crypt_method != 0 {
        let what = match crypt_method {
            1 => "AES-CBC (qcow2 encryption method 1)".to_string(),
            2 => "LUKS (qcow2 encryption method 2)".to_string(),
            m => format!("an unknown method ({m})"),
        };
        return Err(Error::unsupported(
            path,
            format!("the image is encrypted with {what}; vdmount does not read encrypted images. With the passphrase, make a decrypted copy first: qemu-img convert --object secret,id=sec0,data=PASSPHRASE --image-opts driver=qcow2,file.filename=IMAGE,encrypt.key-secret=sec0 -O qcow2 decrypted.qcow2"),
        ));
    }
    if (h.compression != Compression::Zlib) != (h.incompatible & INCOMPAT_COMPRESSION != 0) {
        return Err(Error::corrupt(
            path,
            format!(
                "qcow2 header: compression type {} disagrees with incompatible bit 3 (compression type); the image is corrupt",
                h.compression.name()
            ),
        ));
    }
    limits::check(path, "qcow2 virtual size", h.size, limits::MAX_VIRTUAL_SIZE)?;

    if backing_file_offset != 0 && backing_file_size != 0 {
        limits::check(path, "qcow2 backing file name length", backing_file_size, MAX_BACKING_NAME)?;
        let mut name = vec![0u8; backing_file_size as usize];
        file.read_exact_at(&mut name, backing_file_offset, "the backing file name")?;
        h.backing_file = Some(name);
    }
    if h.has_data_file() && h.data_file.is_none() {
        return Err(Error::corrupt(
            path,
            "the image keeps its data in an external data file (incompatible bit 2), but its header does not name that file; the image is corrupt",
        ));
    }
    Ok(h)
}

fn parse_extensions(path: &std::path::Path, region: &[u8], start: usize, end: usize, h: &mut Header) -> Result<()> {
    let mut at = start;
    while at < end {
        let (Some(head), true) = (region.get(at..at + 8), at + 8 <= end) else {
            break;
        };
        let kind = be32(head, 0);
        let len = be32(head, 4) as usize;
        at += 8;
        if len > end - at {
            return Err(Error::corrupt(
                path,
                format!("qcow2 header extension {kind:#010x} at offset {} is {len} bytes long, past the end of the header area ({end} bytes); the image is corrupt", at - 8),
            ));
        }
        let data = &region[at..at + len];
        match kind {
            EXT_END => return Ok(()),
            EXT_BACKING_FORMAT => h.backing_format = Some(text(data)),
            EXT_DATA_FILE => h.data_file = Some(until_nul(data).to_vec()),
            EXT_FEATURE_NAMES => {
                for entry in data.chunks_exact(48) {
                    h.feature_names.push((entry[0], entry[1], text(&entry[2..])));
                }
            }
            _ => {} // bitmaps, encryption header, unknown: nothing to read for the guest data
        }
        at += len.div_ceil(8) * 8;
    }
    Ok(())
}

fn until_nul(b: &[u8]) -> &[u8] {
    b.split(|&c| c == 0).next().unwrap_or(b)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(until_nul(b)).into_owned()
}

/// Refuses images with features that change how data must be read and that vdmount does not
/// know, and images qemu has marked corrupt.
fn check_features(path: &std::path::Path, h: &Header) -> Result<()> {
    let unknown = h.incompatible & !INCOMPAT_KNOWN;
    if unknown != 0 {
        let names: Vec<String> = (0..64)
            .filter(|bit| unknown & (1u64 << bit) != 0)
            .map(|bit| match h.feature_name(0, bit) {
                Some(n) => format!("bit {bit} ({n})"),
                None => format!("bit {bit}"),
            })
            .collect();
        return Err(Error::unsupported(
            path,
            format!(
                "the image uses incompatible qcow2 feature {} that vdmount does not know, so it cannot read the image correctly; a newer qemu-img may convert it (qemu-img convert -O raw)",
                names.join(", ")
            ),
        ));
    }
    if h.incompatible & INCOMPAT_CORRUPT != 0 {
        return Err(Error::corrupt(
            path,
            "qemu marked this image corrupt (incompatible bit 1): its metadata is known to be inconsistent. Repair a copy with `qemu-img check -r all COPY` (it writes to the image, so never run it on the original evidence) and open the copy",
        ));
    }
    Ok(())
}
