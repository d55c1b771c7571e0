//! vdmount's own LVM2 reader (src/inspect/lvm.rs, lvm_text.rs) against hostile physical volumes:
//! a valid one is written by tests/vm/make-lvm-pv.py (lvm2's on-disk format, with no lvm code of
//! ours), its volumes must read back as the bytes put in; then the label, the metadata area and
//! the text are corrupted: truncated metadata, segments past the PV's end, absurd extent counts,
//! unclosed and endlessly nested text, huge names, huge sizes. Every case must end in a one-line
//! reason, never a panic, a hang or a huge allocation.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use vdmount::cache::Cache;
use vdmount::formats::{DiskImage, Format, OpenOptions};
use vdmount::inspect::lvm::{crc, dm_table, parse_vg, read_pv, VolumeGroup};

const MIB: usize = 1 << 20;
const DISK: usize = 16 * MIB;
const MDA: usize = 4096;

/// A 16 MiB raw disk that is one PV of group vg0 with volumes home (3 MiB) and data (4 MiB, in
/// two segments), and the volumes' bytes.
fn make_pv(dir: &Path) -> (PathBuf, Vec<u8>, Vec<u8>) {
    let (home, data) = (dir.join("home.img"), dir.join("data.img"));
    make_source_disk(&home, 3 * MIB as u64, 1);
    make_source_disk(&data, 4 * MIB as u64, 2);
    let disk = dir.join("pv.raw");
    std::fs::write(&disk, vec![0u8; DISK]).unwrap();
    run_ok(Command::new("python3").arg(repo().join("tests/vm/make-lvm-pv.py")).args([
        disk.to_str().unwrap(),
        "0",
        &DISK.to_string(),
        "vg0",
        &format!("home={}", home.display()),
        &format!("data={},2", data.display()),
    ]));
    (disk, std::fs::read(home).unwrap(), std::fs::read(data).unwrap())
}

fn open(path: &Path) -> Arc<dyn DiskImage> {
    let mut opts = OpenOptions::new(Cache::new(1 << 20));
    opts.format = Some(Format::Raw);
    vdmount::formats::open(path, &opts).unwrap()
}

/// Reads volume `name` through its device-mapper table, as the kernel would map it.
fn read_volume(disk: &dyn DiskImage, vg: &VolumeGroup, name: &str) -> Result<Vec<u8>, String> {
    let lv = vg.lvs.iter().find(|l| l.name == name).ok_or("no such volume")?;
    let size = disk.virtual_size() / 512;
    let mut out = Vec::new();
    for (start, len, target, params) in dm_table(vg, lv, &|_| Some(("pv".into(), size)))? {
        assert_eq!((target, start), ("linear", out.len() as u64 / 512));
        let sector: u64 = params.strip_prefix("pv ").unwrap().parse().unwrap();
        let mut buf = vec![0u8; len as usize * 512];
        disk.read_at(&mut buf, sector * 512).map_err(|e| e.to_string())?;
        out.extend(buf);
    }
    Ok(out)
}

/// The volume group on the PV in `bytes`, or the one-line reason it cannot be read.
fn group(dir: &Path, bytes: &[u8]) -> Result<(Arc<dyn DiskImage>, VolumeGroup), String> {
    let path = dir.join("case.raw");
    std::fs::write(&path, bytes).unwrap();
    let disk = open(&path);
    let pv = read_pv(disk.as_ref(), 0, bytes.len() as u64)?;
    let vg = parse_vg(&pv.metadata?)?;
    Ok((disk, vg))
}

fn one_line(e: &str) -> &str {
    assert!(!e.is_empty() && !e.contains('\n') && e.len() < 400, "not a one-line reason: {e:?}");
    e
}

/// `bytes` with its metadata text replaced by `f(text)`, and every checksum made right again.
fn with_text(bytes: &[u8], f: impl Fn(&str) -> String) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let len = u64::from_le_bytes(b[MDA + 48..MDA + 56].try_into().unwrap()) as usize;
    let text = String::from_utf8(b[MDA + 512..MDA + 512 + len - 1].to_vec()).unwrap();
    let mut new = f(&text).into_bytes();
    new.push(0);
    assert!(new.len() < MIB - MDA - 512, "the test's text does not fit");
    b[MDA + 512..MDA + 512 + new.len()].copy_from_slice(&new);
    b[MDA + 48..MDA + 56].copy_from_slice(&(new.len() as u64).to_le_bytes());
    b[MDA + 56..MDA + 60].copy_from_slice(&crc(&new).to_le_bytes());
    fix_mda(&mut b);
    b
}

fn fix_mda(b: &mut [u8]) {
    let sum = crc(&b[MDA + 4..MDA + 512]);
    b[MDA..MDA + 4].copy_from_slice(&sum.to_le_bytes());
}

fn fix_label(b: &mut [u8]) {
    let sum = crc(&b[512 + 20..1024]);
    b[512 + 16..512 + 20].copy_from_slice(&sum.to_le_bytes());
}

#[test]
fn volumes_read_back_as_written() {
    let dir = scratch();
    let (pv, home, data) = make_pv(dir.path());
    let (disk, vg) = group(dir.path(), &std::fs::read(pv).unwrap()).unwrap();
    assert_eq!((vg.name.as_str(), vg.extent_size, vg.pvs.len(), vg.lvs.len()), ("vg0", 2048, 1, 2));
    assert_eq!(vg.lvs[1].segments.as_ref().unwrap().len(), 2, "data is in two segments");
    assert_eq!(read_volume(disk.as_ref(), &vg, "home").unwrap(), home);
    assert_eq!(read_volume(disk.as_ref(), &vg, "data").unwrap(), data);
}

#[test]
fn hostile_labels_and_metadata_areas_are_refused_in_one_line() {
    let dir = scratch();
    let (pv, ..) = make_pv(dir.path());
    let good = std::fs::read(pv).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated before the metadata area", good[..2048].to_vec(), "past the end of the PV"),
        ("truncated in the metadata text", good[..MDA + 700].to_vec(), "past the end of the PV"),
        (
            "label checksum",
            {
                let mut b = good.clone();
                b[600] ^= 1;
                b
            },
            "bad checksum",
        ),
        (
            "PV header outside the label",
            {
                let mut b = good.clone();
                b[532..536].copy_from_slice(&600u32.to_le_bytes());
                fix_label(&mut b);
                b
            },
            "outside the label sector",
        ),
        (
            "area lists never end",
            {
                let mut b = good.clone();
                b[512 + 72..1024].fill(0xff);
                fix_label(&mut b);
                b
            },
            "run past the label sector",
        ),
        (
            "metadata area header checksum",
            {
                let mut b = good.clone();
                b[MDA + 30] ^= 1;
                b
            },
            "bad header checksum",
        ),
        (
            "metadata text checksum",
            {
                let mut b = good.clone();
                b[MDA + 600] ^= 1;
                b
            },
            "bad checksum",
        ),
        (
            "a terabyte of metadata",
            {
                let mut b = good.clone();
                b[MDA + 48..MDA + 56].copy_from_slice(&(1u64 << 40).to_le_bytes());
                fix_mda(&mut b);
                b
            },
            "more than the limit",
        ),
        (
            "metadata outside its area",
            {
                let mut b = good.clone();
                b[MDA + 40..MDA + 48].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
                fix_mda(&mut b);
                b
            },
            "outside its area",
        ),
        (
            "wrapping metadata",
            {
                let mut b = good.clone();
                b[MDA + 40..MDA + 48].copy_from_slice(&((MIB - MDA - 10) as u64).to_le_bytes());
                fix_mda(&mut b);
                b
            },
            "bad checksum",
        ),
        (
            "huge metadata area",
            {
                let mut b = good.clone();
                b[512 + 112..512 + 120].copy_from_slice(&u64::MAX.to_le_bytes());
                fix_label(&mut b);
                b
            },
            "past the end of the PV",
        ),
        ("no label", vec![0u8; 4096], "no LVM2 label"),
    ];
    for (what, bytes, expect) in cases {
        let e = group(dir.path(), &bytes).err().unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(one_line(&e).contains(expect), "{what}: {e}");
    }
}

/// What a case is, how it changes the metadata text, and what the reason must say.
type TextCase = (&'static str, Box<dyn Fn(&str) -> String>, &'static str);

#[test]
fn hostile_text_is_refused_in_one_line() {
    let dir = scratch();
    let (pv, ..) = make_pv(dir.path());
    let good = std::fs::read(pv).unwrap();
    let long = "x".repeat(100_000);
    // (what, the text's change, the reason for the group, or for volume "data").
    let cases: Vec<TextCase> = vec![
        ("unclosed", Box::new(|t| t.replacen("}", "", 100)), "is not closed"),
        ("nested without end", Box::new(|t| t.replace("vg0 {", &"a {".repeat(5000))), "nested more than"),
        ("unclosed string", Box::new(|t| format!("{t}x = \"never ends")), "string not closed"),
        (
            "a number beyond 64 bits",
            Box::new(|t| t.replace("extent_count = 3", "extent_count = 99999999999999999999999")),
            "bad number",
        ),
        ("zero extent size", Box::new(|t| t.replace("extent_size = 2048", "extent_size = 0")), "extent size 0"),
        ("huge group name", Box::new(move |t| t.replacen("vg0 {", &format!("{long} {{"), 1)), "is not valid"),
        ("no group", Box::new(|t| t.replace("physical_volumes", "elsewhere")), "no volume group"),
    ];
    for (what, change, expect) in cases {
        let e = group(dir.path(), &with_text(&good, change)).err().unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(one_line(&e).contains(expect), "{what}: {e}");
    }
    // The group is read, but volume data is refused and listed with the reason.
    let lv_cases: Vec<TextCase> = vec![
        ("segment past the PV's end", Box::new(|t| t.replace("pe_count = 15", "pe_count = 7")), "past the end of pv0"),
        (
            "absurd extent count",
            Box::new(|t| t.replacen("extent_count = 2", "extent_count = 9223372036854775806", 1)),
            "past the end of pv0",
        ),
        (
            "absurd first extent",
            Box::new(|t| t.replace("\"pv0\", 6", "\"pv0\", 9223372036854775807")),
            "past the end of pv0",
        ),
        ("gap between segments", Box::new(|t| t.replace("start_extent = 2", "start_extent = 3")), "gap or overlap"),
        ("unknown PV", Box::new(|t| t.replace("\"pv0\", 6", "\"pv7\", 6")), "unknown PV"),
        (
            "thin volume",
            Box::new(|t| {
                t.replace(
                    "type = \"striped\"\nstripe_count = 1\t# linear\n\nstripes = [\n\"pv0\", 3",
                    "type = \"thin\"\nstripe_count = 1\n\nstripes = [\n\"pv0\", 3",
                )
            }),
            "\"thin\"",
        ),
        (
            "stripes that do not match",
            Box::new(|t| {
                t.replace(
                    "stripe_count = 1\t# linear\n\nstripes = [\n\"pv0\", 6",
                    "stripe_count = 3\nstripes = [\n\"pv0\", 6",
                )
            }),
            "do not match",
        ),
        (
            "many segments",
            Box::new(|t| t.replace("segment2 {", &("segment9 { start_extent = 1 }\n".repeat(5000) + "segment2 {"))),
            "more than 4096 segments",
        ),
        (
            "huge volume name",
            Box::new(move |t| t.replace("\ndata {", &format!("\n{} {{", "d".repeat(300)))),
            "is not valid",
        ),
    ];
    for (what, change, expect) in lv_cases {
        let (_, vg) = group(dir.path(), &with_text(&good, change)).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(vg.lvs.len(), 2, "{what}");
        let e = vg.lvs[1].segments.as_ref().err().unwrap_or_else(|| panic!("{what}: mapped")).clone();
        assert!(one_line(&e).contains(expect), "{what}: {e}");
        assert!(vg.lvs[0].segments.is_ok(), "{what}: home should still map");
    }
}

#[test]
fn a_device_smaller_than_its_pv_is_refused() {
    let dir = scratch();
    let (pv, ..) = make_pv(dir.path());
    let (_, vg) = group(dir.path(), &std::fs::read(pv).unwrap()).unwrap();
    let e = dm_table(&vg, &vg.lvs[0], &|_| Some(("/dev/x".into(), 8 * 2048))).unwrap_err();
    assert!(one_line(&e).contains("run past the end of /dev/x"), "{e}");
}

#[test]
fn too_many_items_are_refused() {
    let text = "vg0 {\n".to_string() + &"x = 1\n".repeat((1 << 20) + 1) + "}\n";
    let e = parse_vg(text.as_bytes()).unwrap_err();
    assert!(one_line(&e).contains("more than"), "{e}");
}
