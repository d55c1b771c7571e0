//! VMDK reader tests. Each compares `vdmount cat` with an independent answer: qemu-img's raw
//! conversion, or the bytes the test wrote itself (flat files, hand-built sparse files).

mod common;

use common::rng::Rng;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

/// A source disk and a vmdk of it in `subformat`, made by qemu-img in `dir`.
fn qemu_vmdk(dir: &Path, subformat: &str, size: u64, seed: u64) -> (PathBuf, PathBuf) {
    let src = dir.join(format!("src-{seed}.raw"));
    make_source_disk(&src, size, seed);
    let img = dir.join(format!("{subformat}.vmdk"));
    run_ok(
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "vmdk", "-o"])
            .arg(format!("subformat={subformat}"))
            .arg(&src)
            .arg(&img),
    );
    (src, img)
}

fn cat(image: &Path) -> String {
    vdmount_cat_sha256(image, &[]).unwrap_or_else(|e| panic!("vdmount cat {} failed: {e}", image.display()))
}

fn cat_err(image: &Path, args: &[&str]) -> String {
    match vdmount_cat_sha256(image, args) {
        Ok(h) => panic!("vdmount cat {} should have failed, read {h}", image.display()),
        Err(e) => e,
    }
}

fn patch(path: &Path, offset: usize, bytes: &[u8]) {
    let mut data = std::fs::read(path).unwrap();
    data[offset..offset + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, data).unwrap();
}

fn le64_at(path: &Path, offset: usize) -> u64 {
    let data = std::fs::read(path).unwrap();
    u64::from_le_bytes(data[offset..offset + 8].try_into().unwrap())
}

#[test]
fn qemu_subformats_match_qemu() {
    for sub in ["monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized"] {
        let dir = scratch();
        let (src, img) = qemu_vmdk(dir.path(), sub, 3 * MIB + 192 * 1024, 7);
        let ours = cat(&img);
        assert_eq!(ours, qemu_raw_sha256(&img, None), "{sub}: differs from qemu-img");
        assert_eq!(ours, sha256_file(&src), "{sub}: differs from the source disk");
    }
}

#[test]
fn streamoptimized_with_grain_directory_in_the_footer() {
    // Rewrite qemu's streamOptimized as VMware streams it: "GD at end" in the first header,
    // the real header in a footer (footer marker, header copy, end-of-stream marker).
    let dir = scratch();
    let (src, img) = qemu_vmdk(dir.path(), "streamOptimized", 2 * MIB, 3);
    let mut data = std::fs::read(&img).unwrap();
    let header: Vec<u8> = data[..512].to_vec();
    data.resize(data.len().div_ceil(512) * 512, 0);
    let mut marker = vec![0u8; 512];
    marker[..8].copy_from_slice(&1u64.to_le_bytes()); // sectors of metadata that follow
    marker[12..16].copy_from_slice(&3u32.to_le_bytes()); // MARKER_FOOTER
    data.extend_from_slice(&marker);
    data.extend_from_slice(&header);
    data.extend_from_slice(&[0u8; 512]); // end-of-stream marker
    data[56..64].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&img, &data).unwrap();
    assert_eq!(cat(&img), sha256_file(&src));
    assert_eq!(cat(&img), qemu_raw_sha256(&img, None));

    // Without the footer, a clean refusal that names the file.
    data.truncate(data.len() - 1536);
    std::fs::write(&img, &data).unwrap();
    let e = cat_err(&img, &[]);
    assert!(e.contains("footer") && e.contains("streamOptimized.vmdk"), "{e}");
}

#[test]
fn renamed_monolithic_sparse_reads_itself() {
    let dir = scratch();
    for sub in ["monolithicSparse", "streamOptimized"] {
        let (src, img) = qemu_vmdk(dir.path(), sub, 2 * MIB, 11);
        let renamed = dir.path().join(format!("renamed-{sub}.vmdk"));
        std::fs::rename(&img, &renamed).unwrap();
        assert_eq!(cat(&renamed), sha256_file(&src), "{sub}");
        assert_eq!(cat(&renamed), qemu_raw_sha256(&renamed, None), "{sub}");
    }
}

/// A snapshot chain made by qemu: base, child with writes, grandchild with more writes.
fn qemu_chain(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (_, base) = qemu_vmdk(dir, "monolithicSparse", 4 * MIB, 5);
    let child = dir.join("child.vmdk");
    let grandchild = dir.join("grandchild.vmdk");
    qemu_img(&["create", "-q", "-f", "vmdk", "-b", "monolithicSparse.vmdk", "-F", "vmdk", child.to_str().unwrap()]);
    run_ok(
        Command::new("qemu-io")
            .args([
                "-f",
                "vmdk",
                "-c",
                "write -P 0xab 100k 200k",
                "-c",
                "write -P 0x00 1M 64k",
                "-c",
                "write -P 0x5c 4000k 96k",
            ])
            .arg(&child),
    );
    qemu_img(&["create", "-q", "-f", "vmdk", "-b", "child.vmdk", "-F", "vmdk", grandchild.to_str().unwrap()]);
    run_ok(Command::new("qemu-io").args(["-f", "vmdk", "-c", "write -P 0x77 130k 8k"]).arg(&grandchild));
    (base, child, grandchild)
}

#[test]
fn snapshot_chain_matches_qemu() {
    let dir = scratch();
    let (_, child, grandchild) = qemu_chain(dir.path());
    assert_eq!(cat(&child), qemu_raw_sha256(&child, None));
    assert_eq!(cat(&grandchild), qemu_raw_sha256(&grandchild, None));
    // A parent hint recorded as an absolute path on the original host (as VMware often does)
    // falls back to the same name beside the child.
    let moved = dir.path().join("moved-child.vmdk");
    let mut data = std::fs::read(&child).unwrap();
    let hint = b"parentFileNameHint=\"monolithicSparse.vmdk\"";
    let at = data.windows(hint.len()).position(|w| w == hint).unwrap();
    let abs = b"parentFileNameHint=\"C:\\VMs\\old host\\monolithicSparse.vmdk\"";
    // The longer text takes room from the NUL padding after the descriptor.
    let text_end = at + data[at..].iter().position(|&b| b == 0).unwrap();
    data.drain(text_end..text_end + abs.len() - hint.len());
    data.splice(at..at + hint.len(), abs.iter().copied());
    std::fs::write(&moved, &data).unwrap();
    assert_eq!(cat(&moved), qemu_raw_sha256(&child, None));

    let out = run_ok(vdmount().arg("info").arg(&grandchild));
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(info.contains("parent CID") && info.contains("child.vmdk") && info.contains("backing file"), "{info}");
}

#[test]
fn parent_cid_mismatch_is_refused_unless_ignored() {
    let dir = scratch();
    let (_, child, _) = qemu_chain(dir.path());
    let expected = qemu_raw_sha256(&child, None);
    let copy = dir.path().join("child-copy.vmdk");
    std::fs::copy(&child, &copy).unwrap();
    // Patch parentCID in the embedded descriptor, keeping its length.
    let mut data = std::fs::read(&copy).unwrap();
    // (qemu writes CIDs without leading zeros, so the value can be shorter than 8 digits.)
    let at = data.windows(10).position(|w| w == b"parentCID=").unwrap() + 10;
    let len = data[at..].iter().position(|&b| b == b'\n').unwrap();
    let old = String::from_utf8_lossy(&data[at..at + len]).to_string();
    let new: String = old.chars().map(|c| if c == '7' { '8' } else { '7' }).collect();
    let new = new.as_str();
    data[at..at + len].copy_from_slice(new.as_bytes());
    std::fs::write(&copy, &data).unwrap();

    let e = cat_err(&copy, &[]);
    assert!(e.contains("child-copy.vmdk") && e.contains("monolithicSparse.vmdk"), "{e}");
    assert!(e.contains(new) && e.contains(&old) && e.contains("--ignore-parent-id"), "{e}");
    let h = vdmount_cat_sha256(&copy, &["--ignore-parent-id"]).unwrap();
    assert_eq!(h, expected, "--ignore-parent-id should read the same data as the untouched chain");
}

/// A descriptor written by hand, as VMware writes them.
fn descriptor(create_type: &str, extent_lines: &[String]) -> String {
    format!(
        "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=0a0b0c0d\nparentCID=ffffffff\ncreateType=\"{create_type}\"\n\n# Extent description\n{}\n\n# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\nddb.virtualHWVersion = \"14\"\n",
        extent_lines.join("\n")
    )
}

#[test]
fn hand_written_vmfs_descriptors_read_the_flat_file() {
    let dir = scratch();
    let flat = dir.path().join("disk-flat.vmdk");
    let size = 3 * MIB;
    make_source_disk(&flat, size, 21);
    let expected = sha256_file(&flat);
    let sectors = size / 512;
    for (i, ct) in ["vmfs", "vmfsThin", "vmfsEagerZeroedThick", "vmfsPreallocated", "monolithicFlat"].iter().enumerate()
    {
        for line in [
            format!("RW {sectors} VMFS \"disk-flat.vmdk\""),
            format!("RW {sectors} VMFS \"disk-flat.vmdk\" 0"),
            format!("RW {sectors} FLAT \"disk-flat.vmdk\" 0"),
        ] {
            let desc = dir.path().join(format!("disk{i}.vmdk"));
            std::fs::write(&desc, descriptor(ct, std::slice::from_ref(&line))).unwrap();
            assert_eq!(cat(&desc), expected, "{ct}: {line}");
        }
    }
    let desc = dir.path().join("disk4.vmdk");
    let out = run_ok(vdmount().arg("info").arg(&desc));
    let info = String::from_utf8_lossy(&out.stdout);
    for want in [
        "create type: monolithicFlat",
        "hardware version: 14",
        "adapter type: lsilogic",
        "FLAT \"disk-flat.vmdk\"",
        "CID: 0a0b0c0d",
    ] {
        assert!(info.contains(want), "info lacks {want:?}:\n{info}");
    }
}

#[test]
fn several_extents_with_offsets_zero_and_subfolders() {
    // twoGbMaxExtentFlat-like layout written by hand: extents in a subfolder, one with a
    // header before its data (offset field), a ZERO extent, a sparse extent made by qemu.
    let dir = scratch();
    std::fs::create_dir(dir.path().join("parts")).unwrap();
    let a = dir.path().join("parts/a.bin");
    make_source_disk(&a, MIB, 31);
    let b_data = {
        let p = dir.path().join("b.raw");
        make_source_disk(&p, MIB, 32);
        std::fs::read(p).unwrap()
    };
    let mut b_file = vec![0xeeu8; 4096];
    b_file.extend_from_slice(&b_data);
    std::fs::write(dir.path().join("parts/b.bin"), &b_file).unwrap();
    let (c_src, c_img) = qemu_vmdk(dir.path(), "monolithicSparse", MIB, 33);
    let mut expected = std::fs::read(&a).unwrap();
    expected.extend_from_slice(&b_data);
    expected.extend(std::iter::repeat_n(0u8, 512 * 1024));
    expected.extend_from_slice(&std::fs::read(&c_src).unwrap());
    let lines = [
        "RW 2048 FLAT \"parts/a.bin\" 0".to_string(),
        "RDONLY 2048 FLAT \"parts/b.bin\" 8".to_string(),
        "RW 1024 ZERO".to_string(),
        format!("RW 2048 SPARSE \"{}\"", c_img.file_name().unwrap().to_str().unwrap()),
    ];
    let desc = dir.path().join("multi.vmdk");
    std::fs::write(&desc, descriptor("twoGbMaxExtentFlat", &lines)).unwrap();
    assert_eq!(cat(&desc), sha256_hex(&expected));

    // An extent reached through "..": outside the descriptor's folder, so refused by default,
    // read with --allow-dir naming that folder (or --allow-any-path).
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let up = dir.path().join("sub/up.vmdk");
    std::fs::write(&up, descriptor("monolithicFlat", &["RW 2048 FLAT \"../parts/a.bin\" 0".to_string()])).unwrap();
    let e = cat_err(&up, &[]);
    assert!(e.contains("../parts/a.bin") && e.contains("outside") && e.contains("--allow-dir"), "{e}");
    let parts = dir.path().join("parts");
    assert_eq!(vdmount_cat_sha256(&up, &["--allow-dir", parts.to_str().unwrap()]).unwrap(), sha256_file(&a));
    assert_eq!(vdmount_cat_sha256(&up, &["--allow-any-path"]).unwrap(), sha256_file(&a));
    // ... but not when it names a folder.
    std::fs::write(&up, descriptor("monolithicFlat", &["RW 2048 FLAT \"../parts\" 0".to_string()])).unwrap();
    let e = cat_err(&up, &["--allow-dir", parts.to_str().unwrap()]);
    assert!(e.contains("parts") && e.contains("not a regular file"), "{e}");
}

#[test]
fn raw_device_mappings_are_refused_clearly() {
    let dir = scratch();
    for (ct, line) in [
        ("vmfsRDM", "RW 2048 VMFSRDM \"disk-rdm.vmdk\""),
        ("vmfsPassthroughRawDeviceMap", "RW 2048 VMFSRDM \"disk-rdmp.vmdk\""),
        ("fullDevice", "RW 2048 FLAT \"/dev/sda\" 0"),
    ] {
        let desc = dir.path().join(format!("{ct}.vmdk"));
        std::fs::write(&desc, descriptor(ct, &[line.to_string()])).unwrap();
        let e = cat_err(&desc, &[]);
        assert!(e.contains("raw device mapping") && e.contains(&format!("{ct}.vmdk")), "{e}");
    }
}

#[test]
fn third_party_vmdks() {
    let read = check_third_party("vmdk");
    assert!(read.len() >= 9, "read only {read:?}");
}

/// Builds a COWD (ESX VMFS sparse) file from the format description: 2048-byte header, grain
/// directory at sector 4, grain tables of 4096 entries, 4 KiB grains. Returns (file, disk).
fn build_cowd(capacity: u64, grain: u64, written: &[u64], seed: u8) -> (Vec<u8>, Vec<u8>) {
    let grains = capacity / grain;
    let gd_entries = grains.div_ceil(4096);
    let gd_sector = 4u64;
    let gt_sector = gd_sector + (gd_entries * 4).div_ceil(512);
    let gt_sectors = gd_entries * 4096 * 4 / 512;
    let mut file = vec![0u8; ((gt_sector + gt_sectors) * 512) as usize];
    file[..4].copy_from_slice(b"COWD");
    let put = |f: &mut Vec<u8>, at: usize, v: u32| f[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put(&mut file, 4, 1);
    put(&mut file, 8, 3);
    put(&mut file, 12, (capacity / 512) as u32);
    put(&mut file, 16, (grain / 512) as u32);
    put(&mut file, 20, gd_sector as u32);
    put(&mut file, 24, gd_entries as u32);
    for i in 0..gd_entries {
        put(&mut file, (gd_sector * 512 + i * 4) as usize, (gt_sector + i * 8 * 4) as u32);
    }
    let mut disk = vec![0u8; capacity as usize];
    for (n, &g) in written.iter().enumerate() {
        let sector = file.len() as u64 / 512;
        let data: Vec<u8> = (0..grain).map(|i| (i as u8).wrapping_mul(seed).wrapping_add(n as u8 + 1)).collect();
        disk[(g * grain) as usize..((g + 1) * grain) as usize].copy_from_slice(&data);
        file.extend_from_slice(&data);
        put(&mut file, (gt_sector * 512 + g * 4) as usize, sector as u32);
    }
    (file, disk)
}

#[test]
fn cowd_vmfs_sparse_hand_built() {
    let dir = scratch();
    let (file, disk) = build_cowd(MIB, 4096, &[0, 3, 4, 100, 255], 7);
    let img = dir.path().join("esx-delta.vmdk");
    std::fs::write(&img, &file).unwrap();
    assert_eq!(cat(&img), sha256_hex(&disk));
    // Through a vmfsSparse descriptor too; qemu reads COWD only that way (alone, it looks for a
    // CID in the COWD header and fails).
    let desc = dir.path().join("esx.vmdk");
    std::fs::write(&desc, descriptor("vmfsSparse", &["RW 2048 VMFSSPARSE \"esx-delta.vmdk\"".to_string()])).unwrap();
    assert_eq!(cat(&desc), sha256_hex(&disk));
    assert_eq!(cat(&desc), qemu_raw_sha256(&desc, None));
}

/// Builds a seSparse extent from qemu's description of the format: constant header, volatile
/// header, grain directory, grain tables (4096 u64 entries), 4 KiB grains. Grains listed in
/// `zeroed` are marked zero; `written` grains get data. Returns (file, disk).
fn build_sesparse(capacity: u64, written: &[u64], zeroed: &[u64], replay_journal: bool) -> (Vec<u8>, Vec<u8>) {
    let grain = 4096u64;
    let gt_entries = 4096u64;
    let gd_entries = (capacity / grain).div_ceil(gt_entries);
    let (vol, gd, gts) = (1u64, 8u64, 16u64);
    let gd_sectors = (gd_entries * 8).div_ceil(512);
    let gts_sectors = gd_entries * 64;
    let grains_sector = gts + gts_sectors;
    let mut file = vec![0u8; (grains_sector * 512) as usize];
    let put = |f: &mut Vec<u8>, at: u64, v: u64| f[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
    for (i, v) in [0xcafebabe, 0x0000_0002_0000_0001, capacity / 512, 8, 64, 0].iter().enumerate() {
        put(&mut file, i as u64 * 8, *v);
    }
    put(&mut file, 10 * 8, vol);
    put(&mut file, 11 * 8, 1);
    put(&mut file, 16 * 8, gd);
    put(&mut file, 17 * 8, gd_sectors);
    put(&mut file, 18 * 8, gts);
    put(&mut file, 19 * 8, gts_sectors);
    put(&mut file, 24 * 8, grains_sector);
    put(&mut file, vol * 512, 0xcafecafe);
    put(&mut file, vol * 512 + 24, replay_journal as u64);
    // Grain tables are allocated in reverse order, to check the table number is followed.
    for i in 0..gd_entries {
        put(&mut file, gd * 512 + i * 8, 0x1000_0000_0000_0000 | (gd_entries - 1 - i));
    }
    let gte_at = |g: u64| {
        let table = gd_entries - 1 - g / gt_entries;
        gts * 512 + table * gt_entries * 8 + (g % gt_entries) * 8
    };
    let mut disk = vec![0u8; capacity as usize];
    for &g in zeroed {
        put(&mut file, gte_at(g), 0x2000_0000_0000_0000);
    }
    // Data clusters in reverse order too, with a cluster number > 4095 for the first one
    // written, so the split encoding of the number (bits 48..59 and 0..47) is exercised.
    let first_cluster = 5000u64;
    let cluster_count = first_cluster + written.len() as u64;
    file.resize((grains_sector * 512 + cluster_count * grain) as usize, 0);
    for (n, &g) in written.iter().enumerate() {
        let cluster = first_cluster + (written.len() - 1 - n) as u64;
        let data: Vec<u8> = (0..grain).map(|i| (i as u8) ^ (g as u8).wrapping_mul(13) ^ 0x5a).collect();
        let at = grains_sector * 512 + cluster * grain;
        file[at as usize..(at + grain) as usize].copy_from_slice(&data);
        disk[(g * grain) as usize..((g + 1) * grain) as usize].copy_from_slice(&data);
        let entry = 0x3000_0000_0000_0000 | ((cluster & 0xfff) << 48) | (cluster >> 12);
        put(&mut file, gte_at(g), entry);
    }
    (file, disk)
}

#[test]
fn sesparse_hand_built() {
    let dir = scratch();
    let capacity = 20 * MIB; // two grain tables (16 MiB each)
    let (file, disk) = build_sesparse(capacity, &[0, 1, 7, 4096, 4500, 5119], &[2, 4097], false);
    std::fs::write(dir.path().join("snap-sesparse.vmdk"), &file).unwrap();
    let desc = dir.path().join("snap.vmdk");
    std::fs::write(&desc, descriptor("seSparse", &[format!("RW {} SESPARSE \"snap-sesparse.vmdk\"", capacity / 512)]))
        .unwrap();
    assert_eq!(cat(&desc), sha256_hex(&disk));
    assert_eq!(cat(&desc), qemu_raw_sha256(&desc, None));

    // A dirty journal is refused cleanly, naming the file.
    let (file, _) = build_sesparse(capacity, &[0], &[], true);
    std::fs::write(dir.path().join("snap-sesparse.vmdk"), &file).unwrap();
    let e = cat_err(&desc, &[]);
    assert!(e.contains("snap-sesparse.vmdk") && e.contains("journal"), "{e}");
}

#[test]
fn redundant_grain_directory_stands_in_for_a_bad_primary() {
    let dir = scratch();
    let (src, img) = qemu_vmdk(dir.path(), "monolithicSparse", 2 * MIB, 41);
    let flags = u32::from_le_bytes(std::fs::read(&img).unwrap()[8..12].try_into().unwrap());
    assert!(flags & 2 != 0, "qemu should write a redundant grain directory");
    // Primary grain directory past the end of the file: the redundant one is used.
    patch(&img, 56, &(1u64 << 40).to_le_bytes());
    assert_eq!(cat(&img), sha256_file(&src));
    // Both out of range: a clean error naming the file.
    patch(&img, 48, &(1u64 << 40).to_le_bytes());
    let e = cat_err(&img, &[]);
    assert!(e.contains("monolithicSparse.vmdk") && e.contains("grain directory"), "{e}");
}

#[test]
fn hostile_sparse_headers_are_refused_cleanly() {
    let dir = scratch();
    let (_, good) = qemu_vmdk(dir.path(), "monolithicSparse", 2 * MIB, 51);
    let gd = le64_at(&good, 56) as usize * 512;
    type Damage = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "truncated",
            Box::new(move |p: &Path| {
                let d = std::fs::read(p).unwrap();
                std::fs::write(p, &d[..gd + 2]).unwrap();
                // Also break the redundant copy, which lies before the primary.
                patch(p, 48, &0u64.to_le_bytes());
            }),
            "grain directory",
        ),
        ("capacity", Box::new(|p: &Path| patch(p, 12, &(u64::MAX / 3).to_le_bytes())), "capacity"),
        ("gtes", Box::new(|p: &Path| patch(p, 44, &u32::MAX.to_le_bytes())), "numGTEsPerGT"),
        ("gtes0", Box::new(|p: &Path| patch(p, 44, &0u32.to_le_bytes())), "numGTEsPerGT"),
        ("grain", Box::new(|p: &Path| patch(p, 20, &(1u64 << 40).to_le_bytes())), "grain size"),
        ("grain0", Box::new(|p: &Path| patch(p, 20, &0u64.to_le_bytes())), "grain size"),
        ("version", Box::new(|p: &Path| patch(p, 4, &9u32.to_le_bytes())), "version"),
        ("descriptor", Box::new(|p: &Path| patch(p, 28, &(1u64 << 50).to_le_bytes())), "descriptor"),
    ];
    for (name, damage, want) in cases {
        let img = dir.path().join(format!("hostile-{name}.vmdk"));
        std::fs::copy(&good, &img).unwrap();
        damage(&img);
        let e = cat_err(&img, &[]);
        assert!(e.contains(&format!("hostile-{name}.vmdk")) && e.contains(want), "{name}: {e}");
    }
}

#[test]
fn hostile_grain_tables_never_panic() {
    // Garbage in every grain table entry and directory entry: errors or data, never a panic.
    let dir = scratch();
    let (_, good) = qemu_vmdk(dir.path(), "streamOptimized", MIB, 61);
    let data = std::fs::read(&good).unwrap();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for round in 0..12 {
        let mut d = data.clone();
        for _ in 0..64 {
            let x = rng.next();
            let at = (x as usize) % d.len().min(64 * 1024);
            d[at] = (x >> 32) as u8;
        }
        let img = dir.path().join(format!("fuzz-{round}.vmdk"));
        std::fs::write(&img, &d).unwrap();
        let _ = vdmount_cat_sha256(&img, &[]); // asserts there is no panic
    }
}

#[test]
fn hostile_descriptors_are_refused_cleanly() {
    let dir = scratch();
    // Too many extents.
    let many: Vec<String> = (0..5000).map(|_| "RW 1 ZERO".to_string()).collect();
    let desc = dir.path().join("many.vmdk");
    std::fs::write(&desc, descriptor("monolithicFlat", &many)).unwrap();
    let e = cat_err(&desc, &[]);
    assert!(e.contains("many.vmdk") && e.contains("extents"), "{e}");
    // A missing extent file: the error names it and the descriptor.
    let desc = dir.path().join("missing.vmdk");
    std::fs::write(&desc, descriptor("monolithicFlat", &["RW 2048 FLAT \"missing-flat.vmdk\" 0".to_string()])).unwrap();
    let e = cat_err(&desc, &[]);
    assert!(e.contains("missing-flat.vmdk") && e.contains("missing.vmdk"), "{e}");
    // Absurd extent sizes.
    let desc = dir.path().join("huge.vmdk");
    std::fs::write(
        &desc,
        descriptor("monolithicFlat", &["RW 18446744073709551615 ZERO".to_string(), "RW 5 ZERO".to_string()]),
    )
    .unwrap();
    let e = cat_err(&desc, &[]);
    assert!(e.contains("huge.vmdk") && e.contains("limit"), "{e}");
    // No extents at all.
    let desc = dir.path().join("empty.vmdk");
    std::fs::write(&desc, descriptor("monolithicFlat", &[])).unwrap();
    let e = cat_err(&desc, &[]);
    assert!(e.contains("empty.vmdk") && e.contains("no extents"), "{e}");
    // A sparse extent that is not sparse.
    std::fs::write(dir.path().join("text.bin"), vec![b'x'; 4096]).unwrap();
    let desc = dir.path().join("notsparse.vmdk");
    std::fs::write(&desc, descriptor("twoGbMaxExtentSparse", &["RW 8 SPARSE \"text.bin\"".to_string()])).unwrap();
    let e = cat_err(&desc, &[]);
    assert!(e.contains("text.bin") && e.contains("KDMV"), "{e}");
}

#[test]
fn kdmv_file_holding_only_a_descriptor() {
    // A KDMV header of capacity 0 whose embedded descriptor lists the real extents (qemu reads
    // such files as descriptors too).
    let dir = scratch();
    let flat = dir.path().join("data-flat.vmdk");
    make_source_disk(&flat, MIB, 71);
    let mut file = vec![0u8; 512];
    file[..4].copy_from_slice(b"KDMV");
    file[4..8].copy_from_slice(&1u32.to_le_bytes());
    file[20..28].copy_from_slice(&128u64.to_le_bytes()); // grain size
    file[28..36].copy_from_slice(&1u64.to_le_bytes()); // descriptor at sector 1
    file[36..44].copy_from_slice(&20u64.to_le_bytes()); // 20 sectors of descriptor
    file[44..48].copy_from_slice(&512u32.to_le_bytes());
    let mut text = descriptor("monolithicFlat", &["RW 2048 FLAT \"data-flat.vmdk\" 0".to_string()]).into_bytes();
    text.resize(20 * 512, 0);
    file.extend_from_slice(&text);
    let img = dir.path().join("kdmv-desc.vmdk");
    std::fs::write(&img, &file).unwrap();
    assert_eq!(cat(&img), sha256_file(&flat));
    assert_eq!(cat(&img), qemu_raw_sha256(&img, None));
}

#[test]
fn uncompressed_vmdks_are_fully_described_as_extents() {
    // Everything but compressed grains can be handed to abuse.ko as file ranges and zeros.
    let dir = scratch();
    for sub in ["monolithicSparse", "monolithicFlat"] {
        let (src, img) = qemu_vmdk(dir.path(), sub, 3 * MIB + 192 * 1024, 5);
        let (described, size) = described_bytes(&img);
        assert_eq!((described, size), (size, 3 * MIB + 192 * 1024), "{sub}");
        assert_eq!(cat(&img), sha256_file(&src), "{sub}");
    }
    // streamOptimized: only the grains qemu left out (zeros) can be described.
    let (src, img) = qemu_vmdk(dir.path(), "streamOptimized", 3 * MIB + 192 * 1024, 5);
    let (described, size) = described_bytes(&img);
    assert!(described > 0 && described < size, "streamOptimized: {described} of {size}");
    assert_eq!(cat(&img), sha256_file(&src));
    assert_eq!(cat(&img), qemu_raw_sha256(&img, None));

    // COWD and seSparse, hand-built, with unallocated and zero grains.
    let (file, _) = build_cowd(MIB, 4096, &[0, 3, 4, 100, 255], 7);
    let cowd = dir.path().join("esx-delta.vmdk");
    std::fs::write(&cowd, &file).unwrap();
    assert_eq!(described_bytes(&cowd), (MIB, MIB));
    let (file, _) = build_sesparse(20 * MIB, &[0, 1, 7, 4096, 4500, 5119], &[2, 4097], false);
    std::fs::write(dir.path().join("snap-sesparse.vmdk"), &file).unwrap();
    let desc = dir.path().join("snap.vmdk");
    let line = format!("RW {} SESPARSE \"snap-sesparse.vmdk\"", 20 * MIB / 512);
    std::fs::write(&desc, descriptor("seSparse", &[line])).unwrap();
    assert_eq!(described_bytes(&desc), (20 * MIB, 20 * MIB));
}
