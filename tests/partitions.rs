//! The partition report printed after attach: checked against sfdisk's reading of the same disk
//! (converted to raw by qemu-img), and hostile tables that must not panic or loop.

mod common;
use common::*;
use vdmount::cache::Cache;
use vdmount::formats::{open, Format, OpenOptions};
use vdmount::inspect::partitions::read_table;

fn table_of(path: &std::path::Path) -> Vec<vdmount::inspect::partitions::Partition> {
    let mut opts = OpenOptions::new(Cache::new(1 << 20));
    opts.format = Some(Format::Raw);
    read_table(open(path, &opts).unwrap().as_ref()).unwrap()
}

#[test]
fn fixture_partitions_match_sfdisk() {
    let dir = scratch();
    let raw = dir.path().join("e2e.raw");
    qemu_img(&["convert", "-O", "raw", repo().join("fixtures/e2e.qcow2").to_str().unwrap(), raw.to_str().unwrap()]);
    let dump = String::from_utf8(run_ok(std::process::Command::new("sfdisk").arg("--dump").arg(&raw)).stdout).unwrap();
    // "…e2e.raw1 : start=        2048, size=       20480, type=…"
    let line = dump.lines().find(|l| l.contains("start=")).expect("sfdisk found no partition");
    let field = |k: &str| -> u64 {
        let rest = &line[line.find(k).unwrap() + k.len()..];
        rest.trim_start().split(',').next().unwrap().trim().parse().unwrap()
    };
    let parts = table_of(&raw);
    assert_eq!(parts.len(), 1, "{parts:?}");
    assert_eq!(parts[0].number, 1);
    assert_eq!(parts[0].start, field("start=") * 512);
    assert_eq!(parts[0].size, field("size=") * 512);
    assert_eq!(parts[0].filesystem.as_deref(), Some("ext4"));
    assert_eq!(parts[0].label.as_deref(), Some("vdm-e2e")); // mkfs.ext4 -L in make-e2e-fixture.sh
}

#[test]
fn hostile_tables_are_survived() {
    let dir = scratch();
    // GPT whose entry runs from 0 to u64::MAX, with a huge entry count and a protective MBR.
    let mut d = vec![0u8; 64 * 1024];
    d[446 + 4] = 0xEE;
    d[510] = 0x55;
    d[511] = 0xAA;
    d[512..520].copy_from_slice(b"EFI PART");
    d[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
    d[512 + 80..512 + 84].copy_from_slice(&u32::MAX.to_le_bytes());
    d[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
    d[1024] = 1; // a non-empty type GUID
    d[1024 + 40..1024 + 48].copy_from_slice(&u64::MAX.to_le_bytes());
    let gpt = dir.path().join("gpt.raw");
    std::fs::write(&gpt, &d).unwrap();
    let parts = table_of(&gpt);
    assert!(parts.len() <= 256, "entry count not bounded");

    // MBR whose extended partition's EBR links to itself: the walk must end.
    let mut m = vec![0u8; 4096];
    m[446 + 4] = 0x05;
    m[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
    m[446 + 12..446 + 16].copy_from_slice(&4u32.to_le_bytes());
    m[510] = 0x55;
    m[511] = 0xAA;
    let e = 512;
    m[e + 446 + 4] = 0x83;
    m[e + 446 + 8..e + 446 + 12].copy_from_slice(&1u32.to_le_bytes());
    m[e + 446 + 12..e + 446 + 16].copy_from_slice(&1u32.to_le_bytes());
    m[e + 462 + 4] = 0x05;
    m[e + 462 + 8..e + 462 + 12].copy_from_slice(&0u32.to_le_bytes());
    m[e + 462 + 12..e + 462 + 16].copy_from_slice(&1u32.to_le_bytes());
    m[e + 510] = 0x55;
    m[e + 511] = 0xAA;
    let mbr = dir.path().join("mbr.raw");
    std::fs::write(&mbr, &m).unwrap();
    let parts = table_of(&mbr);
    assert!(parts.len() <= 66, "EBR loop not bounded: {} partitions", parts.len());
}
