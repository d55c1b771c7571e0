//! A sparse bundle's Info.plist: an XML property list with one dictionary saying what the bundle
//! is ("diskimage-bundle-type"), the disk's size in bytes ("size") and the size of each band file
//! ("band-size"). Apple writes the numbers as <integer>; libmodi's notes say strings, so both
//! are taken.

use crate::error::{Error, Result};
use crate::limits::{self, MAX_DESCRIPTOR_BYTES, MAX_SPARSE_BAND_BYTES, MAX_VIRTUAL_SIZE};
use crate::source::file::ImageFile;
use plist::{Dictionary, Value};

pub const BUNDLE_TYPE: &str = "com.apple.diskimage.sparsebundle";

pub struct InfoPlist {
    pub size: u64,
    pub band_bytes: u64,
    /// "bundle-backingstore-version", for `info`.
    pub version: Option<String>,
}

pub fn read_info_plist(file: &ImageFile) -> Result<InfoPlist> {
    let path = &file.path;
    let xml = file.read_vec(0, file.size, MAX_DESCRIPTOR_BYTES, "the Info.plist")?;
    let bad = |why: String| Error::corrupt(path, format!("this sparse bundle Info.plist {why}"));
    if xml.starts_with(b"bplist") {
        return Err(Error::unsupported(path, "is a binary property list; sparse bundles have XML ones"));
    }
    let root = Value::from_reader_xml(std::io::Cursor::new(&xml)).map_err(|e| bad(format!("does not parse: {e}")))?;
    let dict = root.as_dictionary().ok_or_else(|| bad("is not a dictionary".into()))?;
    match dict.get("diskimage-bundle-type").and_then(Value::as_string) {
        Some(BUNDLE_TYPE) => {}
        Some(other) => {
            return Err(Error::unsupported(
                path,
                format!("is a disk image bundle of type \"{other}\", not a sparse bundle ({BUNDLE_TYPE})"),
            ))
        }
        None => return Err(bad(format!("has no diskimage-bundle-type (it should be {BUNDLE_TYPE})"))),
    }
    let band_bytes = number(dict, "band-size").map_err(bad)?;
    if band_bytes == 0 {
        return Err(bad("gives a band-size of 0".into()));
    }
    limits::check(path, "the band-size", band_bytes, MAX_SPARSE_BAND_BYTES)?;
    let size = number(dict, "size").map_err(bad)?;
    limits::check(path, "the size", size, MAX_VIRTUAL_SIZE)?;
    let version = dict.get("bundle-backingstore-version").map(|v| match v {
        Value::Integer(i) => i.to_string(),
        Value::String(s) => s.clone(),
        _ => "(not a number)".into(),
    });
    Ok(InfoPlist { size, band_bytes, version })
}

/// The whole number under `key`: an <integer>, or a <string> of decimal digits.
fn number(dict: &Dictionary, key: &str) -> std::result::Result<u64, String> {
    let value = dict.get(key).ok_or_else(|| format!("has no {key}"))?;
    let parsed = match value {
        Value::Integer(i) => i.as_unsigned().ok_or_else(|| i.to_string()),
        Value::String(s) => s.trim().parse::<u64>().map_err(|_| format!("{s:?}")),
        _ => Err("not a number".into()),
    };
    parsed.map_err(|shown| format!("gives {key} {shown}, not a whole number of bytes"))
}
