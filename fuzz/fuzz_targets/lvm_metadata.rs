//! Any bytes as an LVM2 physical volume (label, metadata area, text metadata) and as metadata
//! text alone: vdmount's own LVM reader (src/inspect/lvm.rs, lvm_text.rs) must never panic,
//! loop or allocate without bound, and every table it builds must stay on the device.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdmount::cache::Cache;
use vdmount::formats::{Format, OpenOptions};
use vdmount::inspect::lvm::{dm_table, parse_vg, read_pv, VolumeGroup};

fn tables(vg: &VolumeGroup, size: u64) {
    for lv in &vg.lvs {
        if let Ok(lines) = dm_table(vg, lv, &|_| Some(("pv".into(), size / 512))) {
            for (start, len, _, params) in lines {
                assert!(start.checked_add(len).is_some());
                let sector: u64 = params.rsplit(' ').next().unwrap().parse().unwrap();
                assert!(sector < size / 512, "a table past the device");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(vg) = parse_vg(data) {
        tables(&vg, 1 << 40);
    }
    let path = vdmount_fuzz::write_input("pv", data);
    let mut opts = OpenOptions::new(Cache::new(1 << 20));
    opts.format = Some(Format::Raw);
    if let Ok(disk) = vdmount::formats::open(&path, &opts) {
        if let Ok(pv) = read_pv(disk.as_ref(), 0, data.len() as u64) {
            if let Ok(vg) = pv.metadata.and_then(|t| parse_vg(&t)) {
                tables(&vg, data.len() as u64);
            }
        }
    }
    let _ = std::fs::remove_file(&path);
});
