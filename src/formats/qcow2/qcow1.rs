//! The original qcow format (version 1): a 48-byte header, a two-level L1/L2 table with no
//! flags except "compressed", deflate-compressed clusters, and an optional backing file.

use super::compressed::{decompress, Compression};
use super::read::{ClusterMap, Extent};
use super::{open_backing_layer, read_l1_table};
use crate::cache::{Cache, Key, Kind};
use crate::error::{Error, Result};
use crate::formats::bytes::{be32, be64};
use crate::formats::cached::load_table;
use crate::formats::{Chain, DiskImage, ImageInfo, OpenOptions};
use crate::limits;
use crate::source::file::ImageFile;
use std::sync::Arc;

const HEADER_LEN: usize = 48;
const COMPRESSED: u64 = 1 << 63;
/// qemu's bounds: clusters of 512 B to 64 KiB, L2 tables of 512 B to 64 KiB.
const CLUSTER_BITS: std::ops::RangeInclusive<u8> = 9..=16;
const L2_BITS: std::ops::RangeInclusive<u8> = 6..=13;

pub struct Qcow1 {
    file: ImageFile,
    cluster_bits: u32,
    l2_bits: u32,
    l1: Vec<u64>,
    virtual_size: u64,
    backing_name: Option<Vec<u8>>,
    backing: Option<Arc<dyn DiskImage>>,
    cache: Arc<Cache>,
}

impl Qcow1 {
    pub fn open(file: ImageFile, chain: &Chain, opts: &OpenOptions) -> Result<Qcow1> {
        let path = &file.path;
        let mut h = [0u8; HEADER_LEN];
        file.read_exact_at(&mut h, 0, "the qcow header")?;
        let backing_offset = be64(&h, 8);
        let backing_size = u64::from(be32(&h, 16));
        let size = be64(&h, 24);
        let (cluster_bits, l2_bits) = (h[32], h[33]);
        let crypt_method = be32(&h, 36);
        let l1_offset = be64(&h, 40);
        if !CLUSTER_BITS.contains(&cluster_bits) || !L2_BITS.contains(&l2_bits) {
            return Err(Error::corrupt(
                path,
                format!("qcow header: cluster_bits {cluster_bits} and l2_bits {l2_bits} are outside what qcow allows (9..16 and 6..13); the image is corrupt"),
            ));
        }
        if crypt_method != 0 {
            return Err(Error::unsupported(
                path,
                format!("the image is encrypted (qcow encryption method {crypt_method}, AES); vdmount does not read encrypted images"),
            ));
        }
        limits::check(path, "qcow virtual size", size, limits::MAX_VIRTUAL_SIZE)?;
        let span_bits = u32::from(cluster_bits) + u32::from(l2_bits);
        let l1_size = size.div_ceil(1u64 << span_bits);
        let l1 = read_l1_table(&file, l1_offset, l1_size, opts)?;

        let mut backing_name = None;
        let mut backing = None;
        if backing_offset != 0 && backing_size != 0 {
            limits::check(path, "qcow backing file name length", backing_size, 1023)?;
            let mut name = vec![0u8; backing_size as usize];
            file.read_exact_at(&mut name, backing_offset, "the backing file name")?;
            backing = Some(open_backing_layer(path, &name, None, chain, opts)?);
            backing_name = Some(name);
        }
        Ok(Qcow1 {
            file,
            cluster_bits: u32::from(cluster_bits),
            l2_bits: u32::from(l2_bits),
            l1,
            virtual_size: size / 512 * 512,
            backing_name,
            backing,
            cache: opts.cache.clone(),
        })
    }

    fn l2_table(&self, offset: u64) -> Result<Arc<[u8]>> {
        let bytes = 8u64 << self.l2_bits;
        load_table(&self.cache, &self.file, Kind::Table, offset, bytes, limits::MAX_TABLE_BYTES, "an L2 table")
    }

    fn decode(&self, table: &[u8], base: u64, guest: u64) -> Result<Extent> {
        let index = ((guest - base) >> self.cluster_bits) as usize;
        let entry = table.get(index * 8..index * 8 + 8).map_or(0, |b| be64(b, 0));
        let in_cluster = guest & ((1u64 << self.cluster_bits) - 1);
        if entry == 0 {
            return Ok(Extent::Backing);
        }
        if entry & COMPRESSED != 0 {
            let shift = 63 - self.cluster_bits;
            let host = entry & ((1u64 << shift) - 1);
            let len = (entry >> shift) & ((1u64 << self.cluster_bits) - 1);
            return Ok(Extent::Compressed { host, len, skip: in_cluster });
        }
        if entry & 511 != 0 {
            return Err(Error::corrupt(
                &self.file.path,
                format!("the L2 entry for guest offset {guest} points to data at offset {entry}, which is not sector aligned; the image is corrupt"),
            ));
        }
        Ok(Extent::Data { host: entry + in_cluster })
    }
}

impl ClusterMap for Qcow1 {
    fn cluster_at(&self, guest: u64, max_len: u64) -> Result<(Extent, u64)> {
        let cluster_size = 1u64 << self.cluster_bits;
        let span = 1u64 << (self.cluster_bits + self.l2_bits);
        let l1_index = guest / span;
        let base = l1_index * span;
        let limit = max_len.min(base + span - guest);
        let l2_offset = self.l1.get(l1_index as usize).copied().unwrap_or(0);
        if l2_offset == 0 {
            return Ok((Extent::Backing, limit));
        }
        let table = self.l2_table(l2_offset)?;
        let first = self.decode(&table, base, guest)?;
        let mut len = cluster_size - (guest & (cluster_size - 1));
        if let Extent::Compressed { .. } = first {
            return Ok((first, len.min(limit)));
        }
        while len < limit {
            if !first.continues_with(self.decode(&table, base, guest + len)?, len) {
                break;
            }
            len += cluster_size;
        }
        Ok((first, len.min(limit)))
    }

    fn data_file(&self) -> &ImageFile {
        &self.file
    }

    fn compressed_cluster(&self, host: u64, len: u64, need: usize) -> Result<Arc<[u8]>> {
        let key = Key { file: self.file.id, kind: Kind::Cluster, offset: host };
        let cluster = 1usize << self.cluster_bits;
        self.cache.get_prefix_or_load(key, need, cluster, |want| {
            let mut input = vec![0u8; len as usize];
            self.file.read_data_at(&mut input, host)?;
            decompress(Compression::Zlib, &input, cluster, want, &self.file.path, host)
        })
    }

    fn basics(&self) -> (&ImageFile, u64, Option<&Arc<dyn DiskImage>>) {
        (&self.file, self.virtual_size, self.backing.as_ref())
    }

    fn describe(&self) -> ImageInfo {
        let mut details = vec![
            ("version".to_string(), "1 (original qcow)".to_string()),
            ("l2 table entries".to_string(), (1u64 << self.l2_bits).to_string()),
        ];
        if let Some(name) = &self.backing_name {
            details.push(("backing file".into(), String::from_utf8_lossy(name).into_owned()));
        }
        ImageInfo {
            path: self.file.path.clone(),
            format: "qcow".into(),
            virtual_size: self.virtual_size,
            cluster_size: Some(1 << self.cluster_bits),
            logical_sector_size: 512,
            features: Vec::new(),
            details,
            backing: self.backing.as_ref().map(|b| Box::new(b.info())),
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cache::Cache;
    use crate::formats::{open, ImageInfo, OpenOptions};
    use crate::source::file::test_file;

    /// A qcow (version 1) header, big-endian: 4 KiB clusters, 512-entry L2 tables (2 MiB per
    /// L2 table), a 4 MiB disk, so an L1 table of 2 entries, which follows at offset 48.
    fn header() -> Vec<u8> {
        vec![
            0x51, 0x46, 0x49, 0xfb, //                            0: magic "QFI\xfb"
            0x00, 0x00, 0x00, 0x01, //                            4: version 1
            0, 0, 0, 0, 0, 0, 0, 0, //                            8: backing_file_offset 0 (none)
            0x00, 0x00, 0x00, 0x00, //                           16: backing_file_size 0
            0x00, 0x00, 0x00, 0x00, //                           20: mtime 0
            0, 0, 0, 0, 0, 0x40, 0x00, 0x00, //                  24: size 4 MiB
            0x0c, //                                             32: cluster_bits 12 (4 KiB)
            0x09, //                                             33: l2_bits 9 (512 entries)
            0x00, 0x00, //                                       34: padding
            0x00, 0x00, 0x00, 0x00, //                           36: crypt_method 0 (none)
            0, 0, 0, 0, 0, 0, 0, 0x30, //                        40: l1_table_offset 48
            0, 0, 0, 0, 0, 0, 0, 0, //                           48: L1 entry 0: not allocated
            0, 0, 0, 0, 0, 0, 0, 0, //                           56: L1 entry 1: not allocated
        ]
    }

    fn open_bytes(bytes: &[u8]) -> crate::error::Result<ImageInfo> {
        let (tmp, _file) = test_file(bytes);
        open(tmp.path(), &OpenOptions::new(Cache::new(1 << 20))).map(|image| image.info())
    }

    fn refusal(bytes: &[u8]) -> String {
        crate::source::file::refused(open_bytes(bytes))
    }

    #[test]
    fn header_fields() {
        let info = open_bytes(&header()).unwrap();
        assert_eq!(info.format, "qcow");
        assert_eq!(info.virtual_size, 4 << 20);
        assert_eq!(info.cluster_size, Some(4096));
        assert!(info.details.contains(&("l2 table entries".into(), "512".into())), "{:?}", info.details);
        assert!(info.backing.is_none());
    }

    #[test]
    fn refuses_cluster_and_l2_bits_out_of_range() {
        for (at, v) in [(32, 8), (32, 17), (33, 5), (33, 14)] {
            let mut b = header();
            b[at] = v; //                                         32: cluster_bits, 33: l2_bits
            let e = refusal(&b);
            assert!(e.contains("cluster_bits") && e.contains("l2_bits") && e.contains(&format!(" {v} ")), "{e}");
        }
    }

    #[test]
    fn refuses_encryption_huge_size_and_a_missing_l1_table() {
        let mut b = header();
        b[39] = 1; //                                            36: crypt_method 1 (AES)
        assert!(refusal(&b).contains("encrypted (qcow encryption method 1, AES)"));
        let mut b = header();
        b[24..32].copy_from_slice(&u64::MAX.to_be_bytes()); //   24: size 2^64 - 1
        assert!(refusal(&b).contains("qcow virtual size is 18446744073709551615, more than the limit"));
        let mut b = header();
        b[29] = 0x50; //                                         24: size 5 MiB: 3 L1 entries, the file holds 2
        assert!(refusal(&b).contains("the L1 table at offset 48"));
    }

    #[test]
    fn refuses_backing_file_name_too_long_or_past_the_end() {
        let mut b = header();
        b[8..16].copy_from_slice(&64u64.to_be_bytes()); //        8: backing_file_offset 64
        b[16..20].copy_from_slice(&1024u32.to_be_bytes()); //    16: backing_file_size 1024
        b.extend([b'a'; 1024]);
        let e = refusal(&b);
        assert!(e.contains("qcow backing file name length is 1024, more than the limit of 1023"), "{e}");
        b[16..20].copy_from_slice(&1000u32.to_be_bytes()); //   16: backing_file_size 1000
        b.truncate(64 + 999); //                                      but the file ends a byte early
        let e = refusal(&b);
        assert!(e.contains("the backing file name at offset 64 (1000 bytes) lies past the end"), "{e}");
    }
}
