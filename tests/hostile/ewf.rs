//! Hostile EWF.

use super::harness::*;

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// The sections of an EWF segment: (type, offset of the descriptor, size).
fn ewf_sections(b: &[u8]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut at = 13;
    while at + 76 <= b.len() {
        let kind = String::from_utf8_lossy(&b[at..at + 16]).trim_end_matches('\0').to_string();
        let (next, size) = (le64(b, at + 16) as usize, le64(b, at + 24) as usize);
        out.push((kind, at, size));
        if next <= at {
            break;
        }
        at = next;
    }
    out
}

/// `base` with `value` at `at`, and the Adler-32 of `[from, sum_at)` rewritten at `sum_at`, so
/// the value gets past the checksum to the checks behind it.
fn ewf_patched(base: &[u8], label: String, at: usize, value: &[u8], from: usize, sum_at: usize) -> Case {
    let mut b = base.to_vec();
    b[at..at + value.len()].copy_from_slice(value);
    let sum = adler32(&b[from..sum_at]);
    b[sum_at..sum_at + 4].copy_from_slice(&sum.to_le_bytes());
    Case::new(base, label, b)
}

fn ewf_cases(base: &[u8], seed: u64) -> Vec<Case> {
    let sections = ewf_sections(base);
    let find = |k: &str| sections.iter().find(|s| s.0 == k).map(|s| s.1).unwrap();
    let structures: Vec<(&str, u64)> = sections.iter().map(|s| (s.0.as_str(), s.1 as u64)).collect();
    let mut cases = generic_cases(base, &structures, seed, 60);
    cases.push(patched(base, "wrong magic", 0, b"EVF\x09\x0d\x0a\xff\x01"));
    cases.push(patched(base, "segment number 2", 9, &2u16.to_le_bytes()));
    // Section descriptors going backwards, to themselves, past the end.
    for (kind, at, _) in &sections {
        for next in [0u64, *at as u64, 1 << 40, u64::MAX] {
            cases.push(ewf_patched(base, format!("{kind} next {next}"), at + 16, &next.to_le_bytes(), *at, at + 72));
        }
        for size in [0u64, 1 << 40, u64::MAX] {
            cases.push(ewf_patched(base, format!("{kind} size {size}"), at + 24, &size.to_le_bytes(), *at, at + 72));
        }
    }
    // The volume: absurd chunk counts and sizes (the checksum ends the 94- or 1052-byte data).
    let vol = find("volume") + 76;
    let sum_at =
        if ewf_sections(base).iter().any(|s| s.0 == "volume" && s.2 - 76 >= 1052) { vol + 1048 } else { vol + 90 };
    for (field, off) in [("chunk count", 4), ("sectors per chunk", 8), ("bytes per sector", 12)] {
        for v in [0u32, 1, 3, 1 << 20, u32::MAX] {
            cases.push(ewf_patched(base, format!("{field} {v}"), vol + off, &v.to_le_bytes(), vol, sum_at));
        }
    }
    for v in [0u64, 1 << 40, u64::MAX] {
        let bytes = if sum_at == vol + 90 { v.to_le_bytes()[..4].to_vec() } else { v.to_le_bytes().to_vec() };
        cases.push(ewf_patched(base, format!("sector count {v}"), vol + 16, &bytes, vol, sum_at));
    }
    // The table: entry counts, base offsets, entries past the end or out of order.
    let table = find("table") + 76;
    for n in [0u32, 2, u32::MAX, (1 << 20) + 1] {
        cases.push(ewf_patched(base, format!("table count {n}"), table, &n.to_le_bytes(), table, table + 20));
    }
    for b in [1u64 << 40, u64::MAX, 1 << 31] {
        cases.push(ewf_patched(base, format!("table base {b}"), table + 8, &b.to_le_bytes(), table, table + 20));
    }
    let entries = table + 24;
    for (label, v) in [("past the end", 0x7fff_ffffu32), ("zero", 0), ("compressed past the end", u32::MAX)] {
        cases.push(patched(base, format!("first entry {label}"), entries, &v.to_le_bytes()));
        cases.push(patched(base, format!("second entry {label}"), entries + 4, &v.to_le_bytes()));
    }
    // The compressed flag flipped on the first two chunks (stored ones then inflate as garbage,
    // compressed ones are read as stored).
    for i in 0..2 {
        let v = le32(base, entries + 4 * i) ^ (1 << 31);
        cases.push(patched(base, format!("entry {i} compression flipped"), entries + 4 * i, &v.to_le_bytes()));
    }
    // A compressed chunk that inflates to more than a chunk: a zlib stream of 64 KiB of zeros
    // (chunks here are 8 or 16 KiB), written over the first compressed chunk it fits in.
    let bomb = {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&[0u8; 65536]).unwrap();
        z.finish().unwrap()
    };
    let count = le32(base, table) as usize;
    let tbase = le64(base, table + 8) as usize;
    let offsets: Vec<(usize, bool)> = (0..count)
        .map(|i| le32(base, entries + 4 * i))
        .map(|e| (tbase + (e & 0x7fff_ffff) as usize, e >> 31 == 1))
        .collect();
    let fits = offsets.windows(2).find(|w| w[0].1 && w[1].0 - w[0].0 >= bomb.len());
    if let Some(w) = fits {
        cases.push(patched(base, "compressed chunk inflating to 64 KiB", w[0].0, &bomb));
    }
    // (Only sets with compressible data have one: "plain" does, encase1 with empty-block does not.)
    eprintln!("compressed chunk for the inflation case: {}", fits.is_some());
    cases
}

#[test]
fn hostile_ewf() {
    let (dir, src) = source();
    let d = dir.path();
    let mut failures = Vec::new();
    for (name, opts) in [
        ("plain", &["-f", "encase6", "-c", "deflate:best", "-b", "16"][..]),
        ("stored", &["-f", "encase5", "-c", "none", "-b", "16"][..]),
        ("smart", &["-f", "smart", "-c", "deflate:fast", "-b", "32"][..]),
        ("old", &["-f", "encase1", "-c", "empty-block", "-b", "16"][..]),
    ] {
        let target = d.join(name);
        run_ok(std::process::Command::new("ewfacquire").args(["-u", "-q"]).args(opts).arg("-t").arg(&target).arg(&src));
        let file = ["E01", "s01"].iter().map(|e| format!("{name}.{e}")).find(|f| d.join(f).exists()).unwrap();
        let base = std::fs::read(d.join(&file)).unwrap();
        failures.extend(run_cases(d, &file, "ewf", &base, ewf_cases(&base, 21)));
    }
    assert_none(failures);
}
