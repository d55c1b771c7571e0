//! Any file opened as an Apple sparse image (`--format sparseimage`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdmount::formats::Format;

fuzz_target!(|data: &[u8]| {
    vdmount_fuzz::open_and_read(data, Some(Format::SparseImage));
});
