//! Any file opened as DMG (`--format dmg`), so the trailer detection of open_and_read does not
//! steer inputs away from the DMG reader.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdmount::formats::Format;

fuzz_target!(|data: &[u8]| {
    vdmount_fuzz::open_and_read(data, Some(Format::Dmg));
});
