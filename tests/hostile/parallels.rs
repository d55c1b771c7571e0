//! Hostile Parallels.

use super::harness::*;

fn parallels_cases(base: &[u8], seed: u64) -> Vec<Case> {
    let bat_entries = le32(base, 32) as u64;
    let data_at = le32(base, 48) as u64 * 512;
    let structures = [("header", 0), ("BAT", 64), ("data area", data_at)];
    let mut cases = generic_cases(base, &structures, seed, 60);
    let mut p = |label: &str, at: usize, value: &[u8]| cases.push(patched(base, label, at, value));
    p("wrong magic", 0, b"WithoutFreeSpacE");
    p("v1 magic", 0, b"WithoutFreeSpace");
    for v in [0u32, 1, 3, u32::MAX] {
        p(&format!("version {v}"), 16, &v.to_le_bytes());
    }
    for v in [0u32, 1, 63, 1 << 19, 1 << 22, u32::MAX] {
        p(&format!("cluster size {v} sectors"), 28, &v.to_le_bytes());
    }
    for v in [0u32, 1, bat_entries as u32 + 1, 1 << 20, 1 << 26, u32::MAX] {
        p(&format!("BAT entries {v}"), 32, &v.to_le_bytes());
    }
    // Valid huge sizes stream zeros until the timeout: the descriptor cases have one.
    for v in [0u64, 1, (1 << 53) + 1, u64::MAX] {
        p(&format!("disk size {v} sectors"), 36, &v.to_le_bytes());
    }
    p("in use", 44, &0x746F_6E59u32.to_le_bytes());
    p("in use: unknown value", 44, &0xdead_beefu32.to_le_bytes());
    for v in [0u32, 1, u32::MAX] {
        p(&format!("data_off {v}"), 48, &v.to_le_bytes());
    }
    for v in [1u64, 1 << 40, u64::MAX, data_at / 512] {
        p(&format!("ext_off {v}"), 56, &v.to_le_bytes());
    }
    // BAT entries past the end of the file, into the header, at the last cluster, huge.
    for v in [1u32, 1 << 20, u32::MAX, (base.len() as u64 / 4096) as u32] {
        p(&format!("BAT[0] = {v}"), 64, &v.to_le_bytes());
    }
    cases
}

/// Edits of a bundle descriptor: each replaces the first `from` with `to` (or appends).
fn descriptor_text_cases(base: &[u8], seed: u64) -> Vec<Case> {
    let text = String::from_utf8(base.to_vec()).unwrap();
    let mut cases = generic_cases(base, &[("storage", text.find("<StorageData>").unwrap() as u64)], seed, 40);
    let mut edit = |label: &str, from: &str, to: &str| {
        assert!(text.contains(from), "{label}: {from:?} not in the descriptor");
        cases.push(Case::new(base, label, text.replacen(from, to, 1).into_bytes()));
    };
    let (root, top) = ("{0b2d3c4e-1111-4a5b-8c9d-000000000001}", "{5fbaabe3-6958-40ff-92a7-860e329aab41}");
    edit("parents loop", "<ParentGUID>{00000000-0000-0000-0000-000000000000}", &format!("<ParentGUID>{top}"));
    edit("own parent", &format!("<ParentGUID>{root}"), &format!("<ParentGUID>{top}"));
    edit("missing file", "root.hds", "gone.hds");
    edit("absolute file outside", "root.hds", "/etc/passwd");
    edit("relative file outside", "root.hds", "../../../../etc/passwd");
    edit("a folder", "root.hds", ".");
    edit("the descriptor itself", "top.hds", "DiskDescriptor.xml");
    edit("a FIFO", "root.hds", "/dev/stdin");
    edit("empty file name", "root.hds", "");
    edit("huge disk", "<Disk_size>4096", "<Disk_size>18446744073709551615");
    edit("disk of 2^53 sectors", "<Disk_size>4096", "<Disk_size>9007199254740992");
    edit("storage end past the disk", "<End>4096", "<End>4097");
    edit("empty storage", "<Start>0", "<Start>4096");
    edit("negative start", "<Start>0", "<Start>-1");
    edit("unknown type", "<Type>Compressed", "<Type>Packed");
    edit("plain top", "<Type>Compressed", "<Type>Plain");
    edit("top GUID nowhere", "<Snapshots>", "<Snapshots><TopGUID>{1}</TopGUID>");
    edit("no snapshots", "<Shot>", "<Nothing>");
    edit("DTD", "<?xml version='1.0' encoding='UTF-8'?>", "<!DOCTYPE a [<!ENTITY x \"xxxxxxxxxx\">]>");
    edit("wrong root", "<Parallels_disk_image", "<Other_disk_image");
    edit("padding", "<Padding>0", "<Padding>1");
    // More than the descriptor limit; 70 snapshots deep; many storages over the same file.
    edit(
        "2 MiB descriptor",
        "</Parallels_disk_image>",
        &format!("<!-- {} --></Parallels_disk_image>", "x".repeat(2 << 20)),
    );
    let deep: String =
        (0..70).map(|i| format!("<Shot><GUID>{{{i}}}</GUID><ParentGUID>{{{}}}</ParentGUID></Shot>", i + 1)).collect();
    edit("70 snapshots deep", "<Snapshots>", &format!("<Snapshots><TopGUID>{{0}}</TopGUID>{deep}"));
    let storage = &text[text.find("<Storage>").unwrap()..text.find("</StorageData>").unwrap()];
    edit("overlapping storages", "</StorageData>", &format!("{storage}</StorageData>"));
    edit("5000 storages", "</StorageData>", &format!("{}</StorageData>", storage.repeat(5000)));
    cases
}

#[test]
fn hostile_parallels() {
    let (dir, src) = source();
    let d = dir.path();
    let mut failures = Vec::new();
    for (name, cluster) in [("c4k.prl", "4k"), ("c1m.prl", "1M")] {
        let base = make(d, &src, name, "parallels", &["-o", &format!("cluster_size={cluster}")]);
        failures.extend(run_cases(d, name, "parallels", &base, parallels_cases(&base, 21)));
    }
    // A bundle: a root image and a top snapshot over it.
    let hdd = d.join("disk.hdd");
    std::fs::create_dir(&hdd).unwrap();
    make(&hdd, &src, "root.hds", "parallels", &["-o", "cluster_size=64k"]);
    qemu_img(&["create", "-q", "-f", "parallels", hdd.join("top.hds").to_str().unwrap(), "2M"]);
    let image = |guid: &str, file: &str| {
        format!("<Image><GUID>{guid}</GUID><Type>Compressed</Type><File>{file}</File></Image>")
    };
    let shot = |guid: &str, parent: &str| format!("<Shot><GUID>{guid}</GUID><ParentGUID>{parent}</ParentGUID></Shot>");
    let (root, top) = ("{0b2d3c4e-1111-4a5b-8c9d-000000000001}", "{5fbaabe3-6958-40ff-92a7-860e329aab41}");
    let xml = format!(
        "<?xml version='1.0' encoding='UTF-8'?>\n<Parallels_disk_image Version=\"1.0\"><Disk_Parameters><Disk_size>4096</Disk_size>\
         <Padding>0</Padding></Disk_Parameters><StorageData><Storage><Start>0</Start><End>4096</End><Blocksize>128</Blocksize>\
         {}{}</Storage></StorageData><Snapshots>{}{}</Snapshots></Parallels_disk_image>\n",
        image(root, "root.hds"),
        image(top, "top.hds"),
        shot(root, "{00000000-0000-0000-0000-000000000000}"),
        shot(top, root)
    );
    let base = xml.into_bytes();
    let cases = descriptor_text_cases(&base, 22);
    failures.extend(run_cases(&hdd, "DiskDescriptor.xml", "parallels", &base, cases));
    assert_none(failures);
}
