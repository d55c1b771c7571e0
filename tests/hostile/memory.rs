//! Hostile cases: absurd table sizes do not become allocations.

use super::harness::*;
use super::vhdx::vhdx_checksum;

/// Writes `value` at `at` in the file at `path`.
fn poke(path: &Path, at: u64, value: &[u8]) {
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new().write(true).open(path).unwrap().write_all_at(value, at).unwrap();
}

/// Gives the qcow2 at `path` an L1 table of `entries` entries at the end of the file, as a hole
/// (a sparse file costs no disk), and a virtual size that table covers (64 KiB clusters).
fn give_l1(path: &Path, entries: u64) {
    let end = std::fs::metadata(path).unwrap().len().div_ceil(65536) * 65536;
    poke(path, 24, &(entries * (512 << 20)).to_be_bytes());
    poke(path, 36, &(entries as u32).to_be_bytes());
    poke(path, 40, &end.to_be_bytes());
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(end + entries * 8).unwrap();
}

/// Tables that would take too much memory end in a clean refusal, under the 1 GiB address-space
/// limit: an L1 table of 256 MiB; the same file under several names (hard links); a chain of
/// distinct images whose L1 tables are each allowed but together exceed the chain's budget; a
/// 1 GiB VHDX log; compressed VMDK grains of 32, 64 and 256 MiB.
#[test]
fn hostile_memory() {
    let (dir, src) = source();
    let d = dir.path();
    let mut failures = Vec::new();

    let big = d.join("big-l1.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", big.to_str().unwrap(), "1M"]);
    give_l1(&big, 32 << 20);
    failures.extend(refused("256 MiB L1 table", &big, &["big-l1.qcow2"], "size of the L1 table"));

    // Hard links in nested folders, each naming "sub/img" as its backing file.
    let top = d.join("links");
    std::fs::create_dir(&top).unwrap();
    let first = top.join("img");
    qemu_img(&["create", "-q", "-f", "qcow2", "-u", "-b", "sub/img", "-F", "qcow2", first.to_str().unwrap(), "1M"]);
    give_l1(&first, 3 << 20);
    let mut folder = top.clone();
    for _ in 0..8 {
        folder = folder.join("sub");
        std::fs::create_dir(&folder).unwrap();
        std::fs::hard_link(&first, folder.join("img")).unwrap();
    }
    failures.extend(refused("chain of hard links", &first, &["img"], "loops back"));

    // 24 distinct layers with 24 MiB L1 tables each (each under qemu's 32 MiB limit).
    for i in 0..24 {
        let layer = d.join(format!("layer{i}.qcow2"));
        let below = format!("layer{}.qcow2", i + 1);
        qemu_img(&["create", "-q", "-f", "qcow2", "-u", "-b", &below, "-F", "qcow2", layer.to_str().unwrap(), "1M"]);
        give_l1(&layer, 3 << 20);
    }
    failures.extend(refused(
        "chain over the memory budget",
        &d.join("layer0.qcow2"),
        &["layer"],
        "whole backing chain",
    ));

    // A VHDX whose header asks for a 1 GiB log to be replayed.
    make(d, &src, "log.vhdx", "vhdx", &[]);
    let vhdx = d.join("log.vhdx");
    let end = std::fs::metadata(&vhdx).unwrap().len().div_ceil(1 << 20) << 20;
    std::fs::OpenOptions::new().write(true).open(&vhdx).unwrap().set_len(end + (1 << 30)).unwrap();
    let mut bytes = std::fs::read(&vhdx).unwrap();
    for h in [64usize << 10, 128 << 10] {
        bytes[h + 48..h + 64].copy_from_slice(&[0x5a; 16]); // log GUID: the log must be replayed
        bytes[h + 68..h + 72].copy_from_slice(&(1u32 << 30).to_le_bytes());
        bytes[h + 72..h + 80].copy_from_slice(&end.to_le_bytes());
        vhdx_checksum(&mut bytes[h..h + 4096]);
    }
    std::fs::write(&vhdx, &bytes).unwrap();
    failures.extend(refused("1 GiB VHDX log", &vhdx, &["log.vhdx"], "length of the VHDX log"));

    // streamOptimized grains of 32, 64 and 256 MiB: refused, not inflated for every read.
    make(d, &src, "stream.vmdk", "vmdk", &["-o", "subformat=streamOptimized"]);
    let stream = d.join("stream.vmdk");
    for mib in [32u64, 64, 256] {
        poke(&stream, 20, &(mib << 11).to_le_bytes());
        failures.extend(refused(
            &format!("{mib} MiB compressed grains"),
            &stream,
            &["stream.vmdk"],
            "compressed grains",
        ));
    }
    // Uncompressed grains that large are only file offsets: read (or refused) cleanly.
    make(d, &src, "sparse.vmdk", "vmdk", &[]);
    let sparse = d.join("sparse.vmdk");
    for mib in [32u64, 64, 256] {
        poke(&sparse, 20, &(mib << 11).to_le_bytes());
        if let Err(e) = cat_is_clean(&sparse, &[], &["sparse.vmdk"]) {
            failures.push(format!("{mib} MiB sparse grains: {e}"));
        }
    }
    assert_none(failures);
}
