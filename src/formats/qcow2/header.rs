//! The qcow2 header (versions 2 and 3) and its extensions, with the checks that decide whether
//! vdmount can read the image at all.

use super::compressed::Compression;
use super::spec::{
    EXT_BACKING_FORMAT, EXT_DATA_FILE, EXT_END, EXT_FEATURE_NAMES, MAX_BACKING_NAME, V2_HEADER_LEN, V3_MIN_HEADER_LEN,
};
use crate::error::{Error, Result};
use crate::formats::bytes::{be32, be64};
use crate::limits;
use crate::source::file::ImageFile;

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
            &[
                (INCOMPAT_DIRTY, "dirty"),
                (INCOMPAT_DATA_FILE, "external_data_file"),
                (INCOMPAT_EXTENDED_L2, "extended_l2"),
            ],
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::file::test_file;

    /// A version 3 header of 104 bytes (no compression type byte), big-endian, 64 KiB clusters,
    /// no backing file, followed by no extensions (the zeros after it are the end marker).
    fn v3_header() -> Vec<u8> {
        vec![
            0x51, 0x46, 0x49, 0xfb, //                            0: magic "QFI\xfb"
            0x00, 0x00, 0x00, 0x03, //                            4: version 3
            0, 0, 0, 0, 0, 0, 0, 0, //                            8: backing_file_offset 0 (none)
            0x00, 0x00, 0x00, 0x00, //                           16: backing_file_size 0
            0x00, 0x00, 0x00, 0x10, //                           20: cluster_bits 16 (64 KiB)
            0, 0, 0, 0, 0x40, 0, 0, 0, //                        24: size 1 GiB
            0x00, 0x00, 0x00, 0x00, //                           32: crypt_method 0 (none)
            0x00, 0x00, 0x00, 0x02, //                           36: l1_size 2
            0, 0, 0, 0, 0, 0x03, 0, 0, //                        40: l1_table_offset 0x30000
            0, 0, 0, 0, 0, 0x01, 0, 0, //                        48: refcount_table_offset 0x10000
            0x00, 0x00, 0x00, 0x01, //                           56: refcount_table_clusters 1
            0x00, 0x00, 0x00, 0x01, //                           60: nb_snapshots 1
            0, 0, 0, 0, 0, 0x04, 0, 0, //                        64: snapshots_offset 0x40000
            0, 0, 0, 0, 0, 0, 0, 0x01, //                        72: incompatible_features: dirty
            0, 0, 0, 0, 0, 0, 0, 0x01, //                        80: compatible_features: lazy_refcounts
            0, 0, 0, 0, 0, 0, 0, 0x00, //                        88: autoclear_features 0
            0x00, 0x00, 0x00, 0x04, //                           96: refcount_order 4 (16 bits)
            0x00, 0x00, 0x00, 0x68, //                          100: header_length 104
        ]
    }

    /// A version 2 header: the first 72 bytes of a version 3 one, with version 2.
    fn v2_header() -> Vec<u8> {
        let mut h = v3_header();
        h.truncate(72);
        h[4..8].copy_from_slice(&2u32.to_be_bytes()); // 4: version 2
        h
    }

    fn set_be32(h: &mut [u8], at: usize, v: u32) {
        h[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }
    fn set_be64(h: &mut [u8], at: usize, v: u64) {
        h[at..at + 8].copy_from_slice(&v.to_be_bytes());
    }

    fn parse(bytes: &[u8]) -> Header {
        let (_tmp, file) = test_file(bytes);
        match read_header(&file) {
            Ok(h) => h,
            Err(e) => panic!("valid header refused: {e}"),
        }
    }

    fn refusal(bytes: &[u8]) -> String {
        let (_tmp, file) = test_file(bytes);
        crate::source::file::refused(read_header(&file))
    }

    #[test]
    fn v3_header_fields() {
        let h = parse(&v3_header());
        assert_eq!(h.version, 3);
        assert_eq!(h.cluster_bits, 16);
        assert_eq!(h.cluster_size(), 65536);
        assert_eq!(h.size, 1 << 30);
        assert_eq!(h.l1_size, 2);
        assert_eq!(h.l1_table_offset, 0x30000);
        assert_eq!(h.nb_snapshots, 1);
        assert_eq!(h.snapshots_offset, 0x40000);
        assert_eq!(h.incompatible, INCOMPAT_DIRTY);
        assert_eq!(h.compatible, COMPAT_LAZY_REFCOUNTS);
        assert_eq!(h.autoclear, 0);
        assert!(h.compression == Compression::Zlib);
        assert!(h.backing_file.is_none() && h.backing_format.is_none() && h.data_file.is_none());
        assert_eq!(h.feature_list(), ["dirty", "lazy_refcounts"]);
    }

    #[test]
    fn v2_header_fields_and_no_v3_fields() {
        let mut b = v2_header();
        // Version 2 has no feature fields: its extensions start at 72.
        b.extend([
            0xe2, 0x79, 0x2a, 0xca, //                           72: extension: backing file format
            0x00, 0x00, 0x00, 0x03, //                           76:   length 3
            b'r', b'a', b'w', 0, 0, 0, 0, 0, //                  80:   "raw", padded to 8
        ]);
        let h = parse(&b);
        assert_eq!(h.version, 2);
        assert_eq!(h.size, 1 << 30);
        assert_eq!(h.l1_table_offset, 0x30000);
        assert_eq!((h.incompatible, h.compatible, h.autoclear), (0, 0, 0));
        assert_eq!(h.backing_format.as_deref(), Some("raw"));
    }

    #[test]
    fn v3_extensions_and_backing_file() {
        let mut b = v3_header();
        set_be32(&mut b, 100, 112); //                        100: header_length 112
        b.extend([
            0x01, 0, 0, 0, 0, 0, 0, 0, //                       104: compression_type 1 (zstd), padding
            0xe2, 0x79, 0x2a, 0xca, //                          112: extension: backing file format
            0x00, 0x00, 0x00, 0x05, //                          116:   length 5
            b'q', b'c', b'o', b'w', b'2', 0, 0, 0, //           120:   "qcow2", padded to 8
            0x68, 0x03, 0xf8, 0x57, //                          128: extension: feature name table
            0x00, 0x00, 0x00, 0x30, //                          132:   length 48 (one entry)
            0x02, 0x05, //                                      136:   autoclear bit 5
        ]);
        b.extend(b"future_bit"); //                             138:   its name,
        b.extend([0; 36]); //                                           NUL-padded to 46 bytes
        b.extend([0; 8]); //                                    184: extension: end
        b.extend(b"base.qcow2"); //                             192: the backing file name
        set_be64(&mut b, 8, 192); //                              8: backing_file_offset 192
        set_be32(&mut b, 16, 10); //                             16: backing_file_size 10
        set_be64(&mut b, 72, INCOMPAT_COMPRESSION); //           72: incompatible: compression type
        set_be64(&mut b, 88, 1 << 5); //                         88: autoclear bit 5
        let h = parse(&b);
        assert!(h.compression == Compression::Zstd);
        assert_eq!(h.backing_format.as_deref(), Some("qcow2"));
        assert_eq!(h.backing_file.as_deref(), Some(&b"base.qcow2"[..]));
        assert_eq!(h.feature_names, [(2, 5, "future_bit".to_string())]);
        assert_eq!(h.feature_list(), ["compression=zstd", "lazy_refcounts", "autoclear bit 5 (future_bit)"]);
    }

    #[test]
    fn refuses_unknown_versions() {
        let mut b = v3_header();
        set_be32(&mut b, 4, 4); //                                4: version 4
        assert!(refusal(&b).contains("qcow2 version 4 is not one vdmount reads"), "{}", refusal(&b));
    }

    #[test]
    fn refuses_cluster_bits_out_of_range() {
        for bits in [0, 8, 22, 63] {
            let mut b = v3_header();
            set_be32(&mut b, 20, bits); //                       20: cluster_bits
            let e = refusal(&b);
            assert!(e.contains(&format!("cluster_bits is {bits}")), "{e}");
        }
    }

    #[test]
    fn refuses_header_length_below_104_or_past_the_cluster() {
        let mut b = v3_header();
        set_be32(&mut b, 100, 100); //                          100: header_length 100
        let e = refusal(&b);
        assert!(e.contains("header_length is 100"), "{e}");
        set_be32(&mut b, 20, 9); //                              20: cluster_bits 9 (512 B)
        set_be32(&mut b, 100, 520); //                          100: header_length 520
        let e = refusal(&b);
        assert!(e.contains("header_length is 520, outside 104..512"), "{e}");
    }

    #[test]
    fn refuses_backing_file_name_too_long_or_past_the_end() {
        let mut b = v3_header();
        set_be64(&mut b, 8, 104); //                              8: backing_file_offset 104
        set_be32(&mut b, 16, 1024); //                           16: backing_file_size 1024
        b.extend([b'a'; 1024]);
        let e = refusal(&b);
        assert!(e.contains("qcow2 backing file name length is 1024, more than the limit of 1023"), "{e}");
        set_be32(&mut b, 16, 1000); //                           16: backing_file_size 1000
        b.truncate(104 + 999);
        let e = refusal(&b);
        assert!(e.contains("the backing file name at offset 104 (1000 bytes) lies past the end"), "{e}");
    }

    #[test]
    fn refuses_an_extension_longer_than_the_header_area() {
        let mut b = v3_header();
        b.extend(EXT_BACKING_FORMAT.to_be_bytes()); //         104: extension: backing file format
        b.extend(65536u32.to_be_bytes()); //                   108:   length 65536
        let e = refusal(&b);
        assert!(e.contains("extension 0xe2792aca at offset 104 is 65536 bytes long"), "{e}");
    }

    #[test]
    fn refuses_unknown_incompatible_bits_naming_them() {
        let mut b = v3_header();
        set_be64(&mut b, 72, 1 << 7); //                         72: incompatible bit 7
        b.extend([
            0x68, 0x03, 0xf8, 0x57, //                          104: extension: feature name table
            0x00, 0x00, 0x00, 0x30, //                          108:   length 48
            0x00, 0x07, //                                      112:   incompatible bit 7
        ]);
        b.extend(b"shiny"); //                                  114:   its name
        b.extend([0; 41]);
        let e = refusal(&b);
        assert!(e.contains("incompatible qcow2 feature bit 7 (shiny)"), "{e}");
        set_be64(&mut b, 72, 1 << 40); //                        72: incompatible bit 40, unnamed
        let e = refusal(&b);
        assert!(e.contains("incompatible qcow2 feature bit 40 that"), "{e}");
    }

    #[test]
    fn refuses_corrupt_bit_encryption_and_huge_size() {
        let mut b = v3_header();
        set_be64(&mut b, 72, INCOMPAT_CORRUPT); //               72: incompatible: corrupt
        assert!(refusal(&b).contains("corrupt (incompatible bit 1)"));
        let mut b = v3_header();
        set_be32(&mut b, 32, 2); //                              32: crypt_method 2 (LUKS)
        assert!(refusal(&b).contains("encrypted with LUKS (qcow2 encryption method 2)"));
        let mut b = v3_header();
        set_be64(&mut b, 24, u64::MAX); //                       24: size 2^64 - 1
        assert!(refusal(&b).contains("qcow2 virtual size is 18446744073709551615, more than the limit"));
    }

    #[test]
    fn refuses_compression_type_disagreeing_or_unknown() {
        let mut b = v3_header();
        set_be32(&mut b, 100, 112); //                          100: header_length 112
        b.extend([0x01, 0, 0, 0, 0, 0, 0, 0]); //               104: compression_type 1, bit 3 clear
        assert!(refusal(&b).contains("compression type zstd disagrees with incompatible bit 3"));
        b[104] = 2; //                                          104: compression_type 2
        assert!(refusal(&b).contains("compression type 2 is unknown"));
    }

    #[test]
    fn refuses_a_data_file_bit_without_a_data_file_name() {
        let mut b = v3_header();
        set_be64(&mut b, 72, INCOMPAT_DATA_FILE); //             72: incompatible: external data file
        assert!(refusal(&b).contains("external data file (incompatible bit 2), but its header does not name"));
        b.extend([
            0x44, 0x41, 0x54, 0x41, //                          104: extension: data file name
            0x00, 0x00, 0x00, 0x08, //                          108:   length 8
            b'd', b'a', b't', b'a', b'.', b'r', b'a', b'w', //  112:   "data.raw"
        ]);
        assert_eq!(parse(&b).data_file.as_deref(), Some(&b"data.raw"[..]));
    }
}
