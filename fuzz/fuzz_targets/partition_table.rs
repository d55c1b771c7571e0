//! Any bytes as a raw disk: the GPT/MBR reader (src/partitions.rs) that reports partitions and
//! filesystem labels after attach must never panic or loop, whatever the table says.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdmount::cache::Cache;
use vdmount::formats::{Format, OpenOptions};

fuzz_target!(|data: &[u8]| {
    let path = vdmount_fuzz::write_input("disk", data);
    let mut opts = OpenOptions::new(Cache::new(1 << 20));
    opts.format = Some(Format::Raw);
    if let Ok(disk) = vdmount::formats::open(&path, &opts) {
        let _ = vdmount::inspect::partitions::read_table(disk.as_ref());
    }
    let _ = std::fs::remove_file(&path);
});
