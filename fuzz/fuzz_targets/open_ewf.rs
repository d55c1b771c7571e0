//! Any file opened as EWF (`--format ewf`), so the magic detection of open_and_read does not
//! steer inputs away from the EWF reader. (One segment: the input's name is not a set's.)
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdmount::formats::Format;

fuzz_target!(|data: &[u8]| {
    vdmount_fuzz::open_and_read(data, Some(Format::Ewf));
});
