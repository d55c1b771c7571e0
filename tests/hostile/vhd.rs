//! Hostile VHD.

use super::harness::*;

/// Sets the VHD checksum (ones' complement of the byte sum, field excluded) of `b[..len]`.
fn vhd_checksum(b: &mut [u8], field: usize) {
    b[field..field + 4].fill(0);
    let sum: u32 = b.iter().fold(0u32, |s, x| s.wrapping_add(*x as u32));
    b[field..field + 4].copy_from_slice(&(!sum).to_be_bytes());
}

/// `base` with footer field `at` set to `value` in every footer copy, checksums fixed.
fn vhd_footer_patch(base: &[u8], label: String, at: usize, value: &[u8]) -> Case {
    let mut bytes = base.to_vec();
    let tail = bytes.len() - 512;
    let copies: Vec<usize> = if &bytes[..8] == b"conectix" { vec![0, tail] } else { vec![tail] };
    for c in copies {
        let f = &mut bytes[c..c + 512];
        f[at..at + value.len()].copy_from_slice(value);
        vhd_checksum(f, 64);
    }
    Case::new(base, label, bytes)
}

fn vhd_cases(base: &[u8], seed: u64) -> Vec<Case> {
    let footer_at = base.len() as u64 - 512;
    let mut structures = vec![("footer", footer_at)];
    let dynamic = &base[..8] == b"conectix";
    let header_at = if dynamic { be64(base, 16) } else { 0 };
    let mut table_at = 0;
    if dynamic {
        table_at = be64(base, header_at as usize + 16);
        let first = (0..be32(base, header_at as usize + 28) as usize)
            .map(|i| be32(base, table_at as usize + 4 * i))
            .find(|e| *e != 0xffff_ffff)
            .unwrap_or(0) as u64
            * 512;
        structures.extend([
            ("footer copy", 0),
            ("dynamic header", header_at),
            ("block allocation table", table_at),
            ("first block", first),
        ]);
    }
    let mut cases = generic_cases(base, &structures, seed, 60);
    let mut wrong = base.to_vec();
    let n = wrong.len();
    wrong[n - 512..n - 504].copy_from_slice(b"conectiy");
    if dynamic {
        wrong[..8].copy_from_slice(b"conectiy");
    }
    cases.push(Case::new(base, "wrong magic", wrong));
    cases.push(vhd_footer_patch(base, "footer version 2.0".into(), 12, &0x0002_0000u32.to_be_bytes()));
    for size in [1u64 << 63, u64::MAX, 1 << 62] {
        cases.push(vhd_footer_patch(base, format!("current size {size}"), 48, &size.to_be_bytes()));
        cases.push(vhd_footer_patch(base, format!("original size {size}"), 40, &size.to_be_bytes()));
    }
    cases.push(vhd_footer_patch(base, "CHS 65535/255/255".into(), 56, &[0xff, 0xff, 0xff, 0xff]));
    for t in [0u32, 1, 5, 0xffff_ffff] {
        cases.push(vhd_footer_patch(base, format!("disk type {t}"), 60, &t.to_be_bytes()));
    }
    if dynamic {
        cases.push(vhd_footer_patch(base, "data offset 2^63".into(), 16, &(1u64 << 63).to_be_bytes()));
        let header_patch = |label: String, at: usize, value: &[u8]| {
            let mut bytes = base.to_vec();
            let h = &mut bytes[header_at as usize..header_at as usize + 1024];
            h[at..at + value.len()].copy_from_slice(value);
            vhd_checksum(h, 36);
            Case::new(base, label, bytes)
        };
        cases.push(header_patch("dynamic header version 2.0".into(), 24, &0x0002_0000u32.to_be_bytes()));
        for n in [0xffff_ffffu32, 1 << 31, 0] {
            cases.push(header_patch(format!("max table entries {n}"), 28, &n.to_be_bytes()));
        }
        for bs in [0u32, 511, 1 << 31, 0xffff_ffff, 4096] {
            cases.push(header_patch(format!("block size {bs}"), 32, &bs.to_be_bytes()));
        }
        for off in [1u64 << 63, u64::MAX, 1 << 40] {
            cases.push(header_patch(format!("table offset {off}"), 16, &off.to_be_bytes()));
        }
        cases.push(patched(base, "BAT[0] past the end", table_at as usize, &0xffff_fff0u32.to_be_bytes()));
        cases.push(patched(base, "BAT[0] at the header", table_at as usize, &0u32.to_be_bytes()));
    }
    cases
}

#[test]
fn hostile_vhd() {
    let (dir, src) = source();
    let mut failures = Vec::new();
    let fixed = make(dir.path(), &src, "fixed.vhd", "vpc", &["-o", "subformat=fixed"]);
    failures.extend(run_cases(dir.path(), "fixed.vhd", "vhd", &fixed, vhd_cases(&fixed, 7)));
    let dynamic = make(dir.path(), &src, "dynamic.vhd", "vpc", &[]);
    failures.extend(run_cases(dir.path(), "dynamic.vhd", "vhd", &dynamic, vhd_cases(&dynamic, 8)));
    assert_none(failures);
}
