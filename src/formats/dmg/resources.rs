//! The XML property list a UDIF trailer points to. Its "resource-fork" dictionary holds a
//! "blkx" array: one entry per partition (or the whole disk), each a name and a base64 "mish"
//! chunk table. Everything else in it (checksums, "plst", "cSum") is not needed to read.

use super::koly::Koly;
use crate::error::{Error, Result};
use crate::limits::MAX_DMG_PLIST_BYTES;
use crate::source::file::ImageFile;
use plist::Value;

/// One "blkx" entry: a partition's name and its decoded chunk table.
pub struct Blkx {
    pub name: String,
    pub table: Vec<u8>,
}

/// Reads the property list and returns its "blkx" entries, in order.
pub fn read_blkx(file: &ImageFile, koly: &Koly) -> Result<Vec<Blkx>> {
    let path = &file.path;
    let xml = file.read_vec(koly.xml_offset, koly.xml_length, MAX_DMG_PLIST_BYTES, "the XML property list")?;
    let bad = |why: String| Error::corrupt(path, format!("the XML property list {why}; the image is corrupt"));
    // The plist crate decodes <data> from base64 itself (bad base64 is a parse error).
    let root = Value::from_reader_xml(std::io::Cursor::new(&xml)).map_err(|e| bad(format!("does not parse: {e}")))?;
    let blkx = root
        .as_dictionary()
        .and_then(|d| d.get("resource-fork"))
        .and_then(Value::as_dictionary)
        .and_then(|d| d.get("blkx"))
        .and_then(Value::as_array)
        .ok_or_else(|| bad("has no resource-fork/blkx array".into()))?;
    let mut out = Vec::with_capacity(blkx.len());
    for (i, entry) in blkx.iter().enumerate() {
        let d = entry.as_dictionary().ok_or_else(|| bad(format!("has blkx entry {i} that is not a dictionary")))?;
        let table = d
            .get("Data")
            .and_then(Value::as_data)
            .ok_or_else(|| bad(format!("has blkx entry {i} without Data")))?
            .to_vec();
        let name =
            ["Name", "CFName"].iter().find_map(|k| d.get(k).and_then(Value::as_string)).unwrap_or("").to_string();
        out.push(Blkx { name, table });
    }
    Ok(out)
}
