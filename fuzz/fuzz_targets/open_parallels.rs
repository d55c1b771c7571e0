//! Any file opened as Parallels (`--format parallels`): expanding images and bundle descriptors,
//! so the magic detection of open_and_read does not steer inputs away from the Parallels reader.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdmount::formats::Format;

fuzz_target!(|data: &[u8]| {
    vdmount_fuzz::open_and_read(data, Some(Format::Parallels));
});
