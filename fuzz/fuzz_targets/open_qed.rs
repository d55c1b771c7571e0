//! Any file opened as QED (`--format qed`), so the magic detection of open_and_read does not
//! steer inputs away from the QED reader.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdmount::formats::Format;

fuzz_target!(|data: &[u8]| {
    vdmount_fuzz::open_and_read(data, Some(Format::Qed));
});
