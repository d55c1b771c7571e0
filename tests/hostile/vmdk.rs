//! Hostile VMDK (sparse extents and descriptors).

use super::harness::*;

fn kdmv_cases(base: &[u8], seed: u64) -> Vec<Case> {
    // streamOptimized writes its grain directory last: the header says "at the end" and the
    // footer (a header copy 1 KiB before the end) has the real offsets.
    let header = if le64(base, 56) == u64::MAX { &base[base.len() - 1024..] } else { base };
    let gd = le64(header, 56) * 512;
    let rgd = le64(header, 48).wrapping_mul(512);
    let gt = le32(base, gd as usize) as u64 * 512;
    let desc = le64(base, 28) * 512;
    let mut structures = vec![("header", 0), ("descriptor", desc), ("grain directory", gd), ("first grain table", gt)];
    if rgd != 0 && rgd < base.len() as u64 {
        structures.push(("redundant grain directory", rgd));
    }
    if base.len() >= 1536 && &base[base.len() - 1536 + 512..base.len() - 1536 + 516] == b"KDMV" {
        // streamOptimized: the footer header, one sector before the end-of-stream marker.
        structures.push(("footer", base.len() as u64 - 1024));
    }
    let mut cases = generic_cases(base, &structures, seed, 60);
    cases.push(patched(base, "wrong magic", 0, b"KDMW"));
    for v in [0u32, 4, 0xffff_ffff] {
        cases.push(patched(base, format!("version {v}"), 4, &v.to_le_bytes()));
    }
    for cap in [u64::MAX, 1 << 54, (1 << 63) / 512] {
        cases.push(patched(base, format!("capacity {cap} sectors"), 12, &cap.to_le_bytes()));
    }
    for grain in [0u64, 3, 1 << 40, u64::MAX] {
        cases.push(patched(base, format!("grain size {grain}"), 20, &grain.to_le_bytes()));
    }
    for v in [u64::MAX, 1 << 50] {
        cases.push(patched(base, format!("descriptor offset {v}"), 28, &v.to_le_bytes()));
        cases.push(patched(base, format!("descriptor size {v}"), 36, &v.to_le_bytes()));
        cases.push(patched(base, format!("gd offset {v}"), 56, &v.to_le_bytes()));
        cases.push(patched(base, format!("rgd offset {v}"), 48, &v.to_le_bytes()));
        cases.push(patched(base, format!("overhead {v}"), 64, &v.to_le_bytes()));
    }
    for n in [0u32, 1, 0xffff_ffff] {
        cases.push(patched(base, format!("GTEs per GT {n}"), 44, &n.to_le_bytes()));
    }
    cases.push(patched(base, "GD[0] past the end", gd as usize, &0xffff_fff0u32.to_le_bytes()));
    cases.push(patched(base, "GT[0] past the end", gt as usize, &0xffff_fff0u32.to_le_bytes()));
    cases.push(patched(base, "GT[0] at the header", gt as usize, &1u32.to_le_bytes()));
    cases
}

/// Cases for a text descriptor: the generic ones plus absurd extent lines.
fn descriptor_cases(base: &[u8], seed: u64) -> Vec<Case> {
    let text = String::from_utf8_lossy(base).into_owned();
    let mut cases = generic_cases(base, &[("descriptor", 0)], seed, 30);
    let mut variant = |label: &str, from: &str, to: &str| {
        cases.push(Case::new(base, label, text.replacen(from, to, 1).into_bytes()));
    };
    variant("extent of 2^63 sectors", "RW 4096 FLAT", "RW 9223372036854775807 FLAT");
    variant("extent of 2^64-1 sectors", "RW 4096 FLAT", "RW 18446744073709551615 FLAT");
    variant("extent offset 2^63", "flat.vmdk\" 0", "flat.vmdk\" 9223372036854775807");
    variant("extent naming a folder", "\"disk-flat.vmdk\"", "\".\"");
    variant("extent naming /dev/zero", "\"disk-flat.vmdk\"", "\"/dev/zero\"");
    variant("extent naming itself", "\"disk-flat.vmdk\"", "\"disk.vmdk\"");
    variant("extent naming a missing file", "\"disk-flat.vmdk\"", "\"missing.vmdk\"");
    variant("parent naming itself", "createType", "parentFileNameHint=\"disk.vmdk\"\nparentCID=12345678\ncreateType");
    variant("wrong version", "version=1", "version=99");
    variant("unknown createType", "monolithicFlat", "vmfsRawDeviceMap");
    let many: String = (0..5000).map(|_| "RW 1 ZERO\n").collect();
    variant("5000 extents", "# The Disk Data Base", &format!("{many}# The Disk Data Base"));
    cases
}

#[test]
fn hostile_vmdk() {
    let (dir, src) = source();
    let mut failures = Vec::new();
    let sparse = make(dir.path(), &src, "sparse.vmdk", "vmdk", &[]);
    failures.extend(run_cases(dir.path(), "sparse.vmdk", "vmdk", &sparse, kdmv_cases(&sparse, 4)));
    let stream = make(dir.path(), &src, "stream.vmdk", "vmdk", &["-o", "subformat=streamOptimized"]);
    failures.extend(run_cases(dir.path(), "stream.vmdk", "vmdk", &stream, kdmv_cases(&stream, 5)));
    make(dir.path(), &src, "disk.vmdk", "vmdk", &["-o", "subformat=monolithicFlat"]);
    let desc = std::fs::read(dir.path().join("disk.vmdk")).unwrap();
    assert!(String::from_utf8_lossy(&desc).contains("RW 4096 FLAT \"disk-flat.vmdk\" 0"), "unexpected descriptor");
    failures.extend(run_cases(dir.path(), "disk.vmdk", "vmdk", &desc, descriptor_cases(&desc, 6)));
    assert_none(failures);
}
