//! What a remote image's server or owner controls and vdmount parses by hand: a Content-Range
//! header, an ~/.aws INI file, and a name an image gives resolved against its URL. None may
//! panic; an accepted range must be inside the size it states.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdmount::source::remote::{http, s3, url};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some((first, last, total)) = http::parse_content_range(&text) {
        assert!(first <= last && last < total);
    }
    let _ = s3::ini_value(&text, "default", "aws_access_key_id");
    if let Ok(u) = url::resolve("http://127.0.0.1:8080/images/top.qcow2", &text) {
        assert!(url::is_url(&u));
    }
    let _ = url::resolve("s3://bucket/vm/top.qcow2", &text);
});
