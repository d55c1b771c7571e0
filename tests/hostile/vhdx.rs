//! Hostile VHDX.

use super::harness::*;

const REGION_BAT: [u8; 16] =
    [0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08];
const ITEM_FILE_PARAMETERS: [u8; 16] =
    [0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d, 0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b];
const ITEM_VIRTUAL_SIZE: [u8; 16] =
    [0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48, 0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8];
const ITEM_LOGICAL_SECTOR: [u8; 16] =
    [0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47, 0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f];

/// Sets the CRC-32C checksum at offset 4 of a VHDX header or region table.
pub fn vhdx_checksum(b: &mut [u8]) {
    b[4..8].fill(0);
    let c = crc32c::crc32c(b);
    b[4..8].copy_from_slice(&c.to_le_bytes());
}

struct VhdxLayout {
    bat: u64,
    metadata: u64,
    /// (GUID, file offset) of each metadata item.
    items: Vec<([u8; 16], u64)>,
    log: u64,
}

fn vhdx_layout(b: &[u8]) -> VhdxLayout {
    let rt = 192 << 10;
    let (mut bat, mut metadata) = (0, 0);
    for i in 0..le32(b, rt + 8) as usize {
        let e = rt + 16 + 32 * i;
        let off = le64(b, e + 16);
        if b[e..e + 16] == REGION_BAT {
            bat = off;
        } else {
            metadata = off;
        }
    }
    let m = metadata as usize;
    let items = (0..u16::from_le_bytes([b[m + 10], b[m + 11]]) as usize)
        .map(|i| {
            let e = m + 32 + 32 * i;
            (b[e..e + 16].try_into().unwrap(), metadata + le32(b, e + 16) as u64)
        })
        .collect();
    VhdxLayout { bat, metadata, items, log: le64(b, (64 << 10) + 72) }
}

fn vhdx_cases(base: &[u8], seed: u64) -> Vec<Case> {
    let l = vhdx_layout(base);
    let item = |guid: [u8; 16]| l.items.iter().find(|(g, _)| *g == guid).map(|(_, at)| *at as usize).unwrap();
    let structures = [
        ("file identifier", 0),
        ("header 1", 64 << 10),
        ("header 2", 128 << 10),
        ("region table 1", 192 << 10),
        ("region table 2", 256 << 10),
        ("log", l.log),
        ("metadata", l.metadata),
        ("BAT", l.bat),
    ];
    let mut cases = generic_cases(base, &structures, seed, 60);
    cases.push(patched(base, "wrong magic", 0, b"vhdxfilf"));
    let both_headers = |label: String, at: usize, value: &[u8]| {
        let mut bytes = base.to_vec();
        for h in [64usize << 10, 128 << 10] {
            let hdr = &mut bytes[h..h + 4096];
            hdr[at..at + value.len()].copy_from_slice(value);
            vhdx_checksum(hdr);
        }
        Case::new(base, label, bytes)
    };
    cases.push(both_headers("header version 2".into(), 66, &2u16.to_le_bytes()));
    cases.push(both_headers("log version 7".into(), 64, &7u16.to_le_bytes()));
    cases.push(both_headers("log of 4 GiB at 2^63".into(), 68, &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0x80]));
    cases.push(both_headers("log GUID set, log all zeros".into(), 48, &[1; 16]));
    let both_tables = |label: String, entry_field: usize, value: &[u8]| {
        let mut bytes = base.to_vec();
        for r in [192usize << 10, 256 << 10] {
            let rt = &mut bytes[r..r + 65536];
            rt[16 + entry_field..16 + entry_field + value.len()].copy_from_slice(value);
            vhdx_checksum(rt);
        }
        Case::new(base, label, bytes)
    };
    for (label, field, value) in [
        ("region 0 offset 2^63", 16, (1u64 << 63).to_le_bytes().to_vec()),
        ("region 0 offset 0", 16, 0u64.to_le_bytes().to_vec()),
        ("region 0 length 2^32-1", 24, 0xffff_ffffu32.to_le_bytes().to_vec()),
        ("region 1 length 2^32-1", 56, 0xffff_ffffu32.to_le_bytes().to_vec()),
        ("region 1 at region 0", 48, le64(base, (192 << 10) + 32).to_le_bytes().to_vec()),
    ] {
        cases.push(both_tables(label.into(), field, &value));
    }
    let mut count = base.to_vec();
    for r in [192usize << 10, 256 << 10] {
        count[r + 8..r + 12].copy_from_slice(&0xffff_ffffu32.to_le_bytes());
        vhdx_checksum(&mut count[r..r + 65536]);
    }
    cases.push(Case::new(base, "region count 2^32-1", count));
    let size_at = item(ITEM_VIRTUAL_SIZE);
    for size in [1u64 << 63, u64::MAX, 1 << 62, 0, 513] {
        cases.push(patched(base, format!("virtual size {size}"), size_at, &size.to_le_bytes()));
    }
    let params_at = item(ITEM_FILE_PARAMETERS);
    for bs in [0u32, 1 << 31, 0xffff_ffff, 4096] {
        cases.push(patched(base, format!("block size {bs}"), params_at, &bs.to_le_bytes()));
    }
    cases.push(patched(base, "has-parent flag without a parent", params_at + 4, &2u32.to_le_bytes()));
    let sector_at = item(ITEM_LOGICAL_SECTOR);
    for s in [0u32, 1, 8192, 0xffff_ffff] {
        cases.push(patched(base, format!("logical sector size {s}"), sector_at, &s.to_le_bytes()));
    }
    let m = l.metadata as usize;
    cases.push(patched(base, "metadata entry count 65535", m + 10, &0xffffu16.to_le_bytes()));
    cases.push(patched(base, "metadata item 0 offset 2^32-1", m + 32 + 16, &0xffff_ffffu32.to_le_bytes()));
    cases.push(patched(base, "metadata item 0 length 2^32-1", m + 32 + 20, &0xffff_ffffu32.to_le_bytes()));
    let bat = l.bat as usize;
    cases.push(patched(base, "BAT[0] fully present past the end", bat, &((0xffff_ffffu64 << 20) | 6).to_le_bytes()));
    cases.push(patched(base, "BAT[0] at the header", bat, &6u64.to_le_bytes()));
    cases.push(patched(base, "BAT[0] unknown state", bat, &(5u64 | (4 << 20)).to_le_bytes()));
    cases
}

#[test]
fn hostile_vhdx() {
    let (dir, src) = source();
    let vhdx = make(dir.path(), &src, "dynamic.vhdx", "vhdx", &["-o", "block_size=1M"]);
    assert_none(run_cases(dir.path(), "dynamic.vhdx", "vhdx", &vhdx, vhdx_cases(&vhdx, 10)));
}
