//! Hostile EWF2: sets made by tests/ewf2/make_ex01.py, then truncated, byte-flipped, or patched
//! (with their checksums made right again, so a patch reaches the checks behind them): section
//! descriptors pointing past the end, forwards and at themselves, absurd sizes and chunk counts,
//! bad Adler-32s of descriptors, table headers and entries, decompression bombs, absurd media
//! values, and sets missing a segment.

use super::harness::*;
#[path = "../ewf2/mod.rs"]
mod ex01;
use ex01::*;

/// Each table entry of the base patched: absurd offsets and sizes, flags flipped; the entries'
/// checksum made right (the footer after the last entry of the table it is in).
fn entry_cases(base: &[u8], layout: &Layout, seed: u64) -> Vec<Case> {
    let mut cases = Vec::new();
    let tables = layout.sections_of(1, SECTOR_TABLE);
    let fixed = |bytes: &mut Vec<u8>, entry_at: usize| {
        let t = tables.iter().find(|t| t.data <= entry_at && entry_at < t.data + t.data_size).unwrap();
        let count = le32(bytes, t.data + 8) as usize;
        let (from, sum_at) = (t.data + 32, t.data + 32 + 16 * count);
        put_adler32(bytes, from, sum_at);
    };
    let mut rng = Rng(seed);
    let entries: Vec<&EntryAt> = layout.entries.iter().filter(|e| e.segment == 1).collect();
    for e in [
        entries[0],
        entries[entries.len() / 2],
        entries[entries.len() - 1],
        entries[rng.below(entries.len() as u64) as usize],
    ] {
        let patches: [(&str, usize, Vec<u8>); 11] = [
            ("offset past the end", 0, (base.len() as u64 + 512).to_le_bytes().to_vec()),
            ("offset 1<<62", 0, (1u64 << 62).to_le_bytes().to_vec()),
            ("offset u64::MAX", 0, u64::MAX.to_le_bytes().to_vec()),
            ("offset 0", 0, 0u64.to_le_bytes().to_vec()),
            ("offset in the last descriptor", 0, (base.len() as u64 - 10).to_le_bytes().to_vec()),
            ("size 0", 8, 0u32.to_le_bytes().to_vec()),
            ("size 4", 8, 4u32.to_le_bytes().to_vec()),
            ("size u32::MAX", 8, u32::MAX.to_le_bytes().to_vec()),
            ("compressed flag flipped", 12, (e.flags ^ 1).to_le_bytes().to_vec()),
            ("pattern fill", 12, (e.flags | 5).to_le_bytes().to_vec()),
            ("all flags", 12, u32::MAX.to_le_bytes().to_vec()),
        ];
        for (label, off, value) in patches {
            let mut b = base.to_vec();
            b[e.at + off..e.at + off + value.len()].copy_from_slice(&value);
            let unfixed = Case::new(base, format!("chunk {} {label}, entries checksum bad", e.chunk), b.clone());
            fixed(&mut b, e.at);
            cases.push(Case::new(base, format!("chunk {} {label}", e.chunk), b));
            cases.push(unfixed);
        }
    }
    // A compressed chunk replaced by a stream that decompresses to 64 KiB (chunks are 8 KiB).
    if let Some(e) = entries.iter().find(|e| e.flags == 1 && e.size >= 200) {
        let deflate = {
            use std::io::Write;
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
            z.write_all(&[0u8; 65536]).unwrap();
            z.finish().unwrap()
        };
        let bzip = {
            use std::io::Write;
            let mut z = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
            z.write_all(&[0u8; 65536]).unwrap();
            z.finish().unwrap()
        };
        for (label, bomb) in [("zlib", deflate), ("bzip2", bzip)] {
            let mut b = base.to_vec();
            b[e.offset as usize..e.offset as usize + bomb.len()].copy_from_slice(&bomb);
            b[e.at + 8..e.at + 12].copy_from_slice(&(bomb.len() as u32).to_le_bytes());
            fixed(&mut b, e.at);
            cases.push(Case::new(base, format!("chunk {} a {label} stream of 64 KiB", e.chunk), b));
        }
    }
    cases
}

/// Descriptors and table headers patched, their checksums made right.
fn section_cases(base: &[u8], layout: &Layout) -> Vec<Case> {
    let mut cases = Vec::new();
    let len = base.len() as u64;
    for s in layout.sections.iter().filter(|s| s.segment == 1) {
        let d = s.descriptor;
        let name = format!("section {:#x} at {d}", s.kind);
        let mut patch = |label: &str, off: usize, value: &[u8]| {
            let mut b = base.to_vec();
            b[d + off..d + off + value.len()].copy_from_slice(value);
            put_adler32(&mut b, d, d + 60);
            cases.push(Case::new(base, format!("{name} {label}"), b));
        };
        // The previous descriptor: past the end, forwards (a loop), itself, inside the header.
        for prev in [len, len - 64, d as u64, d as u64 + 1, d as u64 - 1, 16, 1, 1 << 40, u64::MAX] {
            patch(&format!("previous {prev}"), 8, &prev.to_le_bytes());
        }
        for size in [0u64, d as u64, len, 1 << 40, u64::MAX] {
            patch(&format!("data size {size}"), 16, &size.to_le_bytes());
        }
        patch("padding u32::MAX", 28, &u32::MAX.to_le_bytes());
        patch("encrypted", 4, &2u32.to_le_bytes());
        patch("integrity hash set", 4, &1u32.to_le_bytes());
        for kind in [0u32, 0x3, 0x4, 0x8, 0xb, 0xd, 0xf, 0x21, u32::MAX] {
            patch(&format!("type {kind:#x}"), 0, &kind.to_le_bytes());
        }
    }
    for t in layout.sections_of(1, SECTOR_TABLE) {
        let h = t.data;
        let mut patch = |label: &str, off: usize, value: &[u8]| {
            let mut b = base.to_vec();
            b[h + off..h + off + value.len()].copy_from_slice(value);
            put_adler32(&mut b, h, h + 16);
            cases.push(Case::new(base, format!("table at {h} {label}"), b));
        };
        for count in [0u32, 1, 1 << 20, (1 << 20) + 1, u32::MAX] {
            patch(&format!("count {count}"), 8, &count.to_le_bytes());
        }
        for first in [1u64, 1 << 40, u64::MAX - 1, u64::MAX] {
            patch(&format!("first chunk {first}"), 0, &first.to_le_bytes());
        }
    }
    // The hash sections: checksums bad, all zero.
    for s in layout.sections.iter().filter(|s| s.kind == MD5_HASH || s.kind == SHA1_HASH) {
        let mut b = base.to_vec();
        b[s.data + 3] ^= 0x10;
        reseal(&mut b, s);
        cases.push(Case::new(base, format!("hash {:#x} with a bad checksum", s.kind), b));
    }
    cases.push(patched(base, "wrong magic", 0, b"EVF2\r\n\x81\x01"));
    cases.push(patched(base, "version 3", 8, &[3]));
    for m in [0u16, 3, u16::MAX] {
        cases.push(patched(base, format!("compression method {m}"), 10, &m.to_le_bytes()));
    }
    cases.push(patched(base, "segment number 2", 12, &2u32.to_le_bytes()));
    cases.push(patched(base, "segment number 0", 12, &0u32.to_le_bytes()));
    cases
}

#[test]
fn hostile_ewf2() {
    let (dir, src) = source();
    let d = dir.path();
    let mut failures = Vec::new();
    for (name, opts) in [
        ("deflate", &["--compression", "deflate", "--sectors-per-chunk", "16", "--table-entries", "64"][..]),
        ("bzip2", &["--compression", "bzip2", "--sectors-per-chunk", "16", "--pattern-fill", "--sha1"][..]),
        ("stored", &["--compression", "none", "--sectors-per-chunk", "16", "--table-entries", "100"][..]),
    ] {
        let layout = build(&src, &d.join(format!("set-{name}")), opts);
        let file = format!("{name}.Ex01");
        let base = std::fs::read(layout.first()).unwrap();
        let structures: Vec<(&str, u64)> = layout
            .sections
            .iter()
            .flat_map(|s| [("descriptor", s.descriptor as u64), ("data", s.data as u64)])
            .collect();
        let mut cases = generic_cases(&base, &structures, 23, 60);
        cases.extend(section_cases(&base, &layout));
        cases.extend(entry_cases(&base, &layout, 31));
        failures.extend(run_cases(d, &file, "ewf", &base, cases));
    }
    assert_none(failures);
}

/// Absurd media values in the device information and case data, and sets missing a segment.
#[test]
fn hostile_ewf2_media_and_sets() {
    let (dir, src) = source();
    let d = dir.path();
    let mut failures = Vec::new();
    let cases: [(&str, &[&str], &str); 13] = [
        ("sectors u64::MAX", &["--device", "ts=18446744073709551615"], "media size"),
        ("sectors 2^62", &["--device", "ts=4611686018427387904"], "media size"),
        ("sectors too many", &["--device", "ts=100000"], "need"),
        ("sectors none", &["--device", "ts="], "sector count"),
        ("sectors not a number", &["--device", "ts=12x"], "not a number"),
        ("sector size 0", &["--device", "bp=0"], "bytes per sector"),
        ("sector size 2^40", &["--device", "bp=1099511627776"], "chunk size"),
        ("sectors per chunk 0", &["--case", "sb=0"], "sectors per chunk"),
        ("sectors per chunk 2^32", &["--case", "sb=4294967296"], "chunk size"),
        ("chunk 32 MiB", &["--case", "sb=65536"], "chunk size"),
        ("sectors per chunk negative", &["--case", "sb=-1"], "not a number"),
        ("chunk count absurd", &["--case", "tb=18446744073709551615"], ""),
        ("no hash", &["--no-md5"], ""),
    ];
    for (label, opts, needle) in cases {
        let layout = build(&src, &d.join("media"), opts);
        let first = layout.first().to_path_buf();
        if needle.is_empty() {
            if let Err(e) = cat_is_clean(&first, &[], &["media.Ex01"]) {
                failures.push(format!("{label}: {e}"));
            }
        } else {
            failures.extend(refused(label, &first, &["media.Ex01"], needle));
        }
    }
    // A set of several segments: one missing, one truncated, one foreign, one emptied.
    let layout = build(&src, &d.join("set"), &["--segment-size", "150000", "--sectors-per-chunk", "16"]);
    assert!(layout.segments.len() >= 4, "{} segments", layout.segments.len());
    let ex03 = d.join("set.Ex03");
    let bytes = std::fs::read(&ex03).unwrap();
    std::fs::remove_file(&ex03).unwrap();
    failures.extend(refused("missing segment", layout.first(), &["set.Ex03"], "missing"));
    std::fs::write(&ex03, &bytes[..bytes.len() - 1]).unwrap();
    failures.extend(refused("truncated segment", layout.first(), &["set.Ex03"], "truncated"));
    std::fs::write(&ex03, b"").unwrap();
    failures.extend(refused("empty segment", layout.first(), &["set.Ex03"], ""));
    std::fs::write(&ex03, &bytes[..32]).unwrap();
    failures.extend(refused("header-only segment", layout.first(), &["set.Ex03"], ""));
    // The set goes on at .Ex03, but the last segment says "next" instead of "done".
    std::fs::write(&ex03, &bytes).unwrap();
    let last = layout.segments.last().unwrap().clone();
    let mut b = std::fs::read(&last).unwrap();
    let n = b.len();
    b[n - 64..n - 60].copy_from_slice(&NEXT.to_le_bytes());
    put_adler32(&mut b, n - 64, n - 4);
    std::fs::write(&last, &b).unwrap();
    let missing = format!("set.Ex{:02}", layout.segments.len() + 1);
    failures.extend(refused("no done section", layout.first(), &[&missing], "missing"));
    assert_none(failures);
}
