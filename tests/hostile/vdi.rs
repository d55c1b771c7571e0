//! Hostile VDI.

use super::harness::*;

fn vdi_cases(base: &[u8], seed: u64) -> Vec<Case> {
    let map_at = le32(base, 0x154) as usize;
    let data_at = le32(base, 0x158) as u64;
    let blocks = le32(base, 0x180);
    let block_size = le32(base, 0x178) as u64;
    let first = (0..blocks as usize).map(|i| le32(base, map_at + 4 * i)).find(|e| *e < 0xffff_fffe).unwrap_or(0);
    let structures = [
        ("header", 0),
        ("signature", 0x40),
        ("block map", map_at as u64),
        ("first block", data_at + first as u64 * block_size),
    ];
    let mut cases = generic_cases(base, &structures, seed, 60);
    let mut own = base.to_vec();
    own[0x4c..0x50].copy_from_slice(&4u32.to_le_bytes());
    own.copy_within(0x188..0x198, 0x1a8);
    cases.push(Case::new(base, "differencing, parent UUID its own", own));
    let mut same = base.to_vec();
    same[map_at..map_at + 4 * blocks as usize].fill(0);
    cases.push(Case::new(base, "every block map entry 0", same));
    let mut p = |label: &str, at: usize, value: &[u8]| cases.push(patched(base, label, at, value));
    p("wrong signature", 0x40, &0xbeda_1070u32.to_le_bytes());
    for v in [0x0002_0000u32, 0, 0x0001_ffff] {
        p(&format!("version {v:#x}"), 0x44, &v.to_le_bytes());
    }
    for v in [0u32, 0x17f, 0xffff_ffff] {
        p(&format!("header size {v}"), 0x48, &v.to_le_bytes());
    }
    // 4: differencing, with no parent UUID (and, above, with its own).
    for t in [0u32, 3, 4, 5, 0xffff_ffff] {
        p(&format!("image type {t}"), 0x4c, &t.to_le_bytes());
    }
    for v in [0u32, 0x1c7, 1 << 31, 0xffff_ffff, base.len() as u32] {
        p(&format!("block map offset {v}"), 0x154, &v.to_le_bytes());
    }
    for v in [0u32, 0x200, 0xffff_ffff, base.len() as u32 + (1 << 20)] {
        p(&format!("data offset {v}"), 0x158, &v.to_le_bytes());
    }
    for v in [1u64 << 63, u64::MAX, 1 << 62, 0, blocks as u64 * block_size + 1, 511] {
        p(&format!("disk size {v}"), 0x170, &v.to_le_bytes());
    }
    for v in [0u32, 511, 3000, 1 << 31, 0xffff_ffff, 4096, 512] {
        p(&format!("block size {v}"), 0x178, &v.to_le_bytes());
    }
    for v in [3u32, 512, 1 << 31] {
        p(&format!("block extra {v}"), 0x17c, &v.to_le_bytes());
    }
    for v in [0u32, 1, 0xffff_ffff, 1 << 30] {
        p(&format!("blocks {v}"), 0x180, &v.to_le_bytes());
    }
    p("blocks allocated 2^32 - 1", 0x184, &0xffff_ffffu32.to_le_bytes());
    for v in [blocks, blocks - 1, 0xffff_fffd, 0x7fff_ffff, 0x0100_0000] {
        p(&format!("block map[0] = {v:#x}"), map_at, &v.to_le_bytes());
    }
    cases
}

#[test]
fn hostile_vdi() {
    let (dir, src) = source();
    let mut failures = Vec::new();
    let dynamic = make(dir.path(), &src, "dynamic.vdi", "vdi", &[]);
    failures.extend(run_cases(dir.path(), "dynamic.vdi", "vdi", &dynamic, vdi_cases(&dynamic, 11)));
    let fixed = make(dir.path(), &src, "static.vdi", "vdi", &["-o", "static=on"]);
    failures.extend(run_cases(dir.path(), "static.vdi", "vdi", &fixed, vdi_cases(&fixed, 12)));
    assert_none(failures);
}
