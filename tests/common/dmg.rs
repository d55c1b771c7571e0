//! A small UDIF (DMG) writer for the tests: no tool on Linux writes DMGs. It splits a source disk
//! into partitions (one blkx table each) and chunks of a chosen kind, lays the chunks out as the
//! data fork, then the XML property list and the "koly" trailer, as hdiutil lays them out.
//! Compressors: flate2 (zlib), bzip2, lzfse_rust (LZFSE) and `adc_compress` below (ADC).

use std::io::Write;

pub const SECTOR: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Zero,
    Raw,
    Ignore,
    Adc,
    Zlib,
    Bzip2,
    Lzfse,
}

impl Kind {
    pub fn code(self) -> u32 {
        match self {
            Kind::Zero => 0,
            Kind::Raw => 1,
            Kind::Ignore => 2,
            Kind::Adc => 0x8000_0004,
            Kind::Zlib => 0x8000_0005,
            Kind::Bzip2 => 0x8000_0006,
            Kind::Lzfse => 0x8000_0007,
        }
    }
}

/// How to write a DMG of a source disk.
pub struct Plan<'a> {
    /// Sectors per chunk.
    pub chunk_sectors: usize,
    /// Kinds of the chunks holding data, in turn (zero chunks alternate Zero and Ignore).
    pub kinds: &'a [Kind],
    /// Sectors at which a new partition (blkx table) starts, after sector 0.
    pub splits: &'a [usize],
    /// A comment entry before each table's first chunk.
    pub comments: bool,
    /// Chunk offsets relative to their table's start in the data fork (the table's "data
    /// offset"), instead of to the fork's start.
    pub relative: bool,
}

/// Where the builder put things, for tests that patch the result.
#[derive(Debug, Default)]
pub struct Layout {
    pub xml_offset: usize,
    pub xml_length: usize,
    pub koly_offset: usize,
    /// Every chunk: (kind, disk sector, sectors, file offset, stored length).
    pub chunks: Vec<(Kind, usize, usize, usize, usize)>,
}

/// Writes `src` (a whole number of sectors) as a DMG.
pub fn build(src: &[u8], plan: &Plan) -> (Vec<u8>, Layout) {
    assert_eq!(src.len() % SECTOR, 0);
    let total = src.len() / SECTOR;
    let mut fork = Vec::new();
    let mut layout = Layout::default();
    let mut bounds = vec![0];
    bounds.extend_from_slice(plan.splits);
    bounds.push(total);
    let mut tables = Vec::new();
    let mut sums = Vec::new();
    let (mut data_chunk, mut zero_chunk) = (0usize, 0usize);
    for (p, w) in bounds.windows(2).enumerate() {
        let (first, last) = (w[0], w[1]);
        let mut entries: Vec<[u8; 40]> = Vec::new();
        if plan.comments {
            entries.push(entry(0x7fff_fffe, 0, 0, 0, 0));
        }
        let base = if plan.relative { fork.len() } else { 0 };
        // The table's CRC-32 covers its sectors but those of "ignore" chunks, as hdiutil's do.
        let mut sum = flate2::Crc::new();
        let mut s = first;
        while s < last {
            let n = plan.chunk_sectors.min(last - s);
            let data = &src[s * SECTOR..(s + n) * SECTOR];
            let kind = if data.iter().all(|&b| b == 0) {
                zero_chunk += 1;
                if zero_chunk % 2 == 1 {
                    Kind::Zero
                } else {
                    Kind::Ignore
                }
            } else {
                data_chunk += 1;
                plan.kinds[(data_chunk - 1) % plan.kinds.len()]
            };
            if kind != Kind::Ignore {
                sum.update(data);
            }
            let stored = compress(kind, data);
            let at = fork.len();
            fork.extend_from_slice(&stored);
            entries.push(entry(kind.code(), (s - first) as u64, n as u64, (at - base) as u64, stored.len() as u64));
            layout.chunks.push((kind, s, n, at, stored.len()));
            s += n;
        }
        entries.push(entry(0xffff_ffff, (last - first) as u64, 0, (fork.len() - base) as u64, 0));
        let table = mish(first, last - first, p, base as u64, sum.sum(), &entries);
        sums.push(sum.sum());
        tables.push((format!("partition {p} (Apple_HFS : {})", p + 1), table));
    }
    let mut file = fork;
    let fork_len = file.len();
    let xml = plist_xml(&tables);
    layout.xml_offset = file.len();
    layout.xml_length = xml.len();
    file.extend_from_slice(&xml);
    layout.koly_offset = file.len();
    let crc = {
        let mut c = flate2::Crc::new();
        c.update(&file[..fork_len]);
        c.sum()
    };
    let mut master = flate2::Crc::new();
    sums.iter().for_each(|s| master.update(&s.to_be_bytes()));
    let mut k = koly(fork_len as u64, layout.xml_offset as u64, xml.len() as u64, total as u64, crc);
    k[352..356].copy_from_slice(&2u32.to_be_bytes()); // master checksum: CRC-32 of the tables' sums
    k[356..360].copy_from_slice(&32u32.to_be_bytes());
    k[360..364].copy_from_slice(&master.sum().to_be_bytes());
    file.extend_from_slice(&k);
    (file, layout)
}

fn entry(kind: u32, sector: u64, count: u64, offset: u64, length: u64) -> [u8; 40] {
    let mut e = [0u8; 40];
    e[0..4].copy_from_slice(&kind.to_be_bytes());
    e[8..16].copy_from_slice(&sector.to_be_bytes());
    e[16..24].copy_from_slice(&count.to_be_bytes());
    e[24..32].copy_from_slice(&offset.to_be_bytes());
    e[32..40].copy_from_slice(&length.to_be_bytes());
    e
}

fn mish(first: usize, sectors: usize, index: usize, data_offset: u64, crc: u32, entries: &[[u8; 40]]) -> Vec<u8> {
    let mut t = vec![0u8; 204];
    t[0..4].copy_from_slice(b"mish");
    t[4..8].copy_from_slice(&1u32.to_be_bytes());
    t[8..16].copy_from_slice(&(first as u64).to_be_bytes());
    t[16..24].copy_from_slice(&(sectors as u64).to_be_bytes());
    t[24..32].copy_from_slice(&data_offset.to_be_bytes());
    t[32..36].copy_from_slice(&0x208u32.to_be_bytes()); // buffers needed, as hdiutil writes
    t[36..40].copy_from_slice(&(index as u32).to_be_bytes());
    t[64..68].copy_from_slice(&2u32.to_be_bytes()); // checksum: CRC-32, 32 bits
    t[68..72].copy_from_slice(&32u32.to_be_bytes());
    t[72..76].copy_from_slice(&crc.to_be_bytes());
    t[200..204].copy_from_slice(&(entries.len() as u32).to_be_bytes());
    for e in entries {
        t.extend_from_slice(e);
    }
    t
}

fn plist_xml(tables: &[(String, Vec<u8>)]) -> Vec<u8> {
    use plist::{Dictionary, Value};
    let blkx: Vec<Value> = tables
        .iter()
        .enumerate()
        .map(|(i, (name, table))| {
            let mut d = Dictionary::new();
            d.insert("Attributes".into(), Value::String("0x0050".into()));
            d.insert("CFName".into(), Value::String(name.clone()));
            d.insert("Data".into(), Value::Data(table.clone()));
            d.insert("ID".into(), Value::String(format!("{}", i as i64 - 1)));
            d.insert("Name".into(), Value::String(name.clone()));
            Value::Dictionary(d)
        })
        .collect();
    let mut fork = Dictionary::new();
    fork.insert("blkx".into(), Value::Array(blkx));
    let mut root = Dictionary::new();
    root.insert("resource-fork".into(), Value::Dictionary(fork));
    let mut out = Vec::new();
    Value::Dictionary(root).to_writer_xml(&mut out).unwrap();
    out.push(b'\n');
    out
}

fn koly(fork_len: u64, xml_offset: u64, xml_length: u64, sectors: u64, crc: u32) -> [u8; 512] {
    let mut k = [0u8; 512];
    k[0..4].copy_from_slice(b"koly");
    k[4..8].copy_from_slice(&4u32.to_be_bytes());
    k[8..12].copy_from_slice(&512u32.to_be_bytes());
    k[12..16].copy_from_slice(&1u32.to_be_bytes()); // flags: flattened
    k[32..40].copy_from_slice(&fork_len.to_be_bytes()); // data fork at 0
    k[56..60].copy_from_slice(&1u32.to_be_bytes()); // segment 1 of 1
    k[60..64].copy_from_slice(&1u32.to_be_bytes());
    k[80..84].copy_from_slice(&2u32.to_be_bytes()); // data checksum: CRC-32, 32 bits
    k[84..88].copy_from_slice(&32u32.to_be_bytes());
    k[88..92].copy_from_slice(&crc.to_be_bytes());
    k[216..224].copy_from_slice(&xml_offset.to_be_bytes());
    k[224..232].copy_from_slice(&xml_length.to_be_bytes());
    k[488..492].copy_from_slice(&1u32.to_be_bytes()); // image variant: device image
    k[492..500].copy_from_slice(&sectors.to_be_bytes());
    k
}

/// The bytes a chunk of `kind` stores for `data`.
pub fn compress(kind: Kind, data: &[u8]) -> Vec<u8> {
    match kind {
        Kind::Zero | Kind::Ignore => Vec::new(),
        Kind::Raw => data.to_vec(),
        Kind::Zlib => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Kind::Bzip2 => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Kind::Lzfse => {
            let mut out = Vec::new();
            lzfse_rust::encode_bytes(data, &mut out).unwrap();
            out
        }
        Kind::Adc => adc_compress(data),
    }
}

/// ADC: literal runs, and copies of earlier bytes found by a short brute-force search (both
/// copy codes: 2 bytes for up to 18 bytes from up to 1 KiB back, 3 bytes for up to 67 from up
/// to 64 KiB back). Small, not clever: it only has to exercise every opcode.
pub fn adc_compress(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut lit: Vec<u8> = Vec::new();
    let flush = |out: &mut Vec<u8>, lit: &mut Vec<u8>| {
        for run in lit.chunks(128) {
            out.push(0x80 | (run.len() - 1) as u8);
            out.extend_from_slice(run);
        }
        lit.clear();
    };
    let mut i = 0;
    while i < data.len() {
        let (mut best_len, mut best_dist) = (0, 0);
        // Near distances, then the text lines' periods of make_source_disk (about 50-60 bytes),
        // then a far one to use 3-byte codes with long distances.
        for dist in (1..=80).chain([1000, 4096, 40000]) {
            if dist > i {
                break;
            }
            let max = 67.min(data.len() - i);
            let len = (0..max).take_while(|&k| data[i + k] == data[i + k - dist]).count();
            if len > best_len {
                (best_len, best_dist) = (len, dist);
            }
        }
        if best_len >= 3 && best_dist <= 1024 && best_len <= 18 {
            flush(&mut out, &mut lit);
            let d = best_dist - 1;
            out.push((((best_len - 3) as u8) << 2) | (d >> 8) as u8);
            out.push(d as u8);
            i += best_len;
        } else if best_len >= 4 {
            flush(&mut out, &mut lit);
            let d = (best_dist - 1) as u16;
            out.push(0x40 | (best_len - 4) as u8);
            out.extend_from_slice(&d.to_be_bytes());
            i += best_len;
        } else {
            lit.push(data[i]);
            i += 1;
        }
    }
    flush(&mut out, &mut lit);
    out
}
