//! Hostile QED.

use super::harness::*;

fn qed_cases(base: &[u8], seed: u64) -> Vec<Case> {
    let l1 = le64(base, 40);
    let l2 = le64(base, l1 as usize);
    let name_at = le32(base, 56) as u64;
    let structures = [("header", 0), ("backing file name", name_at), ("L1 table", l1), ("first L2 table", l2)];
    let mut cases = generic_cases(base, &structures, seed, 60);
    cases.push(patched(base, "wrong magic", 0, b"QED\x01"));
    for size in [0u32, 512, 4097, 1 << 27, u32::MAX] {
        cases.push(patched(base, format!("cluster_size {size}"), 4, &size.to_le_bytes()));
    }
    for n in [0u32, 1, 3, 32, u32::MAX] {
        cases.push(patched(base, format!("table_size {n}"), 8, &n.to_le_bytes()));
    }
    for n in [0u32, 16, 1 << 20, u32::MAX] {
        cases.push(patched(base, format!("header_size {n}"), 12, &n.to_le_bytes()));
    }
    for (label, bits) in [("all feature bits", u64::MAX), ("unknown feature bit 3", 1 << 3), ("need check", 2)] {
        cases.push(patched(base, label, 16, &bits.to_le_bytes()));
    }
    for size in [511u64, 1 << 62, (1 << 62) + 512, 1 << 63, u64::MAX - 511, 1 << 50] {
        cases.push(patched(base, format!("image_size {size}"), 48, &size.to_le_bytes()));
    }
    for off in [0u64, 4096 + 8, 1 << 40, 1 << 63, u64::MAX - 4095] {
        cases.push(patched(base, format!("l1_table_offset {off}"), 40, &off.to_le_bytes()));
    }
    // Backing file names: past the header, past the file's end, longer than qemu allows.
    let mut named = patched(base, "", 16, &1u64.to_le_bytes()).bytes(base);
    for (label, at, len, header_clusters) in [
        ("backing name past the header", 64u32, u32::MAX, 1u32),
        ("backing name at u32::MAX", u32::MAX, 16, 1),
        ("backing name of 5000 bytes", 64, 5000, 2),
        // Unreachable past the L1 check (the name lies in the header, the L1 table after it,
        // inside the file), but refused all the same.
        ("backing name past the end of the file", 3 << 20, 100, 1 << 12),
    ] {
        named[56..60].copy_from_slice(&at.to_le_bytes());
        named[60..64].copy_from_slice(&len.to_le_bytes());
        named[12..16].copy_from_slice(&header_clusters.to_le_bytes());
        cases.push(Case::new(base, label, named.clone()));
    }
    // Table entries pointing past the end of the file, into the header, or unaligned.
    for (label, value) in [("past the end", 1u64 << 40), ("unaligned", 4096 + 7), ("at the header", 1 << 63)] {
        cases.push(patched(base, format!("L1[0] {label}"), l1 as usize, &value.to_le_bytes()));
        cases.push(patched(base, format!("L2[0] {label}"), l2 as usize, &value.to_le_bytes()));
    }
    cases.push(patched(base, "L1[0] = the L1 table", l1 as usize, &l1.to_le_bytes()));
    cases
}

#[test]
fn hostile_qed() {
    let (dir, src) = source();
    let d = dir.path();
    let mut failures = Vec::new();
    let plain = make(d, &src, "plain.qed", "qed", &["-o", "cluster_size=4096"]);
    failures.extend(run_cases(d, "plain.qed", "qed", &plain, qed_cases(&plain, 11)));
    // A child over source.raw (beside it), with its backing name in the header.
    let child = d.join("child.qed");
    let (c, b) = (child.to_str().unwrap(), src.to_str().unwrap());
    qemu_img(&["create", "-q", "-f", "qed", "-o", "cluster_size=4096,table_size=2", "-b", b, "-F", "raw", c, "3M"]);
    let child_bytes = std::fs::read(&child).unwrap();
    failures.extend(run_cases(d, "child.qed", "qed", &child_bytes, qed_cases(&child_bytes, 12)));
    // A chain that loops: a.qed -> b.qed -> a.qed.
    for (name, backing) in [("a.qed", "b.qed"), ("b.qed", "a.qed")] {
        let p = d.join(name);
        qemu_img(&["create", "-q", "-f", "qed", "-u", "-b", backing, "-F", "qed", p.to_str().unwrap(), "1M"]);
    }
    failures.extend(refused("QED A -> B -> A", &d.join("a.qed"), &["a.qed", "b.qed"], "loop"));
    assert_none(failures);
}
