//! What an EWF2 set says about its media: the device information and case data sections
//! (compressed UTF-16 text: "1", "main", a line of tab-separated tags, a line of values) give
//! the sector count, sector size and chunk size, and the case metadata `info` shows; the MD5 and
//! SHA1 hash sections give the stored hashes.

use super::adler32;
use super::meta::{date_text, Hashes};
use super::v2_sections::{Section, MD5_HASH};
use crate::error::{Error, Result};
use crate::formats::bytes::le32;
use crate::limits::MAX_EWF_HEADER_BYTES;
use crate::source::file::ImageFile;
use std::io::Read;

/// The tags and values of a device information or case data section, in order. The text is
/// compressed with the file header's method; told by its magic, so a writer that deflates its
/// metadata in a bzip2 set is read too.
pub fn read_object(file: &ImageFile, s: &Section) -> Result<Vec<(String, String)>> {
    let data = s.read_data(file, MAX_EWF_HEADER_BYTES)?;
    let what = format!("the EWF2 {} section at offset {}", s.name(), s.at);
    // One byte past the limit tells too long from exactly at it.
    let mut text = Vec::new();
    let limit = MAX_EWF_HEADER_BYTES + 1;
    let read = if data.starts_with(b"BZh") {
        bzip2::read::BzDecoder::new(&data[..]).take(limit).read_to_end(&mut text)
    } else {
        flate2::read::ZlibDecoder::new(&data[..]).take(limit).read_to_end(&mut text)
    };
    if let Err(e) = read {
        return Err(Error::corrupt(&file.path, format!("{what} does not decompress: {e}; the image is corrupt")));
    }
    if text.len() as u64 > MAX_EWF_HEADER_BYTES {
        return Err(Error::Limit {
            path: file.path.clone(),
            field: format!("decompressed size of {what}"),
            value: text.len() as u64,
            limit: MAX_EWF_HEADER_BYTES,
        });
    }
    Ok(parse_object(&utf16_text(&text)))
}

/// UTF-16 text, little-endian unless its byte-order mark says otherwise.
fn utf16_text(b: &[u8]) -> String {
    let big = b.starts_with(&[0xfe, 0xff]);
    let b = if big || b.starts_with(&[0xff, 0xfe]) { &b[2..] } else { b };
    let units =
        b.chunks_exact(2)
            .map(|c| if big { u16::from_be_bytes([c[0], c[1]]) } else { u16::from_le_bytes([c[0], c[1]]) });
    String::from_utf16_lossy(&units.collect::<Vec<u16>>())
}

/// The (tag, value) pairs of the "main" object of a serialized object string.
fn parse_object(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.split('\n').map(|l| l.trim_end_matches('\r')).collect();
    let Some(main) = lines.iter().position(|l| *l == "main") else {
        return Vec::new();
    };
    let (Some(tags), Some(values)) = (lines.get(main + 1), lines.get(main + 2)) else {
        return Vec::new();
    };
    tags.split('\t').zip(values.split('\t')).map(|(t, v)| (t.to_string(), v.to_string())).collect()
}

/// The value of `tag` in `pairs`, if set.
pub fn value<'a>(pairs: &'a [(String, String)], tag: &str) -> Option<&'a str> {
    pairs.iter().find(|(t, v)| t == tag && !v.trim().is_empty()).map(|(_, v)| v.trim())
}

/// The number `tag` holds in `pairs`: None if it is not set, an error if it is not a number.
pub fn number(file: &ImageFile, pairs: &[(String, String)], tag: &str, what: &str) -> Result<Option<u64>> {
    match value(pairs, tag) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            Error::corrupt(
                &file.path,
                format!("the EWF2 {what} section gives \"{v}\" as \"{tag}\", not a number; the image is corrupt"),
            )
        }),
    }
}

/// What `info` shows of the device information and case data, in a fixed order.
pub fn shown(device: &[(String, String)], case: &[(String, String)]) -> Vec<(String, String)> {
    const CASE: [(&str, &str); 9] = [
        ("cn", "case number"),
        ("en", "evidence number"),
        ("nm", "description"),
        ("ex", "examiner"),
        ("nt", "notes"),
        ("tt", "acquisition date"),
        ("at", "system date"),
        ("av", "acquired with version"),
        ("os", "acquired on"),
    ];
    const DEVICE: [(&str, &str); 3] = [("md", "model"), ("sn", "serial number"), ("lb", "label")];
    let mut out = Vec::new();
    for (tag, label) in CASE {
        if let Some(v) = value(case, tag) {
            let v = if tag == "tt" || tag == "at" { date_text(v) } else { v.to_string() };
            out.push((label.to_string(), v));
        }
    }
    for (tag, label) in DEVICE {
        if let Some(v) = value(device, tag) {
            out.push((label.to_string(), v.to_string()));
        }
    }
    if let Some(t) = value(device, "dt") {
        let kind = match t {
            "a" => "RAM disk",
            "c" => "optical",
            "f" => "fixed",
            "l" => "logical",
            "m" => "memory",
            "p" => "PALM",
            "r" => "removable",
            _ => "unknown",
        };
        out.push(("media type".into(), format!("{kind} ({t})")));
    }
    out
}

/// Reads an MD5 or SHA1 hash section (the hash, then its Adler-32) into `hashes`; all-zero
/// means unset.
pub fn read_hash(file: &ImageFile, s: &Section, hashes: &mut Hashes) -> Result<()> {
    let len = if s.kind == MD5_HASH { 16 } else { 20 };
    if s.data_size < len + 4 {
        return Err(Error::corrupt(
            &file.path,
            format!("the EWF2 {} section at offset {} is too short to hold it; the image is corrupt", s.name(), s.at),
        ));
    }
    let d = s.read_data(file, 64)?;
    let l = len as usize;
    if adler32(&d[..l]) != le32(&d, l) {
        return Err(Error::corrupt(
            &file.path,
            format!("the EWF2 {} section at offset {} has a bad checksum; the image is corrupt", s.name(), s.at),
        ));
    }
    if d[..l].iter().any(|&b| b != 0) {
        if s.kind == MD5_HASH {
            hashes.md5 = d[..16].try_into().ok();
        } else {
            hashes.sha1 = d[..20].try_into().ok();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_string() {
        let s = "1\nmain\nsn\tmd\tts\tbp\nX1\tdisk\t2048\t512\n\n";
        let mut b = vec![0xff, 0xfe];
        b.extend(s.encode_utf16().flat_map(u16::to_le_bytes));
        let pairs = parse_object(&utf16_text(&b));
        assert_eq!(value(&pairs, "ts"), Some("2048"));
        assert_eq!(value(&pairs, "md"), Some("disk"));
        assert_eq!(value(&pairs, "xx"), None);
        assert!(parse_object("garbage").is_empty());
    }
}
