//! The VMDK text descriptor parser on its own, on any text (lossily decoded bytes, as the reader
//! decodes descriptors).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdmount::formats::vmdk::descriptor::parse_descriptor;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(d) = parse_descriptor(&text) {
        let _ = (d.create_type(), d.cid(), d.parent_cid(), d.parent_hint());
    }
});
