//! VHDX reader tests. Oracles: `qemu-img convert -O raw` for what qemu reads (fixed, dynamic,
//! qemu-io writes, 4 KiB sectors, a log qemu itself replays with `qemu-img check -r all`); for
//! what qemu cannot read (differencing images, a log opened read-only), the same data written
//! another way: a child image written here from the specification with a known expected view,
//! and the log's writes applied directly to a copy of the file.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

// ---------- little helpers for reading and patching images by hand ----------

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

/// Sets the CRC-32C at bytes 4..8 of `s` (computed with that field zero).
fn fix_crc(s: &mut [u8]) {
    put32(s, 4, 0);
    let c = crc32c::crc32c(s);
    put32(s, 4, c);
}

/// A GUID from its text form, in VHDX (Windows) byte order.
fn guid(text: &str) -> [u8; 16] {
    let h: String = text.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    let b: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap()).collect();
    [b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]
}
fn guid_text(g: &[u8]) -> String {
    format!(
        "{{{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{}}}",
        le32(g, 0),
        le16(g, 4),
        le16(g, 6),
        g[8],
        g[9],
        g[10..16].iter().map(|b| format!("{b:02X}")).collect::<String>()
    )
}

const BAT_GUID: &str = "2DC27766-F623-4200-9D64-115E9BFD4A08";
const METADATA_GUID: &str = "8B7CA206-4790-4B9A-B8FE-575F050F886E";
const FILE_PARAMETERS: &str = "CAA16737-FA36-4D43-B3B6-33F0AA44E76B";
const VIRTUAL_DISK_SIZE: &str = "2FA54224-CD1B-4876-B211-5DBED83BF4B8";
const PAGE_83: &str = "BECA12AB-B2E6-4523-93EF-C309E000C746";
const LOGICAL_SECTOR: &str = "8141BF1D-A96F-4709-BA47-F233A8FAAB5F";
const PHYSICAL_SECTOR: &str = "CDA348C7-445D-4471-9CC9-E9885251C556";
const PARENT_LOCATOR: &str = "A8D35F2D-B30B-454D-ABF7-D3D84834AB0C";
const VHDX_LOCATOR_TYPE: &str = "B04AEFB7-D19E-4A81-B789-25B8E9445913";

/// Where things are in a VHDX, read by the test on its own.
struct Layout {
    current_header: u64,
    log_offset: u64,
    log_length: u64,
    bat_offset: u64,
    metadata_offset: u64,
    data_write_guid: [u8; 16],
}

fn layout(img: &[u8]) -> Layout {
    let h1 = &img[64 << 10..][..4096];
    let h2 = &img[128 << 10..][..4096];
    let current_header = if le64(h1, 8) >= le64(h2, 8) { 64 << 10 } else { 128 << 10 };
    let h = &img[current_header as usize..][..4096];
    let rt = &img[192 << 10..][..65536];
    let mut bat_offset = 0;
    let mut metadata_offset = 0;
    for i in 0..le32(rt, 8) as usize {
        let e = &rt[16 + 32 * i..][..32];
        if e[..16] == guid(BAT_GUID) {
            bat_offset = le64(e, 16);
        } else if e[..16] == guid(METADATA_GUID) {
            metadata_offset = le64(e, 16);
        }
    }
    Layout {
        current_header,
        log_offset: le64(h, 72),
        log_length: le32(h, 68) as u64,
        bat_offset,
        metadata_offset,
        data_write_guid: h[32..48].try_into().unwrap(),
    }
}

/// File offset of metadata item `id`.
fn metadata_item(img: &[u8], id: &str) -> usize {
    let l = layout(img);
    let t = &img[l.metadata_offset as usize..][..65536];
    for i in 0..le16(t, 10) as usize {
        let e = &t[32 + 32 * i..][..32];
        if e[..16] == guid(id) {
            return (l.metadata_offset + le32(e, 16) as u64) as usize;
        }
    }
    panic!("no metadata item {id}");
}

fn bat_entry(img: &[u8], index: u64) -> u64 {
    le64(img, (layout(img).bat_offset + 8 * index) as usize)
}

/// A VHDX made by qemu-img from a deterministic source disk.
fn qemu_vhdx(dir: &Path, name: &str, size: u64, seed: u64, opts: &str) -> PathBuf {
    let raw = dir.join(format!("{name}.raw"));
    make_source_disk(&raw, size, seed);
    let out = dir.join(name);
    qemu_img(&["convert", "-f", "raw", "-O", "vhdx", "-o", opts, raw.to_str().unwrap(), out.to_str().unwrap()]);
    out
}

fn assert_matches_qemu(image: &Path) {
    let ours = vdmount_cat_sha256(image, &[]).unwrap_or_else(|e| panic!("{}: {e}", image.display()));
    assert_eq!(ours, qemu_raw_sha256(image, Some("vhdx")), "{}", image.display());
}

fn info(image: &Path, args: &[&str]) -> String {
    let out = run_ok(vdmount().arg("info").args(args).arg(image));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `vdmount cat` expecting a clean refusal; returns the message.
fn refused(image: &Path) -> String {
    let err = vdmount_cat_sha256(image, &[]).expect_err("expected a refusal");
    assert!(err.contains(image.file_name().unwrap().to_str().unwrap()), "error does not name the file: {err}");
    err
}

// ---------- images qemu made ----------

#[test]
fn fixed_and_dynamic_images_match_qemu() {
    let dir = scratch();
    for sub in ["fixed", "dynamic"] {
        for bs in ["1M", "8M", "32M"] {
            let name = format!("{sub}-{bs}.vhdx");
            let img = qemu_vhdx(
                dir.path(),
                &name,
                5 * MIB + 4096,
                7,
                &format!("subformat={sub},block_size={bs},log_size=1M"),
            );
            assert_matches_qemu(&img);
            let text = info(&img, &[]);
            assert!(text.contains(&format!("type: {sub}")), "{text}");
            assert!(text.contains("creator: QEMU"), "{text}");
            assert!(text.contains("log: clean"), "{text}");
        }
    }
}

#[test]
fn qemu_io_writes_into_dynamic_image_match_qemu() {
    let dir = scratch();
    let img = dir.path().join("sparse.vhdx");
    qemu_img(&["create", "-f", "vhdx", "-o", "block_size=1M", img.to_str().unwrap(), "9M"]);
    for cmd in [
        "write -P 0xab 0 4k",
        "write -P 0x11 1536k 700k",
        "write -P 0x22 3m 1m",
        "write -P 0x33 5000k 513",
        "write -z 3200k 64k",
        "write -P 0x44 9215k 1k",
    ] {
        run_ok(Command::new("qemu-io").args(["-f", "vhdx", "-c", cmd]).arg(&img));
    }
    assert_matches_qemu(&img);
}

/// Blocks of a dynamic (or fixed) VHDX qemu made are present, absent or zero, so every byte can
/// be handed to the kernel as extents (file ranges or zeros) while the disk still reads as qemu
/// reads it.
#[test]
fn dynamic_and_fixed_images_are_described_whole_as_extents() {
    let dir = scratch();
    let img = dir.path().join("written.vhdx");
    qemu_img(&["create", "-f", "vhdx", "-o", "block_size=1M", img.to_str().unwrap(), "64M"]);
    for cmd in ["write -P 0x5a 1M 3M", "write -P 0x11 9000k 513", "write -z 2M 64k", "write -P 0x22 63M 1M"] {
        run_ok(Command::new("qemu-io").args(["-f", "vhdx", "-c", cmd]).arg(&img));
    }
    let fixed = qemu_vhdx(dir.path(), "fixed.vhdx", 5 * MIB + 4096, 7, "subformat=fixed,block_size=1M");
    for img in [&img, &fixed] {
        assert_matches_qemu(img);
        let (described, size) = described_bytes(img);
        assert_eq!(described, size, "{}: not all described as extents", img.display());
    }
}

#[test]
fn four_k_logical_sectors_are_reported_and_read() {
    let dir = scratch();
    let img = qemu_vhdx(dir.path(), "4kn.vhdx", 4 * MIB, 3, "subformat=dynamic,block_size=1M");
    // qemu-img cannot make 4Kn images and qemu 10 refuses to open them. With fewer blocks than
    // either chunk ratio the BAT is the same, so setting the item makes a valid 4Kn image of the
    // same data: it must read as qemu reads the 512-byte original.
    let expected = qemu_raw_sha256(&img, Some("vhdx"));
    let mut bytes = std::fs::read(&img).unwrap();
    let at = metadata_item(&bytes, LOGICAL_SECTOR);
    assert_eq!(le32(&bytes, at), 512);
    put32(&mut bytes, at, 4096);
    std::fs::write(&img, &bytes).unwrap();
    let text = info(&img, &[]);
    assert!(text.contains("logical sector size: 4096"), "{text}");
    assert_eq!(vdmount_cat_sha256(&img, &[]).unwrap(), expected);
    let (described, size) = described_bytes(&img);
    assert_eq!(described, size);
}

#[test]
fn third_party_vhdx_images() {
    let read = check_third_party("vhdx");
    assert_eq!(read.len(), 2, "{read:?}");
}

// ---------- a differencing image written from the specification ----------

/// Writes a VHDX with the given metadata items, BAT entries and extra file contents (offset,
/// bytes). Layout: headers, region tables, log at 1 MiB, BAT at 2 MiB, metadata at 3 MiB.
fn write_vhdx(path: &Path, items: &[(&str, Vec<u8>)], bat: &[(u64, u64)], blobs: &[(u64, Vec<u8>)]) {
    let end = blobs.iter().map(|(o, b)| o + b.len() as u64).max().unwrap_or(0).max(4 * MIB);
    let mut f = vec![0u8; end as usize];
    f[..8].copy_from_slice(b"vhdxfile");
    for (i, u) in "vdmount test".encode_utf16().enumerate() {
        put16(&mut f, 8 + 2 * i, u);
    }
    for (n, off) in [(1u64, 64usize << 10), (2, 128 << 10)] {
        let h = &mut f[off..off + 4096];
        h[..4].copy_from_slice(b"head");
        put64(h, 8, n);
        h[16..32].copy_from_slice(&guid("11111111-2222-3333-4444-555555555555"));
        h[32..48].copy_from_slice(&guid("66666666-7777-8888-9999-AAAAAAAAAAAA"));
        put16(h, 66, 1);
        put32(h, 68, MIB as u32);
        put64(h, 72, MIB);
        fix_crc(h);
    }
    for off in [192usize << 10, 256 << 10] {
        let t = &mut f[off..off + 65536];
        t[..4].copy_from_slice(b"regi");
        put32(t, 8, 2);
        for (i, (g, o)) in [(BAT_GUID, 2 * MIB), (METADATA_GUID, 3 * MIB)].iter().enumerate() {
            let e = &mut t[16 + 32 * i..][..32];
            e[..16].copy_from_slice(&guid(g));
            put64(e, 16, *o);
            put32(e, 24, MIB as u32);
            put32(e, 28, 1);
        }
        fix_crc(t);
    }
    let m = 3 * MIB as usize;
    f[m..m + 8].copy_from_slice(b"metadata");
    put16(&mut f, m + 10, items.len() as u16);
    let mut data_at = 64 << 10;
    for (i, (id, data)) in items.iter().enumerate() {
        let e = m + 32 + 32 * i;
        f[e..e + 16].copy_from_slice(&guid(id));
        put32(&mut f, e + 16, data_at as u32);
        put32(&mut f, e + 20, data.len() as u32);
        let flags = if *id == PARENT_LOCATOR { 4 } else { 4 | 2 };
        put32(&mut f, e + 24, flags);
        f[m + data_at..m + data_at + data.len()].copy_from_slice(data);
        data_at += data.len().div_ceil(4096) * 4096;
    }
    for &(index, entry) in bat {
        put64(&mut f, (2 * MIB + 8 * index) as usize, entry);
    }
    for (o, b) in blobs {
        f[*o as usize..*o as usize + b.len()].copy_from_slice(b);
    }
    std::fs::write(path, f).unwrap();
}

fn parent_locator(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut head = vec![0u8; 20];
    head[..16].copy_from_slice(&guid(VHDX_LOCATOR_TYPE));
    put16(&mut head, 18, pairs.len() as u16);
    let mut strings = Vec::new();
    let base = 20 + 12 * pairs.len();
    let mut entries = Vec::new();
    for (k, v) in pairs {
        let mut entry = [0u8; 12];
        for (slot, text) in [(0, k), (1, v)] {
            let utf16: Vec<u8> = text.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
            put32(&mut entry, 4 * slot, (base + strings.len()) as u32);
            put16(&mut entry, 8 + 2 * slot, utf16.len() as u16);
            strings.extend(utf16);
        }
        entries.extend(entry);
    }
    [head, entries, strings].concat()
}

const PAYLOAD_FULLY_PRESENT: u64 = 6;
const PAYLOAD_PARTIALLY_PRESENT: u64 = 7;
const PAYLOAD_ZERO: u64 = 2;
const SB_PRESENT: u64 = 6;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed ^ (i >> 9) as u8).collect()
}

/// A parent made by qemu-img and a child written here. Returns the child and the virtual disk
/// it must read as, built from the parent's bytes (as qemu reads them) and the child's writes.
fn differencing_pair(dir: &Path, linkage: Option<&str>, relative_path: &str) -> (PathBuf, Vec<u8>) {
    let size = 4 * MIB;
    let parent = qemu_vhdx(dir, "parent.vhdx", size, 11, "subformat=dynamic,block_size=1M");
    let parent_raw = dir.join("parent-view.raw");
    qemu_img(&["convert", "-f", "vhdx", "-O", "raw", parent.to_str().unwrap(), parent_raw.to_str().unwrap()]);
    let mut expected = std::fs::read(&parent_raw).unwrap();
    let parent_guid = guid_text(&layout(&std::fs::read(&parent).unwrap()).data_write_guid);
    let linkage = linkage.map_or(parent_guid, str::to_string);

    // Block 0 fully present, block 1 partially present, block 2 from the parent, block 3 zero.
    let block0 = pattern(MIB as usize, 0x5a);
    let block1 = pattern(MIB as usize, 0xc3);
    let sectors_per_block = (MIB / 512) as usize;
    let mut bits = vec![false; sectors_per_block];
    for s in (0..8).chain([9, 17, 18]).chain(100..301).chain([2047]) {
        bits[s] = true;
    }
    // A byte that starts with set bits and ends with clear ones (bits 0-2 of byte 4).
    bits[32..35].fill(true);
    let mut bitmap = vec![0u8; MIB as usize];
    let chunk_ratio = (1u64 << 23) * 512 / MIB; // 4096
    let block1_bits = sectors_per_block / 8; // block 1's bytes follow block 0's
    for (s, &b) in bits.iter().enumerate() {
        if b {
            bitmap[block1_bits + s / 8] |= 1 << (s % 8);
        }
    }
    expected[..MIB as usize].copy_from_slice(&block0);
    for (s, &b) in bits.iter().enumerate() {
        if b {
            let at = MIB as usize + s * 512;
            expected[at..at + 512].copy_from_slice(&block1[s * 512..s * 512 + 512]);
        }
    }
    expected[3 * MIB as usize..4 * MIB as usize].fill(0);

    let mut params = vec![0u8; 8];
    put32(&mut params, 0, MIB as u32);
    put32(&mut params, 4, 2); // has parent
    let child = dir.join("child.avhdx");
    write_vhdx(
        &child,
        &[
            (FILE_PARAMETERS, params),
            (VIRTUAL_DISK_SIZE, size.to_le_bytes().to_vec()),
            (PAGE_83, guid("0F0F0F0F-1111-2222-3333-444444444444").to_vec()),
            (LOGICAL_SECTOR, 512u32.to_le_bytes().to_vec()),
            (PHYSICAL_SECTOR, 4096u32.to_le_bytes().to_vec()),
            (
                PARENT_LOCATOR,
                parent_locator(&[
                    ("parent_linkage", &linkage),
                    ("relative_path", relative_path),
                    ("volume_path", "\\\\?\\Volume{00000000-0000-0000-0000-000000000000}\\vms\\parent.vhdx"),
                    ("absolute_win32_path", "C:\\vms\\parent.vhdx"),
                ]),
            ),
        ],
        &[
            (0, (4 * MIB) | PAYLOAD_FULLY_PRESENT),
            (1, (5 * MIB) | PAYLOAD_PARTIALLY_PRESENT),
            (3, PAYLOAD_ZERO),
            (chunk_ratio, (6 * MIB) | SB_PRESENT),
        ],
        &[(4 * MIB, block0), (5 * MIB, block1), (6 * MIB, bitmap)],
    );
    (child, expected)
}

#[test]
fn differencing_child_reads_blocks_bitmaps_and_parent() {
    let dir = scratch();
    let (child, expected) = differencing_pair(dir.path(), None, ".\\parent.vhdx");
    assert_eq!(vdmount_cat_sha256(&child, &[]).unwrap(), sha256_hex(&expected));
    let text = info(&child, &[]);
    assert!(text.contains("type: differencing"), "{text}");
    assert!(text.contains("backing file:") && text.contains("parent.vhdx"), "{text}");
    assert!(text.contains("creator: vdmount test"), "{text}");
}

/// The child's runs (present block, bitmap runs, the parent's blocks, a zero block) are few
/// enough that each request fits the extent list: all of it is described.
#[test]
fn differencing_child_is_described_whole_as_extents() {
    let dir = scratch();
    let (child, expected) = differencing_pair(dir.path(), None, ".\\parent.vhdx");
    assert_eq!(vdmount_cat_sha256(&child, &[]).unwrap(), sha256_hex(&expected));
    let (described, size) = described_bytes(&child);
    assert_eq!(described, size);
}

#[test]
fn differencing_parent_found_by_absolute_path_name() {
    let dir = scratch();
    let (child, expected) = differencing_pair(dir.path(), None, "..\\elsewhere\\parent.vhdx");
    assert_eq!(vdmount_cat_sha256(&child, &[]).unwrap(), sha256_hex(&expected));
}

#[test]
fn differencing_parent_id_mismatch_is_refused_unless_ignored() {
    let dir = scratch();
    let (child, expected) =
        differencing_pair(dir.path(), Some("{01234567-89AB-CDEF-0123-456789ABCDEF}"), ".\\parent.vhdx");
    let err = refused(&child);
    assert!(err.contains("parent.vhdx") && err.contains("--ignore-parent-id"), "{err}");
    assert!(err.contains("{01234567-89AB-CDEF-0123-456789ABCDEF}"), "{err}");
    assert_eq!(vdmount_cat_sha256(&child, &["--ignore-parent-id"]).unwrap(), sha256_hex(&expected));
}

#[test]
fn differencing_missing_parent_is_refused() {
    let dir = scratch();
    let (child, _) = differencing_pair(dir.path(), None, ".\\parent.vhdx");
    std::fs::remove_file(dir.path().join("parent.vhdx")).unwrap();
    let err = refused(&child);
    assert!(err.contains("parent VHDX was not found"), "{err}");
}

// ---------- a log that needs replay ----------

enum LogWrite {
    Data(u64, Vec<u8>),
    Zero(u64, u64),
}

/// One log entry as MS-VHDX 2.3.1 lays it out.
fn log_entry(seq: u64, tail: u32, log_guid: &[u8; 16], writes: &[LogWrite], file_size: u64) -> Vec<u8> {
    let count = writes.len();
    let desc_sectors = (count + 2).div_ceil(128);
    let data_count = writes.iter().filter(|w| matches!(w, LogWrite::Data(..))).count();
    let mut e = vec![0u8; (desc_sectors + data_count) * 4096];
    let len = e.len() as u32;
    e[..4].copy_from_slice(b"loge");
    put32(&mut e, 8, len);
    put32(&mut e, 12, tail);
    put64(&mut e, 16, seq);
    put32(&mut e, 24, count as u32);
    e[32..48].copy_from_slice(log_guid);
    put64(&mut e, 48, file_size);
    put64(&mut e, 56, file_size);
    let mut sector = desc_sectors;
    for (i, w) in writes.iter().enumerate() {
        let d = 64 + 32 * i;
        match w {
            LogWrite::Zero(offset, length) => {
                e[d..d + 4].copy_from_slice(b"zero");
                put64(&mut e, d + 8, *length);
                put64(&mut e, d + 16, *offset);
            }
            LogWrite::Data(offset, bytes) => {
                e[d..d + 4].copy_from_slice(b"desc");
                e[d + 4..d + 8].copy_from_slice(&bytes[4092..]);
                e[d + 8..d + 16].copy_from_slice(&bytes[..8]);
                put64(&mut e, d + 16, *offset);
                let s = sector * 4096;
                e[s..s + 4].copy_from_slice(b"data");
                put32(&mut e, s + 4, (seq >> 32) as u32);
                e[s + 8..s + 4092].copy_from_slice(&bytes[8..4092]);
                put32(&mut e, s + 4092, seq as u32);
                sector += 1;
            }
        }
        put64(&mut e, d + 24, seq);
    }
    fix_crc(&mut e);
    e
}

/// Applies `writes` directly to an image's bytes.
fn apply(img: &mut [u8], writes: &[LogWrite]) {
    for w in writes {
        match w {
            LogWrite::Data(o, b) => img[*o as usize..*o as usize + 4096].copy_from_slice(b),
            LogWrite::Zero(o, l) => img[*o as usize..(*o + *l) as usize].fill(0),
        }
    }
}

/// A clean qemu image, the same with a log holding `entries` (writes per entry, applied in
/// order), and the same with the writes applied directly.
struct DirtyCase {
    _dir: tempfile::TempDir,
    dirty: PathBuf,
    direct: PathBuf,
}

fn dirty_case() -> DirtyCase {
    let dir = scratch();
    let clean = qemu_vhdx(dir.path(), "clean.vhdx", 4 * MIB, 5, "subformat=dynamic,block_size=1M,log_size=1M");
    let img = std::fs::read(&clean).unwrap();
    let l = layout(&img);
    let block = |b: u64| bat_entry(&img, b) & !0xFFFFF;
    assert!(block(0) > 0 && block(1) > 0 && block(2) > 0 && block(3) > 0, "blocks not allocated");

    // Entry 10: data into block 0 and block 3, a zeroed range in block 1.
    // Entry 11: the first BAT sector with block 2 turned to ZERO, and block 3's sector again.
    let mut bat_sector = img[l.bat_offset as usize..][..4096].to_vec();
    put64(&mut bat_sector, 16, PAYLOAD_ZERO);
    let first = vec![
        LogWrite::Data(block(0) + 8192, pattern(4096, 1)),
        LogWrite::Data(block(3) + 4096, pattern(4096, 2)),
        LogWrite::Zero(block(1) + 65536, 3 * 4096),
    ];
    let second = vec![LogWrite::Data(l.bat_offset, bat_sector), LogWrite::Data(block(3) + 4096, pattern(4096, 3))];
    // A stale older entry elsewhere in the log, and a newer one with a bad checksum: neither is
    // in the active sequence.
    let stale = vec![LogWrite::Data(block(0), pattern(4096, 4))];
    let broken = vec![LogWrite::Data(block(0) + 4096, pattern(4096, 5))];

    let log_guid = guid("DEADBEEF-0000-1111-2222-333344445555");
    let size = img.len() as u64;
    let e1 = log_entry(10, 0, &log_guid, &first, size);
    let e2 = log_entry(11, 0, &log_guid, &second, size);
    let e_stale = log_entry(9, 0x40000, &log_guid, &stale, size);
    let mut e_broken = log_entry(12, 0, &log_guid, &broken, size);
    e_broken[5000] ^= 1;
    let mut dirty = img.clone();
    let lo = l.log_offset as usize;
    assert!(l.log_length >= MIB);
    for (at, e) in [(0, &e1), (e1.len(), &e2), (0x40000, &e_stale), (0x80000, &e_broken)] {
        dirty[lo + at..lo + at + e.len()].copy_from_slice(e);
    }
    let h = l.current_header as usize;
    dirty[h + 48..h + 64].copy_from_slice(&log_guid);
    fix_crc(&mut dirty[h..h + 4096]);
    let dirty_path = dir.path().join("dirty.vhdx");
    std::fs::write(&dirty_path, &dirty).unwrap();

    let mut direct = img.clone();
    apply(&mut direct, &first);
    apply(&mut direct, &second);
    let direct_path = dir.path().join("direct.vhdx");
    std::fs::write(&direct_path, &direct).unwrap();
    DirtyCase { _dir: dir, dirty: dirty_path, direct: direct_path }
}

#[test]
fn dirty_log_is_replayed_in_memory() {
    let case = dirty_case();
    let before = sha256_file(&case.dirty);
    let ours = vdmount_cat_sha256(&case.dirty, &[]).unwrap();
    // The replayed view equals the image with the same writes made directly...
    assert_eq!(ours, qemu_raw_sha256(&case.direct, Some("vhdx")));
    // ...and differs from the image without them, so the log mattered.
    assert_ne!(ours, qemu_raw_sha256(&case.dirty.with_file_name("clean.vhdx"), Some("vhdx")));
    let text = info(&case.dirty, &[]);
    assert!(text.contains("log: replayed 2 entries (sequence 10..11)"), "{text}");
    assert_eq!(sha256_file(&case.dirty), before, "the image file was modified");
}

/// Bytes the log wrote live only in memory: the requests touching them are read, not described;
/// the rest (zeros the log wrote included) is described.
#[test]
fn dirty_log_bytes_are_not_described_as_extents() {
    let case = dirty_case();
    assert_eq!(vdmount_cat_sha256(&case.dirty, &[]).unwrap(), qemu_raw_sha256(&case.direct, Some("vhdx")));
    let (described, size) = described_bytes(&case.dirty);
    // The two payload sectors the log wrote bytes into cost at most two requests (of at most
    // 512 KiB, as `cat --via-extents` cuts them).
    assert!(described < size && size - described <= 2 * 512 * 1024, "{described} of {size} bytes described");
}

#[test]
fn dirty_log_agrees_with_qemu_replay() {
    let case = dirty_case();
    // qemu sees a log it must replay and will not open the file read-only...
    let out = Command::new("qemu-img")
        .args(["convert", "-U", "-O", "raw"])
        .arg(&case.dirty)
        .arg("/dev/null")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("log that needs to be replayed"));
    // ...and replays it into a copy when opened read-write.
    let copy = case.dirty.with_file_name("qemu-replayed.vhdx");
    std::fs::copy(&case.dirty, &copy).unwrap();
    let _ = Command::new("qemu-img").args(["check", "-r", "all"]).arg(&copy).output().unwrap();
    assert_eq!(vdmount_cat_sha256(&case.dirty, &[]).unwrap(), qemu_raw_sha256(&copy, Some("vhdx")));
}

// ---------- hostile and damaged images ----------

fn patched(dir: &Path, src: &Path, name: &str, patch: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(src).unwrap();
    patch(&mut bytes);
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn damaged_headers() {
    let dir = scratch();
    let img = qemu_vhdx(dir.path(), "base.vhdx", 3 * MIB, 2, "subformat=dynamic,block_size=1M");
    let good = vdmount_cat_sha256(&img, &[]).unwrap();
    // One header damaged: the other is used and the data is the same.
    for (name, at) in [("h1.vhdx", (64 << 10) + 100), ("h2.vhdx", (128 << 10) + 100)] {
        let p = patched(dir.path(), &img, name, |b| b[at] ^= 0xff);
        assert_eq!(vdmount_cat_sha256(&p, &[]).unwrap(), good, "{name}");
        assert!(info(&p, &[]).contains("is invalid: bad CRC-32C"), "{name}");
    }
    let both = patched(dir.path(), &img, "both.vhdx", |b| {
        b[(64 << 10) + 100] ^= 0xff;
        b[(128 << 10) + 100] ^= 0xff;
    });
    assert!(refused(&both).contains("neither VHDX header is valid"));
    // Region table 1 damaged: table 2 is used.
    let rt = patched(dir.path(), &img, "rt1.vhdx", |b| b[(192 << 10) + 100] ^= 0xff);
    assert_eq!(vdmount_cat_sha256(&rt, &[]).unwrap(), good);
}

#[test]
fn truncated_and_out_of_range_images_are_refused() {
    let dir = scratch();
    let img = qemu_vhdx(dir.path(), "base.vhdx", 3 * MIB, 2, "subformat=dynamic,block_size=1M");
    let bytes = std::fs::read(&img).unwrap();
    let l = layout(&bytes);
    for (name, len) in
        [("t1.vhdx", 100usize), ("t2.vhdx", 70 << 10), ("t3.vhdx", 300 << 10), ("t4.vhdx", l.bat_offset as usize + 8)]
    {
        let p = patched(dir.path(), &img, name, |b| b.truncate(len));
        refused(&p);
    }
    let region_entry = |b: &mut Vec<u8>, id: &str, new_offset: u64| {
        for table in [192usize << 10, 256 << 10] {
            for i in 0..le32(b, table + 8) as usize {
                let e = table + 16 + 32 * i;
                if b[e..e + 16] == guid(id) {
                    put64(b, e + 16, new_offset);
                }
            }
            fix_crc(&mut b[table..table + 65536]);
        }
    };
    let bat_far = patched(dir.path(), &img, "bat-far.vhdx", |b| region_entry(b, BAT_GUID, 1 << 40));
    assert!(refused(&bat_far).contains("past the end of the file"));
    let meta_far = patched(dir.path(), &img, "meta-far.vhdx", |b| region_entry(b, METADATA_GUID, 1 << 40));
    assert!(refused(&meta_far).contains("past the end of the file"));
    let unknown = patched(dir.path(), &img, "required.vhdx", |b| {
        for table in [192usize << 10, 256 << 10] {
            let n = le32(b, table + 8) as usize;
            let e = table + 16 + 32 * n;
            b[e..e + 16].copy_from_slice(&guid("01020304-0506-0708-090A-0B0C0D0E0F10"));
            put64(b, e + 16, 100 * MIB);
            put32(b, e + 24, MIB as u32);
            put32(b, e + 28, 1);
            put32(b, table + 8, n as u32 + 1);
            fix_crc(&mut b[table..table + 65536]);
        }
    });
    assert!(refused(&unknown).contains("required region"));
}

#[test]
fn absurd_metadata_is_refused() {
    let dir = scratch();
    let img = qemu_vhdx(dir.path(), "base.vhdx", 3 * MIB, 2, "subformat=dynamic,block_size=1M");
    let bytes = std::fs::read(&img).unwrap();
    let params = metadata_item(&bytes, FILE_PARAMETERS);
    let size = metadata_item(&bytes, VIRTUAL_DISK_SIZE);
    let sector = metadata_item(&bytes, LOGICAL_SECTOR);
    for (name, at, value, expect) in [
        ("bs0.vhdx", params, 0u64, "block size"),
        ("bs3m.vhdx", params, 3 * MIB, "block size"),
        ("bs1g.vhdx", params, 1 << 30, "block size"),
        ("size-huge.vhdx", size, 1 << 62, "virtual disk size"),
        ("size-odd.vhdx", size, 3 * MIB + 1, "not a multiple"),
        ("size-bat.vhdx", size, 60 << 40, "BAT"),
        ("sector.vhdx", sector, 1000, "logical sector size"),
    ] {
        let p = patched(dir.path(), &img, name, |b| {
            if at == params || at == sector {
                put32(b, at, value as u32)
            } else {
                put64(b, at, value)
            }
        });
        let err = refused(&p);
        assert!(err.contains(expect), "{name}: {err}");
    }
}

#[test]
fn hostile_logs_do_not_panic() {
    let case = dirty_case();
    let bytes = std::fs::read(&case.dirty).unwrap();
    let l = layout(&bytes);
    let dir = case.dirty.parent().unwrap();
    let lo = l.log_offset as usize;
    // Only the first entry is kept; then a huge length or descriptor count makes it invalid,
    // so there is no sequence to replay, and qemu (which then opens the file) agrees.
    let first_only = |b: &mut Vec<u8>| b[lo + 3 * 4096..lo + l.log_length as usize].fill(0);
    let huge = patched(dir, &case.dirty, "huge-entry.vhdx", |b| {
        first_only(b);
        put32(b, lo + 8, 0xFFFF_F000);
        fix_crc(&mut b[lo..lo + 4096]);
    });
    let ours = vdmount_cat_sha256(&huge, &[]).unwrap();
    assert_eq!(ours, qemu_raw_sha256(&huge, Some("vhdx")));
    assert!(info(&huge, &[]).contains("no valid entry sequence"));
    let many = patched(dir, &case.dirty, "many-desc.vhdx", |b| {
        first_only(b);
        put32(b, lo + 24, u32::MAX);
    });
    assert_eq!(vdmount_cat_sha256(&many, &[]).unwrap(), ours);
    // The same first entry intact is replayed (so the two cases above did test something).
    let intact = patched(dir, &case.dirty, "first-only.vhdx", |b| first_only(b));
    assert_ne!(vdmount_cat_sha256(&intact, &[]).unwrap(), ours);
    // A log region larger than the file: a clean refusal.
    let long = patched(dir, &case.dirty, "long-log.vhdx", |b| {
        let h = l.current_header as usize;
        put32(b, h + 68, 0xFFF0_0000);
        fix_crc(&mut b[h..h + 4096]);
    });
    refused(&long);
}

/// A parent locator leading out of the child's folder is refused by default, read with
/// --allow-dir or --allow-any-path.
#[test]
fn differencing_parent_outside_the_folder_is_refused_unless_allowed() {
    let dir = scratch();
    let (child, expected) = differencing_pair(dir.path(), None, "..\\parent.vhdx");
    let inner = dir.path().join("in");
    std::fs::create_dir(&inner).unwrap();
    let moved = inner.join("child.avhdx");
    std::fs::rename(&child, &moved).unwrap();
    let err = refused(&moved);
    assert!(err.contains("child.avhdx") && err.contains("outside") && err.contains("--allow-dir"), "{err}");
    let outer = dir.path().to_str().unwrap();
    assert_eq!(vdmount_cat_sha256(&moved, &["--allow-dir", outer]).unwrap(), sha256_hex(&expected));
    assert_eq!(vdmount_cat_sha256(&moved, &["--allow-any-path"]).unwrap(), sha256_hex(&expected));
}

/// A differencing child served by nginx finds its parent beside it by URL.
#[test]
fn differencing_child_over_http_reads_its_parent_beside_it() {
    let dir = scratch();
    let (child, expected) = differencing_pair(dir.path(), None, ".\\parent.vhdx");
    let nginx = common::servers::Nginx::start(dir.path());
    let url = nginx.http(child.file_name().unwrap().to_str().unwrap());
    let out = vdmount().args(["cat", &url]).output().unwrap();
    assert!(out.status.success(), "{url}: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sha256_hex(&out.stdout), sha256_hex(&expected), "{url} differs from the parent and child built");
}
