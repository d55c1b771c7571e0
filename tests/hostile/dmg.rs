//! Hostile DMG.

use super::harness::*;

/// `base` (a DMG from `common::dmg::build`) with its blkx tables changed by `edit` and the
/// property list and trailer rewritten to match (the tables are base64 inside the XML).
fn dmg_with_tables(base: &[u8], layout: &crate::common::dmg::Layout, edit: impl Fn(&mut Vec<Vec<u8>>)) -> Vec<u8> {
    let xml = &base[layout.xml_offset..layout.xml_offset + layout.xml_length];
    let mut root = plist::Value::from_reader_xml(xml).unwrap();
    let blkx = root.as_dictionary_mut().unwrap().get_mut("resource-fork").unwrap();
    let blkx = blkx.as_dictionary_mut().unwrap().get_mut("blkx").unwrap().as_array_mut().unwrap();
    let mut tables: Vec<Vec<u8>> =
        blkx.iter().map(|e| e.as_dictionary().unwrap().get("Data").unwrap().as_data().unwrap().to_vec()).collect();
    edit(&mut tables);
    for (e, t) in blkx.iter_mut().zip(tables) {
        e.as_dictionary_mut().unwrap().insert("Data".into(), plist::Value::Data(t));
    }
    let mut new_xml = Vec::new();
    root.to_writer_xml(&mut new_xml).unwrap();
    let mut out = base[..layout.xml_offset].to_vec();
    out.extend_from_slice(&new_xml);
    let mut koly = base[layout.koly_offset..].to_vec();
    koly[224..232].copy_from_slice(&(new_xml.len() as u64).to_be_bytes());
    out.extend_from_slice(&koly);
    out
}

/// Sets the big-endian u64 (or u32 when `value` fits 4 bytes' field) at `at` of chunk entry `i`.
fn set_entry(t: &mut [u8], i: usize, at: usize, value: &[u8]) {
    let e = 204 + 40 * i + at;
    t[e..e + value.len()].copy_from_slice(value);
}

fn dmg_cases(base: &[u8], layout: &crate::common::dmg::Layout, seed: u64) -> Vec<Case> {
    let koly = layout.koly_offset;
    let structures = [("data fork", 0), ("property list", layout.xml_offset as u64), ("trailer", koly as u64)];
    let mut cases = generic_cases(base, &structures, seed, 60);
    // The trailer one byte off its place (qemu searches for it; vdmount wants it last).
    let mut moved = base.to_vec();
    moved.push(0);
    cases.push(Case::new(base, "koly 1 byte before the end", moved));
    for (field, at) in [("data fork offset", 24), ("data fork length", 32), ("xml offset", 216), ("xml length", 224)] {
        for v in [0u64, koly as u64, 1 << 40, u64::MAX] {
            cases.push(patched(base, format!("{field} {v}"), koly + at, &v.to_be_bytes()));
        }
    }
    for v in [0u64, 1, 1 << 62, u64::MAX] {
        cases.push(patched(base, format!("sector count {v}"), koly + 492, &v.to_be_bytes()));
    }
    cases.push(patched(base, "koly version 3", koly + 4, &3u32.to_be_bytes()));
    // Bad base64 and broken XML.
    let xml = &base[layout.xml_offset..koly];
    let data_at = layout.xml_offset + xml.windows(6).position(|w| w == b"<data>").unwrap() + 8;
    cases.push(patched(base, "bad base64", data_at, b"!@#$"));
    cases.push(patched(base, "truncated base64", data_at, b"QQ=</data>"));
    cases.push(patched(base, "broken XML", layout.xml_offset + 40, b"<<<<"));
    cases.push(patched(base, "no blkx", data_at - 200, b"xxxx"));
    // The chunk tables: each edit on a copy of the first table with a compressed chunk.
    let compressed = |t: &[u8]| (0..be32(t, 200) as usize).find(|&i| be32(t, 204 + 40 * i) >> 31 == 1);
    type Edit = Box<dyn Fn(&mut Vec<u8>, usize)>;
    let edits: Vec<(&str, Edit)> = vec![
        ("mish magic", Box::new(|t, _| t[0..4].copy_from_slice(b"MISH"))),
        ("chunk count u32::MAX", Box::new(|t, _| t[200..204].copy_from_slice(&u32::MAX.to_be_bytes()))),
        ("table cut short", Box::new(|t, _| t.truncate(t.len() - 41))),
        ("first sector past the disk", Box::new(|t, _| t[8..16].copy_from_slice(&(1u64 << 40).to_be_bytes()))),
        ("first sector u64::MAX", Box::new(|t, _| t[8..16].copy_from_slice(&u64::MAX.to_be_bytes()))),
        ("data offset u64::MAX", Box::new(|t, _| t[24..32].copy_from_slice(&u64::MAX.to_be_bytes()))),
        ("unknown chunk type", Box::new(|t, i| set_entry(t, i, 0, &0x8000_0008u32.to_be_bytes()))),
        ("compressed chunk of 2^40 sectors", Box::new(|t, i| set_entry(t, i, 16, &(1u64 << 40).to_be_bytes()))),
        ("compressed chunk of 2^17+1 sectors", Box::new(|t, i| set_entry(t, i, 16, &((1u64 << 17) + 1).to_be_bytes()))),
        ("compressed length u64::MAX", Box::new(|t, i| set_entry(t, i, 32, &u64::MAX.to_be_bytes()))),
        ("compressed length 1 GiB", Box::new(|t, i| set_entry(t, i, 32, &(1u64 << 30).to_be_bytes()))),
        ("compressed offset past the fork", Box::new(|t, i| set_entry(t, i, 24, &(1u64 << 40).to_be_bytes()))),
        ("compressed chunk cut to 1 byte", Box::new(|t, i| set_entry(t, i, 32, &1u64.to_be_bytes()))),
        ("chunk declared 1 sector (inflates beyond it)", Box::new(|t, i| set_entry(t, i, 16, &1u64.to_be_bytes()))),
        (
            "chunk declared twice its size",
            Box::new(|t, i| {
                let n = u64::from_be_bytes(t[204 + 40 * i + 16..204 + 40 * i + 24].try_into().unwrap());
                set_entry(t, i, 16, &(2 * n).to_be_bytes())
            }),
        ),
        (
            "chunk turned raw past the fork",
            Box::new(|t, i| {
                set_entry(t, i, 0, &1u32.to_be_bytes());
                set_entry(t, i, 24, &(u64::MAX - 10).to_be_bytes())
            }),
        ),
        ("chunk turned raw", Box::new(|t, i| set_entry(t, i, 0, &1u32.to_be_bytes()))),
        ("chunk turned zlib", Box::new(|t, i| set_entry(t, i, 0, &0x8000_0005u32.to_be_bytes()))),
        ("chunk turned bzip2", Box::new(|t, i| set_entry(t, i, 0, &0x8000_0006u32.to_be_bytes()))),
        ("chunk turned lzfse", Box::new(|t, i| set_entry(t, i, 0, &0x8000_0007u32.to_be_bytes()))),
        ("chunk turned adc", Box::new(|t, i| set_entry(t, i, 0, &0x8000_0004u32.to_be_bytes()))),
    ];
    for (label, edit) in edits {
        let bytes = dmg_with_tables(base, layout, |tables| {
            if let Some((t, i)) = tables.iter_mut().find_map(|t| compressed(t).map(|i| (t, i))) {
                edit(t, i);
            }
        });
        cases.push(Case::new(base, label, bytes));
    }
    // Overlaps: the second table's first chunk moved onto the first table's; a table repeated.
    cases.push(Case::new(
        base,
        "tables overlap",
        dmg_with_tables(base, layout, |t| {
            let first = t[0][8..16].to_vec();
            t[1][8..16].copy_from_slice(&first);
        }),
    ));
    cases.push(Case::new(base, "a table twice", dmg_with_tables(base, layout, |t| t[1] = t[0].clone())));
    cases
}

#[test]
fn hostile_dmg() {
    use crate::common::dmg::{build, Kind, Plan};
    let (dir, src) = source();
    let src = std::fs::read(src).unwrap();
    let mut failures = Vec::new();
    let kinds = [Kind::Zlib, Kind::Raw, Kind::Bzip2, Kind::Adc, Kind::Lzfse];
    let plan = Plan { chunk_sectors: 256, kinds: &kinds, splits: &[1024], comments: true, relative: false };
    let (base, layout) = build(&src, &plan);
    let cases = dmg_cases(&base, &layout, 13);
    // Some cases must be refused, and for the right reason.
    let path = dir.path().join("udif.dmg");
    for (label, needle) in [
        ("koly 1 byte before the end", "has no UDIF trailer"),
        ("xml offset 1099511627776", "past the trailer"),
        ("data fork length 18446744073709551615", "past the trailer"),
        ("bad base64", "property list does not parse"),
        ("chunk count u32::MAX", "claims 4294967295 chunks"),
        ("first sector past the disk", "past the disk"),
        ("unknown chunk type", "unknown type 0x80000008"),
        ("compressed chunk of 2^40 sectors", "decompressed size of a DMG chunk"),
        ("compressed chunk of 2^17+1 sectors", "decompressed size of a DMG chunk"),
        ("compressed length 1 GiB", "compressed size of a DMG chunk"),
        ("compressed offset past the fork", "past the data fork"),
        ("chunk declared 1 sector (inflates beyond it)", "decompresses to more"),
        ("chunk declared twice its size", "overlap"),
        ("chunk turned raw past the fork", "past the data fork"),
        ("tables overlap", "overlap"),
        ("a table twice", "overlap"),
    ] {
        let case = cases.iter().find(|c| c.label == label).unwrap_or_else(|| panic!("no case {label}"));
        std::fs::write(&path, case.bytes(&base)).unwrap();
        failures.extend(refused_with(label, &path, &["--format", "dmg"], &["udif.dmg"], needle));
    }
    failures.extend(run_cases(dir.path(), "udif.dmg", "dmg", &base, cases));
    assert_none(failures);
}
