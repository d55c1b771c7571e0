//! VHD reader tests. Oracles: qemu-img for fixed and dynamic disks; for differencing disks
//! (where qemu ignores the parent and libvhdi mishandles partial bitmap bytes) the child is
//! written here from the specification, so the expected disk is known from how it was written.

mod common;

use common::*;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;

/// A source disk of `size` bytes with `[zero_from, zero_to)` zeroed, so dynamic images made
/// from it have unallocated blocks.
fn source_with_hole(path: &Path, size: u64, seed: u64, zero_from: u64, zero_to: u64) -> Vec<u8> {
    make_source_disk(path, size, seed);
    let mut data = std::fs::read(path).unwrap();
    let (from, to) = ((zero_from as usize).min(data.len()), (zero_to as usize).min(data.len()));
    data[from..to].fill(0);
    std::fs::write(path, &data).unwrap();
    data
}

fn to_vpc(src: &Path, dst: &Path, opts: &str) {
    qemu_img(&["convert", "-f", "raw", "-O", "vpc", "-o", opts, src.to_str().unwrap(), dst.to_str().unwrap()]);
}

fn info(image: &Path, args: &[&str]) -> String {
    let out = run_ok(vdmount().arg("info").args(args).arg(image));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn fixed_and_dynamic_match_qemu() {
    let dir = scratch();
    // 6 MiB is not a multiple of a CHS geometry (qemu rounds it up unless force_size is on);
    // 5 MiB - 1536 is odd in both respects. The hole leaves blocks 1 and 2 unallocated.
    for (i, size) in [6 * MIB, 5 * MIB - 1536].into_iter().enumerate() {
        let src = dir.path().join(format!("src{i}.raw"));
        source_with_hole(&src, size, 7 + i as u64, 2 * MIB, 4 * MIB + 4096);
        for opts in
            ["subformat=fixed", "subformat=dynamic", "subformat=fixed,force_size=on", "subformat=dynamic,force_size=on"]
        {
            let img = dir.path().join(format!("img{i}-{}.vhd", opts.replace([',', '='], "-")));
            to_vpc(&src, &img, opts);
            let expected = qemu_raw_sha256(&img, Some("vpc"));
            let got = vdmount_cat_sha256(&img, &[]).unwrap_or_else(|e| panic!("{opts}: {e}"));
            assert_eq!(got, expected, "size {size}, {opts}: vdmount and qemu-img differ");
        }
    }
}

#[test]
fn fixed_vhd_with_misleading_name_is_found_by_its_footer() {
    let dir = scratch();
    let src = dir.path().join("src.raw");
    make_source_disk(&src, 3 * MIB, 11);
    let img = dir.path().join("disk.img");
    to_vpc(&src, &img, "subformat=fixed,force_size=on");
    assert_eq!(vdmount_cat_sha256(&img, &[]).unwrap(), qemu_raw_sha256(&img, Some("vpc")));
    // force_size: the whole source, footer dropped.
    assert_eq!(vdmount_cat_sha256(&img, &[]).unwrap(), sha256_file(&src));
    let text = info(&img, &[]);
    assert!(text.contains("format: vhd") && text.contains("type: fixed"), "{text}");
    assert!(text.contains("qem2") && text.contains("size rule: current_size"), "{text}");
}

#[test]
fn info_of_qemu_dynamic_vhd_says_chs_rule() {
    let dir = scratch();
    let src = dir.path().join("src.raw");
    make_source_disk(&src, 3 * MIB, 5);
    let img = dir.path().join("d.vhd");
    to_vpc(&src, &img, "subformat=dynamic");
    let text = info(&img, &[]);
    for want in [
        "type: dynamic",
        "\"qemu\"",
        "size rule: CHS geometry",
        "block size: 2097152",
        "head copy checksum good; end copy checksum good",
    ] {
        assert!(text.contains(want), "info lacks {want:?}:\n{text}");
    }
}

#[test]
fn third_party_vhd_images() {
    let read = check_third_party("vhd-");
    assert!(read.len() >= 6, "{read:?}");
}

// ---- Writing VHDs by hand, from the specification ----

fn put_be16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
fn put_be32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
fn put_be64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// Sets the VHD checksum (one's complement of the byte sum) of the structure at `b[..len]`
/// whose checksum field is at `at`.
fn fix_checksum(b: &mut [u8], len: usize, at: usize) {
    put_be32(b, at, 0);
    let sum = b[..len].iter().fold(0u32, |s, &x| s.wrapping_add(x as u32));
    put_be32(b, at, !sum);
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

/// One block of a hand-written sparse VHD: its sector bitmap and its data area.
struct Block {
    index: u64,
    bitmap: Vec<u8>,
    data: Vec<u8>,
}

struct SparseSpec {
    disk_type: u32,
    size: u64,
    block_size: u64,
    unique_id: [u8; 16],
    parent_id: [u8; 16],
    parent_name: String,
    /// (platform code, bytes)
    locators: Vec<([u8; 4], Vec<u8>)>,
    blocks: Vec<Block>,
}

/// Writes a dynamic or differencing VHD: footer copy, dynamic header, locator data, BAT,
/// blocks (bitmap then data), footer. Creator "win " so the size is current_size.
fn write_sparse(spec: &SparseSpec) -> Vec<u8> {
    let entries = spec.size.div_ceil(spec.block_size);
    let bitmap_size = (spec.block_size / 512).div_ceil(8).next_multiple_of(512) as usize;
    let locator_at = 1536u64;
    let bat_at = locator_at + 512 * spec.locators.len() as u64;
    let mut out = vec![0u8; (bat_at + (entries * 4).next_multiple_of(512)) as usize];

    let mut footer = [0u8; 512];
    footer[..8].copy_from_slice(b"conectix");
    put_be32(&mut footer, 8, 2);
    put_be32(&mut footer, 12, 0x0001_0000);
    put_be64(&mut footer, 16, 512);
    footer[28..32].copy_from_slice(b"win ");
    put_be32(&mut footer, 32, 0x000a_0000);
    footer[36..40].copy_from_slice(b"Wi2k");
    put_be64(&mut footer, 40, spec.size);
    put_be64(&mut footer, 48, spec.size);
    put_be16(&mut footer, 56, 1000);
    footer[58] = 16;
    footer[59] = 63;
    put_be32(&mut footer, 60, spec.disk_type);
    footer[68..84].copy_from_slice(&spec.unique_id);
    fix_checksum(&mut footer, 512, 64);
    out[..512].copy_from_slice(&footer);

    let h = &mut out[512..1536];
    h[..8].copy_from_slice(b"cxsparse");
    put_be64(h, 8, u64::MAX);
    put_be64(h, 16, bat_at);
    put_be32(h, 24, 0x0001_0000);
    put_be32(h, 28, entries as u32);
    put_be32(h, 32, spec.block_size as u32);
    h[40..56].copy_from_slice(&spec.parent_id);
    for (i, u) in spec.parent_name.encode_utf16().enumerate() {
        h[64 + 2 * i..66 + 2 * i].copy_from_slice(&u.to_be_bytes());
    }
    for (i, (code, bytes)) in spec.locators.iter().enumerate() {
        let e = 576 + 24 * i;
        h[e..e + 4].copy_from_slice(code);
        put_be32(h, e + 4, 1);
        put_be32(h, e + 8, bytes.len() as u32);
        put_be64(h, e + 16, locator_at + 512 * i as u64);
    }
    fix_checksum(h, 1024, 36);
    for (i, (_, bytes)) in spec.locators.iter().enumerate() {
        let at = (locator_at + 512 * i as u64) as usize;
        out[at..at + bytes.len()].copy_from_slice(bytes);
    }

    for e in 0..entries as usize {
        put_be32(&mut out, bat_at as usize + 4 * e, u32::MAX);
    }
    for b in &spec.blocks {
        assert_eq!(b.bitmap.len(), bitmap_size);
        assert_eq!(b.data.len() as u64, spec.block_size);
        let sector = out.len() / 512;
        put_be32(&mut out, bat_at as usize + 4 * b.index as usize, sector as u32);
        out.extend_from_slice(&b.bitmap);
        out.extend_from_slice(&b.data);
    }
    out.extend_from_slice(&footer);
    out
}

fn bitmap_bit(bitmap: &[u8], sector: usize) -> bool {
    bitmap[sector / 8] & (0x80 >> (sector % 8)) != 0
}

/// A hand-written dynamic VHD with 64 KiB blocks (qemu-img only writes 2 MiB blocks), read
/// against qemu-img.
#[test]
fn hand_written_dynamic_with_small_blocks_matches_qemu() {
    let dir = scratch();
    let src = dir.path().join("src.raw");
    let size = MIB + 3 * 512;
    make_source_disk(&src, size, 3);
    let data = std::fs::read(&src).unwrap();
    let block_size = 65536u64;
    let mut blocks = Vec::new();
    for index in 0..size.div_ceil(block_size) {
        let from = (index * block_size) as usize;
        let mut chunk = data[from..(from + block_size as usize).min(data.len())].to_vec();
        if chunk.iter().all(|&b| b == 0) {
            continue;
        }
        chunk.resize(block_size as usize, 0);
        blocks.push(Block { index, bitmap: vec![0xff; 512], data: chunk });
    }
    assert!(blocks.len() < size.div_ceil(block_size) as usize, "the source should leave some blocks unallocated");
    let spec = SparseSpec {
        disk_type: 3,
        size,
        block_size,
        unique_id: [1; 16],
        parent_id: [0; 16],
        parent_name: String::new(),
        locators: vec![],
        blocks,
    };
    let img = dir.path().join("small-blocks.vhd");
    std::fs::write(&img, write_sparse(&spec)).unwrap();
    let expected = qemu_raw_sha256(&img, Some("vpc"));
    assert_eq!(expected, sha256_hex(&data), "qemu-img should read the hand-written image as its source");
    assert_eq!(vdmount_cat_sha256(&img, &[]).unwrap(), expected);
}

/// A parent made by qemu-img (dynamic VHD) and a differencing child written here, with partial
/// bitmaps. Returns the folder, the child path, the parent path and the expected disk.
struct DiffCase {
    dir: tempfile::TempDir,
    child: PathBuf,
    parent: PathBuf,
    expected: Vec<u8>,
}

fn diff_case(parent_id_ok: bool, locators: Vec<([u8; 4], Vec<u8>)>, parent_name: &str) -> DiffCase {
    let dir = scratch();
    let size = 5 * MIB;
    let src = dir.path().join("parent-src.raw");
    let parent_data = source_with_hole(&src, size, 21, 2 * MIB, 4 * MIB);
    let parent = dir.path().join("parent.vhd");
    to_vpc(&src, &parent, "subformat=dynamic,force_size=on");
    assert_eq!(
        qemu_raw_sha256(&parent, Some("vpc")),
        sha256_hex(&parent_data),
        "qemu-img should read the parent as its source"
    );
    let parent_bytes = std::fs::read(&parent).unwrap();
    let mut parent_id: [u8; 16] = parent_bytes[68..84].try_into().unwrap();
    if !parent_id_ok {
        parent_id[0] ^= 0x55;
    }

    // 512 KiB child blocks (the parent has 2 MiB ones): 1024 sectors, a 128-byte bitmap.
    let block_size = 512 * 1024u64;
    let sectors = (block_size / 512) as usize;
    let mut expected = parent_data.clone();
    let mut blocks = Vec::new();
    let mut x = 0x1234_5678u32;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    // (block, kind): partial random bitmap; bytes that begin with set bits then clear ones;
    // all set; allocated but all clear (wholly the parent's); one in the parent's zero hole;
    // the last block.
    for (index, kind) in [(0u64, "random"), (1, "leading"), (3, "full"), (4, "empty"), (5, "random"), (9, "leading")] {
        let mut bitmap = vec![0u8; 512];
        for (i, b) in bitmap.iter_mut().take(sectors / 8).enumerate() {
            *b = match kind {
                "random" => next() as u8,
                "leading" => [0x80, 0xe0, 0xf8, 0xfe, 0xc0, 0x00, 0xff, 0x01][i % 8],
                "full" => 0xff,
                _ => 0,
            };
        }
        // Set sectors hold their own pattern; clear ones hold 0xEE, which must never be read.
        let mut data = vec![0xeeu8; block_size as usize];
        for s in 0..sectors {
            if bitmap_bit(&bitmap, s) {
                let sector_data = &mut data[s * 512..(s + 1) * 512];
                for (j, b) in sector_data.iter_mut().enumerate() {
                    *b = (index as u8).wrapping_mul(31) ^ (s as u8) ^ (j as u8).wrapping_mul(7);
                }
                // One sector rewritten with zeros: the child's zeros, not the parent's data.
                if s == 2 {
                    sector_data.fill(0);
                }
                let at = index as usize * block_size as usize + s * 512;
                expected[at..at + 512].copy_from_slice(sector_data);
            }
        }
        blocks.push(Block { index, bitmap, data });
    }
    let spec = SparseSpec {
        disk_type: 4,
        size,
        block_size,
        unique_id: [9; 16],
        parent_id,
        parent_name: parent_name.into(),
        locators,
        blocks,
    };
    let child = dir.path().join("child.vhd");
    std::fs::write(&child, write_sparse(&spec)).unwrap();
    DiffCase { dir, child, parent, expected }
}

fn standard_locators() -> Vec<([u8; 4], Vec<u8>)> {
    vec![(*b"W2ku", utf16le("C:\\vms\\parent.vhd")), (*b"W2ru", utf16le(".\\parent.vhd"))]
}

#[test]
fn differencing_child_applies_partial_bitmaps_over_its_parent() {
    let case = diff_case(true, standard_locators(), "parent.vhd");
    let got = vdmount_cat_sha256(&case.child, &[]).unwrap();
    assert_eq!(
        got,
        sha256_hex(&case.expected),
        "differencing view differs from the parent with the child's sectors applied"
    );
    let text = info(&case.child, &[]);
    for want in
        ["type: differencing", "block size: 524288", "locator 1 (W2ru): ./parent.vhd", "backing file:", "type: dynamic"]
    {
        assert!(text.contains(want), "info lacks {want:?}:\n{text}");
    }
    assert!(text.contains(&format!("parent: {}", case.parent.display())), "{text}");
}

/// Reads at odd offsets and lengths (runs that start and end mid-sector, cross blocks), through
/// the library, against the same written-by-hand expectation.
#[test]
fn differencing_unaligned_reads() {
    let case = diff_case(true, standard_locators(), "parent.vhd");
    let opts = vdmount::formats::OpenOptions::new(vdmount::cache::Cache::new(1 << 20));
    let disk = vdmount::formats::open(&case.child, &opts).unwrap();
    assert_eq!(disk.virtual_size(), case.expected.len() as u64);
    let mut x = 99u64;
    for _ in 0..400 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let offset = (x >> 20) % (case.expected.len() as u64 + 1000);
        let len = ((x >> 8) % 3000) as usize;
        let mut buf = vec![0xaau8; len];
        disk.read_at(&mut buf, offset).unwrap();
        let mut want = vec![0u8; len];
        let from = (offset as usize).min(case.expected.len());
        let to = (offset as usize + len).min(case.expected.len());
        want[..to - from].copy_from_slice(&case.expected[from..to]);
        assert!(buf == want, "read of {len} bytes at {offset} differs");
    }
}

#[test]
fn differencing_parent_found_by_name_in_childs_folder() {
    // Only a Windows absolute path, meaningless here: the file name next to the child is used.
    let case = diff_case(true, vec![(*b"W2ku", utf16le("D:\\elsewhere\\parent.vhd"))], "");
    assert_eq!(vdmount_cat_sha256(&case.child, &[]).unwrap(), sha256_hex(&case.expected));
    // Only the parent unicode name.
    let case = diff_case(true, vec![], "parent.vhd");
    assert_eq!(vdmount_cat_sha256(&case.child, &[]).unwrap(), sha256_hex(&case.expected));
}

#[test]
fn differencing_parent_id_mismatch_is_refused_unless_ignored() {
    let case = diff_case(false, standard_locators(), "parent.vhd");
    let err = vdmount_cat_sha256(&case.child, &[]).unwrap_err();
    assert!(err.contains("unique id") && err.contains("--ignore-parent-id"), "{err}");
    assert!(err.contains(case.child.to_str().unwrap()) && err.contains(case.parent.to_str().unwrap()), "{err}");
    let got = vdmount_cat_sha256(&case.child, &["--ignore-parent-id"]).unwrap();
    assert_eq!(got, sha256_hex(&case.expected));
}

#[test]
fn differencing_missing_parent_names_paths_tried() {
    let case = diff_case(true, standard_locators(), "parent.vhd");
    std::fs::remove_file(&case.parent).unwrap();
    let err = vdmount_cat_sha256(&case.child, &[]).unwrap_err();
    assert!(err.contains(case.child.to_str().unwrap()), "{err}");
    let tried = case.dir.path().join("parent.vhd");
    assert!(err.contains(tried.to_str().unwrap()) && err.contains("no such file"), "{err}");
}

/// A dynamic VHD qemu-img made and qemu-io wrote into is all data blocks or unallocated ones,
/// so every byte can be handed to the kernel as extents (file ranges or zeros) while the disk
/// still reads as qemu reads it.
#[test]
fn dynamic_and_fixed_images_are_described_whole_as_extents() {
    let dir = scratch();
    let img = dir.path().join("written.vhd");
    qemu_img(&["create", "-f", "vpc", "-o", "subformat=dynamic", img.to_str().unwrap(), "64M"]);
    // Unaligned to blocks and sectors: a write that straddles blocks, one inside a block.
    for cmd in ["write -P 0x5a 1M 3M", "write -P 0x11 9000k 513", "write -P 0x22 63M 1M"] {
        run_ok(std::process::Command::new("qemu-io").args(["-f", "vpc", "-c", cmd]).arg(&img));
    }
    let fixed = dir.path().join("fixed.vhd");
    qemu_img(&[
        "convert",
        "-f",
        "vpc",
        "-O",
        "vpc",
        "-o",
        "subformat=fixed",
        img.to_str().unwrap(),
        fixed.to_str().unwrap(),
    ]);
    for img in [&img, &fixed] {
        assert_eq!(vdmount_cat_sha256(img, &[]).unwrap(), qemu_raw_sha256(img, Some("vpc")), "{}", img.display());
        let (described, size) = described_bytes(img);
        assert_eq!(described, size, "{}: not all described as extents", img.display());
    }
}

/// A differencing child's sectors come from the child or the parent by bitmap bit; runs of
/// equal bits become one extent each. Blocks whose bits alternate often need more extents than
/// a request may hold and are read instead, so only part of this child is described.
#[test]
fn differencing_child_is_described_as_extents_where_runs_allow() {
    let case = diff_case(true, standard_locators(), "parent.vhd");
    assert_eq!(vdmount_cat_sha256(&case.child, &[]).unwrap(), sha256_hex(&case.expected));
    let (described, size) = described_bytes(&case.child);
    // At most the two 512 KiB blocks with random bitmaps are read instead.
    assert!(described < size && size - described <= 2 * 512 * 1024, "{described} of {size} bytes described");
}

/// qemu sizes "vpc " and "qemu" images by CHS geometry (unless it is the maximum one) and all
/// others by current_size: patch a qemu-img image's creator and sizes and compare with qemu-img.
#[test]
fn size_rule_follows_creator_like_qemu() {
    let dir = scratch();
    let src = dir.path().join("src.raw");
    make_source_disk(&src, 6 * MIB, 19);
    let img = dir.path().join("d.vhd");
    to_vpc(&src, &img, "subformat=dynamic");
    let good = std::fs::read(&img).unwrap();
    let chs = 6301696u64; // qemu-img's geometry for 6 MiB: 181/4/17
    assert_eq!(u64::from(u16::from_be_bytes([good[56], good[57]])) * good[58] as u64 * good[59] as u64 * 512, chs);
    let current = 7 * MIB; // the BAT (4 blocks of 2 MiB) still covers it
    for (creator, max_geometry, want) in [
        (b"qemu", false, chs),
        (b"vpc ", false, chs),
        (b"win ", false, current),
        (b"tap\0", false, current),
        (b"qemu", true, current),
    ] {
        let mut b = good.clone();
        patch_footers(&mut b, |f| {
            f[28..32].copy_from_slice(creator);
            put_be64(f, 48, current);
            if max_geometry {
                put_be16(f, 56, 65535);
                f[58] = 16;
                f[59] = 255;
            }
        });
        let p = dir.path().join("patched.vhd");
        std::fs::write(&p, &b).unwrap();
        let what = format!("creator {:?}, max geometry {max_geometry}", String::from_utf8_lossy(creator));
        assert_eq!(vdmount_cat_sha256(&p, &[]).unwrap(), qemu_raw_sha256(&p, Some("vpc")), "{what}");
        let text = info(&p, &[]);
        assert!(text.contains(&format!("({want} bytes)")), "{what}: expected size {want}:\n{text}");
    }
}

// ---- Hostile and damaged images: clean errors naming the file ----

/// A qemu-img dynamic VHD (force_size, so current_size counts) and its bytes.
fn dynamic_image(dir: &Path) -> (PathBuf, Vec<u8>) {
    let src = dir.join("src.raw");
    make_source_disk(&src, 5 * MIB, 13);
    let img = dir.join("dyn.vhd");
    to_vpc(&src, &img, "subformat=dynamic,force_size=on");
    let bytes = std::fs::read(&img).unwrap();
    (img, bytes)
}

fn assert_refused(path: &Path, bytes: &[u8], what: &str, needle: &str) {
    std::fs::write(path, bytes).unwrap();
    let err = vdmount_cat_sha256(path, &[]).expect_err(what);
    assert!(err.contains(path.to_str().unwrap()), "{what}: error does not name the file: {err}");
    assert!(err.contains(needle), "{what}: error lacks {needle:?}: {err}");
}

/// Both footer copies of a dynamic image, patched by `f`, with checksums fixed.
fn patch_footers(bytes: &mut [u8], f: impl Fn(&mut [u8])) {
    let tail = bytes.len() - 512;
    for at in [0, tail] {
        f(&mut bytes[at..at + 512]);
        fix_checksum(&mut bytes[at..at + 512], 512, 64);
    }
}

#[test]
fn hostile_dynamic_images_are_refused_cleanly() {
    let dir = scratch();
    let (img, good) = dynamic_image(dir.path());
    let bad = dir.path().join("bad.vhd");
    let header_at = be64(&good, 16) as usize;
    let bat_at = be64(&good, header_at + 16) as usize;

    let mut b = good.clone();
    b.truncate(bat_at + 6);
    assert_refused(&bad, &b, "cut in the BAT", "block allocation table");

    let mut b = good.clone();
    put_be64(&mut b, header_at + 16, 1 << 40);
    assert_refused(&bad, &b, "BAT past EOF", "past the end of the file");

    for (block_size, needle) in [(0x8000_0000u32, "limit"), (3, "power of two"), (0, "power of two")] {
        let mut b = good.clone();
        put_be32(&mut b, header_at + 32, block_size);
        assert_refused(&bad, &b, "absurd block size", needle);
    }

    let mut b = good.clone();
    put_be32(&mut b, header_at + 28, u32::MAX);
    assert_refused(&bad, &b, "absurd max_table_entries", "limit");

    let mut b = good.clone();
    patch_footers(&mut b, |f| put_be64(f, 48, u64::MAX - 511));
    assert_refused(&bad, &b, "absurd current_size", "limit");

    let mut b = good.clone();
    patch_footers(&mut b, |f| put_be64(f, 48, 1 << 40));
    assert_refused(&bad, &b, "current_size beyond the BAT", "covering");

    let mut b = good.clone();
    put_be32(&mut b, header_at + 32, 512); // tiny blocks: the BAT no longer covers the disk
    assert_refused(&bad, &b, "BAT too small", "covering");

    // A BAT entry pointing far past the end: that block's data reads as zeros, no panic.
    let mut b = good.clone();
    put_be32(&mut b, bat_at, 0xffff_fff0);
    std::fs::write(&bad, &b).unwrap();
    vdmount_cat_sha256(&bad, &[]).expect("a block past the end reads as zeros");

    // Both footer copies altered without fixing their checksums.
    let mut b = good.clone();
    let tail = b.len() - 512;
    b[70] ^= 1;
    b[tail + 70] ^= 1;
    assert_refused(&bad, &b, "both footers bad", "checksum BAD");
    let _ = img;
}

#[test]
fn one_bad_footer_copy_falls_back_to_the_other() {
    let dir = scratch();
    let (img, good) = dynamic_image(dir.path());
    let expected = qemu_raw_sha256(&img, Some("vpc"));
    for copy in ["head", "end"] {
        let mut b = good.clone();
        let at = if copy == "head" { 70 } else { b.len() - 512 + 70 };
        b[at] ^= 1;
        let p = dir.path().join(format!("bad-{copy}.vhd"));
        std::fs::write(&p, &b).unwrap();
        assert_eq!(vdmount_cat_sha256(&p, &[]).unwrap(), expected, "{copy} copy bad");
        let text = info(&p, &[]);
        assert!(text.contains(&format!("{copy} copy checksum BAD")), "{text}");
    }
}

#[test]
fn hostile_fixed_images_are_refused_cleanly() {
    let dir = scratch();
    let src = dir.path().join("src.raw");
    make_source_disk(&src, MIB, 17);
    let img = dir.path().join("fixed.vhd");
    to_vpc(&src, &img, "subformat=fixed,force_size=on");
    let good = std::fs::read(&img).unwrap();
    let tail = good.len() - 512;
    let bad = dir.path().join("bad.vhd");

    let mut b = good.clone();
    b[tail + 70] ^= 1;
    // --format vhd: without a good footer the file would otherwise be read as raw.
    std::fs::write(&bad, &b).unwrap();
    let err = vdmount_cat_sha256(&bad, &["--format", "vhd"]).unwrap_err();
    assert!(err.contains(bad.to_str().unwrap()) && err.contains("checksum BAD"), "{err}");

    let mut b = good.clone();
    put_be64(&mut b[tail..], 48, 2 * MIB);
    fix_checksum(&mut b[tail..], 512, 64);
    assert_refused(&bad, &b, "fixed size beyond the data", "truncated");

    let mut b = good.clone();
    put_be32(&mut b[tail..], 60, 7);
    fix_checksum(&mut b[tail..], 512, 64);
    assert_refused(&bad, &b, "unknown disk type", "disk type 7");

    assert_eq!(be32(&good, tail + 60), 2);
}

/// A parent locator leading out of the child's folder ("..\parent.vhd", or a symlink beside
/// the child pointing out) is refused by default, and read with --allow-dir or --allow-any-path.
#[test]
fn differencing_parent_outside_the_folder_is_refused_unless_allowed() {
    let case = diff_case(true, vec![(*b"W2ru", utf16le("..\\parent.vhd"))], "");
    let inner = case.dir.path().join("in");
    std::fs::create_dir(&inner).unwrap();
    let child = inner.join("child.vhd");
    std::fs::rename(&case.child, &child).unwrap();
    let err = vdmount_cat_sha256(&child, &[]).unwrap_err();
    assert!(err.contains("child.vhd") && err.contains("outside") && err.contains("--allow-dir"), "{err}");
    let outer = case.dir.path().to_str().unwrap();
    assert_eq!(vdmount_cat_sha256(&child, &["--allow-dir", outer]).unwrap(), sha256_hex(&case.expected));
    assert_eq!(vdmount_cat_sha256(&child, &["--allow-any-path"]).unwrap(), sha256_hex(&case.expected));

    // The same parent reached through a symlink named like the parent, beside the child.
    let case = diff_case(true, vec![], "parent.vhd");
    let child = inner.join("child2.vhd");
    std::fs::rename(&case.child, &child).unwrap();
    let _ = std::fs::remove_file(inner.join("parent.vhd"));
    std::os::unix::fs::symlink(&case.parent, inner.join("parent.vhd")).unwrap();
    let err = vdmount_cat_sha256(&child, &[]).unwrap_err();
    assert!(err.contains("outside") && err.contains(case.parent.to_str().unwrap()), "{err}");
    let outer = case.dir.path().to_str().unwrap();
    assert_eq!(vdmount_cat_sha256(&child, &["--allow-dir", outer]).unwrap(), sha256_hex(&case.expected));
}

/// A differencing child served by nginx finds its parent beside it by URL (the locators'
/// relative name, taken against the child's URL).
#[test]
fn differencing_child_over_http_reads_its_parent_beside_it() {
    let case = diff_case(true, standard_locators(), "parent.vhd");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let nginx = common::servers::Nginx::start_with(case.dir.path(), &format!("access_log {} ranges;", log.display()));
    let name = case.child.strip_prefix(case.dir.path()).unwrap().to_str().unwrap().to_string();
    let url = nginx.http(&name);
    let out = vdmount().args(["cat", &url]).output().unwrap();
    assert!(out.status.success(), "{url}: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sha256_hex(&out.stdout), sha256_hex(&case.expected), "{url} differs from the parent and child built");
    // The parent is found by opening it: one request for its first byte, not a probe and an open.
    let seen = common::servers::requests_logged(&log);
    let probes = seen.iter().filter(|r| r.starts_with("GET /parent.vhd ") && r.ends_with(" bytes=0-0")).count();
    assert_eq!(probes, 1, "the parent's first byte asked for {probes} times: {seen:#?}");
}
