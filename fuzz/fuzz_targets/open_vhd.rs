//! Any file opened as vhd (`--format vhd`), so the magic detection of open_and_read does not
//! steer inputs away from the vhd reader. Checksums are recomputed first, so mutations get past
//! them (open_and_read keeps them as they are, for the checksum checks themselves).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdmount::formats::Format;

fuzz_target!(|data: &[u8]| {
    let mut data = data.to_vec();
    vdmount_fuzz::fix_vhd_checksums(&mut data);
    vdmount_fuzz::open_and_read(&data, Some(Format::Vhd));
});
