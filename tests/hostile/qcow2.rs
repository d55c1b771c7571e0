//! Hostile qcow2.

use super::harness::*;

fn qcow2_cases(base: &[u8], seed: u64) -> Vec<Case> {
    let l1 = be64(base, 40);
    let l2 = be64(base, l1 as usize) & 0x00ff_ffff_ffff_fe00;
    let refcount_table = be64(base, 48);
    let refcount_block = be64(base, refcount_table as usize);
    let structures = [
        ("header", 0),
        ("header extensions", 72),
        ("L1 table", l1),
        ("first L2 table", l2),
        ("refcount table", refcount_table),
        ("first refcount block", refcount_block),
    ];
    let mut cases = generic_cases(base, &structures, seed, 60);
    cases.push(patched(base, "wrong magic", 0, b"QFI\0"));
    for v in [0u32, 4, 0xffff_ffff] {
        cases.push(patched(base, format!("version {v}"), 4, &v.to_be_bytes()));
    }
    for size in [1u64 << 63, 1 << 62, u64::MAX, (1 << 62) + 511] {
        cases.push(patched(base, format!("virtual size {size}"), 24, &size.to_be_bytes()));
    }
    for bits in [0u32, 8, 22, 31, 63, 0xffff_ffff] {
        cases.push(patched(base, format!("cluster_bits {bits}"), 20, &bits.to_be_bytes()));
    }
    for n in [0xffff_ffffu32, 1 << 31, 1 << 28] {
        cases.push(patched(base, format!("l1_size {n}"), 36, &n.to_be_bytes()));
        cases.push(patched(base, format!("refcount_table_clusters {n}"), 56, &n.to_be_bytes()));
        cases.push(patched(base, format!("nb_snapshots {n}"), 60, &n.to_be_bytes()));
    }
    for off in [1u64 << 63, u64::MAX - 511, 1 << 40] {
        cases.push(patched(base, format!("l1_table_offset {off}"), 40, &off.to_be_bytes()));
        cases.push(patched(base, format!("snapshots_offset {off}"), 64, &off.to_be_bytes()));
        cases.push(patched(base, format!("backing_file_offset {off}"), 8, &off.to_be_bytes()));
    }
    let mut with_backing = base.to_vec();
    with_backing[8..16].copy_from_slice(&100u64.to_be_bytes());
    with_backing[16..20].copy_from_slice(&0x8000_0000u32.to_be_bytes());
    cases.push(Case::new(base, "backing name of 2^31 bytes", with_backing));
    if be32(base, 4) >= 3 {
        for len in [0u32, 8, 0xffff_ffff] {
            cases.push(patched(base, format!("header_length {len}"), 100, &len.to_be_bytes()));
        }
        cases.push(patched(base, "all incompatible feature bits", 72, &u64::MAX.to_be_bytes()));
    }
    // An L1 entry and an L2 entry pointing far past the end of the file and into the header.
    cases.push(patched(base, "L1[0] past the end", l1 as usize, &(0x8000_00ff_ffff_0000u64).to_be_bytes()));
    cases.push(patched(base, "L1[0] at the header", l1 as usize, &(0x8000_0000_0000_0000u64).to_be_bytes()));
    cases.push(patched(base, "L2[0] past the end", l2 as usize, &(0x8000_00ff_ffff_0000u64).to_be_bytes()));
    cases.push(patched(base, "L2[0] compressed, huge", l2 as usize, &(0x7fff_ffff_ffff_ffffu64).to_be_bytes()));
    cases
}

#[test]
fn hostile_qcow2() {
    let (dir, src) = source();
    let mut failures = Vec::new();
    let v3 = make(dir.path(), &src, "v3.qcow2", "qcow2", &["-o", "cluster_size=4096"]);
    failures.extend(run_cases(dir.path(), "v3.qcow2", "qcow2", &v3, qcow2_cases(&v3, 1)));
    let v2 = make(dir.path(), &src, "v2.qcow2", "qcow2", &["-o", "compat=0.10"]);
    failures.extend(run_cases(dir.path(), "v2.qcow2", "qcow2", &v2, qcow2_cases(&v2, 2)));
    let zlib = make(dir.path(), &src, "compressed.qcow2", "qcow2", &["-c", "-o", "cluster_size=4096"]);
    failures.extend(run_cases(dir.path(), "compressed.qcow2", "qcow2", &zlib, qcow2_cases(&zlib, 3)));
    assert_none(failures);
}
