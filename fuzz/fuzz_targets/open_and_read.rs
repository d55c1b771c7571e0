//! Any file as an image, its format detected by magic as `vdmount cat` does: open, then read a
//! bounded amount. Covers every format reader through `vdmount::formats::open`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vdmount_fuzz::open_and_read(data, None);
});
