//! Finding a differencing VHD's parent: its parent locators, its parent name, and the check
//! that the file found is the parent the child was made from (unique id).

use super::dynamic::DynamicHeader;
use crate::error::{Error, Result};
use crate::formats::bytes::{be32, be64};
use crate::formats::chain::{first_present, open_backing_with};
use crate::formats::{parent_id, Chain, DiskImage, Format, LayerId, OpenOptions};
use crate::limits::{self, MAX_PARENT_LOCATOR_BYTES};
use crate::source::confine::resolve_beside;
use crate::source::file::ImageFile;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const LOCATORS_AT: usize = 576;
const LOCATOR_SIZE: usize = 24;
const LOCATOR_COUNT: usize = 8;
const UNICODE_NAME_AT: usize = 64;
const UNICODE_NAME_LEN: usize = 512;

/// The parent as opened, and what was found on the way (for `info`).
pub struct Parent {
    pub image: Arc<dyn DiskImage>,
    pub details: Vec<(String, String)>,
}

/// A path to the parent recorded in the child, as text with '/' separators.
struct Recorded {
    source: String,
    path: String,
}

/// Opens the parent of the differencing child `file`.
pub fn open_parent(file: &ImageFile, header: &DynamicHeader, chain: &Chain, opts: &OpenOptions) -> Result<Parent> {
    let mut details = Vec::new();
    let recorded = recorded_paths(file, header, &mut details);
    let candidates = candidates(&recorded);
    let tried: Vec<String> = candidates.iter().map(|c| resolve_beside(&file.path, c).display().to_string()).collect();
    let Some((name, opened)) = first_present(&file.path, &candidates, chain) else {
        let what = if recorded.is_empty() {
            "records no parent path (no usable parent locator or parent name)".to_string()
        } else {
            let r: Vec<String> = recorded.iter().map(|r| format!("{} \"{}\"", r.source, r.path)).collect();
            format!("records its parent as {}", r.join(", "))
        };
        return Err(Error::corrupt(
            &file.path,
            format!(
                "this differencing VHD {what}, but no such file was found (tried: {}); put the parent next to the child under its recorded name",
                if tried.is_empty() { "nothing".to_string() } else { tried.join(", ") }
            ),
        ));
    };
    let path = resolve_beside(&file.path, name);
    let image = open_backing_with(&file.path, name, || opened, Some(Format::Vhd), chain, opts)?;
    check_unique_id(file, header, &path, image.as_ref(), opts, &mut details)?;
    details.insert(0, ("parent".into(), path.display().to_string()));
    Ok(Parent { image, details })
}

/// The parent's footer unique id must be the one the child recorded, or the child's sectors
/// would be laid over the wrong disk.
fn check_unique_id(
    child: &ImageFile,
    header: &DynamicHeader,
    parent_path: &Path,
    parent: &dyn DiskImage,
    opts: &OpenOptions,
    details: &mut Vec<(String, String)>,
) -> Result<()> {
    // A layer `info` shows as not opened has no id to check: reading it fails anyway.
    let LayerId::VhdUniqueId(parent_id) = parent.layer_id() else {
        return Ok(());
    };
    details.push(("parent unique id (recorded in child)".into(), uuid(&header.parent_unique_id)));
    details.push(("parent unique id (in parent)".into(), uuid(&parent_id)));
    if parent_id == header.parent_unique_id {
        return Ok(());
    }
    let problem = format!(
        "has unique id {}, but this differencing VHD was made from a parent with unique id {}: the parent was replaced or modified",
        uuid(&parent_id),
        uuid(&header.parent_unique_id)
    );
    parent_id::mismatch(&child.path, parent_path, &problem, opts, details)
}

/// The names to try, in order: relative locator paths, then the recorded file names in the
/// child's folder (as libvhdi does, for chains copied elsewhere), then absolute locator paths.
fn candidates(recorded: &[Recorded]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut add = |p: PathBuf| {
        // "./x" is "x"; dropping the "." keeps the paths shown to the user plain.
        let p: PathBuf = p.components().filter(|c| *c != std::path::Component::CurDir).collect();
        if !p.as_os_str().is_empty() && !out.contains(&p) {
            out.push(p);
        }
    };
    for r in recorded.iter().filter(|r| !is_absolute(&r.path)) {
        add(PathBuf::from(&r.path));
    }
    for r in recorded {
        if let Some(base) = r.path.rsplit('/').next().filter(|b| !b.is_empty() && *b != "." && *b != "..") {
            add(PathBuf::from(base));
        }
    }
    // A Windows absolute path ("C:/...") means nothing here; a Unix one (MacX) might.
    for r in recorded.iter().filter(|r| r.path.starts_with('/')) {
        add(PathBuf::from(&r.path));
    }
    out
}

fn is_absolute(p: &str) -> bool {
    let b = p.as_bytes();
    p.starts_with('/') || (b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic())
}

/// The parent paths the child records: its parent locators (header order), then its parent
/// unicode name. Unreadable locators are skipped and noted.
fn recorded_paths(file: &ImageFile, header: &DynamicHeader, details: &mut Vec<(String, String)>) -> Vec<Recorded> {
    let mut out = Vec::new();
    for i in 0..LOCATOR_COUNT {
        let at = LOCATORS_AT + i * LOCATOR_SIZE;
        let entry = &header.bytes[at..at + LOCATOR_SIZE];
        let code: [u8; 4] = [entry[0], entry[1], entry[2], entry[3]];
        if code == [0; 4] {
            continue;
        }
        let code_name = String::from_utf8_lossy(&code).trim_end_matches(['\0', ' ']).to_string();
        let source = format!("locator {i} ({code_name})");
        match read_locator(file, &code, be32(entry, 8), be64(entry, 16)) {
            Ok(Some(path)) => {
                details.push((source.clone(), path.clone()));
                out.push(Recorded { source, path });
            }
            Ok(None) => details.push((source, "skipped (not a path vdmount can follow)".into())),
            Err(e) => details.push((source, format!("unreadable: {e}"))),
        }
    }
    let name = &header.bytes[UNICODE_NAME_AT..UNICODE_NAME_AT + UNICODE_NAME_LEN];
    let units: Vec<u16> =
        name.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
    let name = String::from_utf16_lossy(&units).replace('\\', "/");
    if !name.is_empty() {
        details.push(("parent unicode name".into(), name.clone()));
        out.push(Recorded { source: "parent unicode name".into(), path: name });
    }
    out
}

/// The path one locator holds, or None for platforms without a followable path ("Mac " aliases).
fn read_locator(file: &ImageFile, code: &[u8; 4], length: u32, offset: u64) -> Result<Option<String>> {
    let length =
        limits::check(&file.path, "the size of a VHD parent locator", u64::from(length), MAX_PARENT_LOCATOR_BYTES)?;
    let read = || file.read_vec(offset, length, MAX_PARENT_LOCATOR_BYTES, "a VHD parent locator");
    let text = match code {
        b"W2ru" | b"W2ku" => {
            let bytes = read()?;
            let units: Vec<u16> = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
            String::from_utf16_lossy(&units)
        }
        // Deprecated ANSI paths; the code page is unknown, so non-ASCII bytes stay lossy.
        b"Wi2r" | b"Wi2k" => String::from_utf8_lossy(&read()?).into_owned(),
        b"MacX" => {
            let text = String::from_utf8_lossy(&read()?).into_owned();
            let text = text.trim_end_matches('\0');
            let path = text.strip_prefix("file://localhost").or_else(|| text.strip_prefix("file://")).unwrap_or(text);
            percent_decode(path)
        }
        _ => return Ok(None),
    };
    let text = text.trim_end_matches('\0').replace('\\', "/");
    Ok((!text.is_empty()).then_some(text))
}

/// Decodes %XX escapes of a file:// URL path.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex =
            b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A unique id as the usual GUID text. VHD stores the 16 bytes as they are; they are shown in
/// that order, in hex groups.
pub fn uuid(b: &[u8; 16]) -> String {
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::vhd::dynamic::HEADER_SIZE;
    use crate::source::file::test_file;

    /// One parent locator entry (big-endian): platform code, data space, data length,
    /// reserved, data offset.
    fn locator(code: &[u8; 4], length: u32, offset: u64) -> Vec<u8> {
        let mut e = code.to_vec(); //                             0: platform code
        e.extend(512u32.to_be_bytes()); //                        4: platform data space
        e.extend(length.to_be_bytes()); //                        8: platform data length
        e.extend([0; 4]); //                                     12: reserved
        e.extend(offset.to_be_bytes()); //                       16: platform data offset
        e
    }

    /// A dynamic disk header's parent fields (the rest zero) and the file it lies in: the
    /// locators' data follows the header.
    fn child() -> (Vec<u8>, DynamicHeader) {
        let mut h = vec![0u8; 64];
        h.extend("base.vhd".encode_utf16().flat_map(u16::to_be_bytes)); // 64: parent unicode name
        h.resize(LOCATORS_AT, 0);
        let w2ru: Vec<u8> = ".\\sub\\base.vhd".encode_utf16().flat_map(u16::to_le_bytes).collect();
        let wi2k = b"C:\\vms\\base.vhd";
        let macx = b"file://localhost/srv/a%20b.vhd\0";
        h.extend(locator(b"W2ru", w2ru.len() as u32, 1024)); //                576: locator 0
        h.extend(locator(b"Wi2k", wi2k.len() as u32, 1024 + 512)); //          600: locator 1
        h.extend(locator(b"Mac ", 16, 1024 + 1024)); //                        624: locator 2
        h.extend(locator(b"MacX", macx.len() as u32, 1024 + 1024)); //         648: locator 3
        h.extend(locator(b"W2ku", 65 << 10, 1024)); //                         672: locator 4
        h.extend(locator(b"W2ku", 16, 1 << 20)); //                            696: locator 5
        h.resize(HEADER_SIZE, 0); //                                  720: locators 6, 7 unused
        let mut file = h.clone();
        file.extend(&w2ru); //                                  1024: locator 0's data
        file.resize(1024 + 512, 0);
        file.extend(wi2k); //                                   1536: locator 1's data
        file.resize(2048, 0);
        file.extend(macx); //                                   2048: locator 3's data
        let header = DynamicHeader {
            bytes: Box::new(h.try_into().unwrap()),
            table_offset: 0,
            max_table_entries: 0,
            block_size: 2 << 20,
            parent_unique_id: [0; 16],
            parent_timestamp: 0,
            checksum_state: "good".into(),
        };
        (file, header)
    }

    #[test]
    fn parent_locators_and_name() {
        let (bytes, header) = child();
        let (_tmp, file) = test_file(&bytes);
        let mut details = Vec::new();
        let recorded = recorded_paths(&file, &header, &mut details);
        let paths: Vec<(&str, &str)> = recorded.iter().map(|r| (r.source.as_str(), r.path.as_str())).collect();
        assert_eq!(
            paths,
            [
                ("locator 0 (W2ru)", "./sub/base.vhd"),
                ("locator 1 (Wi2k)", "C:/vms/base.vhd"),
                ("locator 3 (MacX)", "/srv/a b.vhd"),
                ("parent unicode name", "base.vhd"),
            ]
        );
        assert_eq!(details[2], ("locator 2 (Mac)".to_string(), "skipped (not a path vdmount can follow)".to_string()));
        assert!(
            details[4].1.contains("unreadable: ")
                && details[4].1.contains("the size of a VHD parent locator is 66560, more than the limit of 65536"),
            "{:?}",
            details[4]
        );
        assert!(
            details[5].1.contains("a VHD parent locator at offset 1048576 (16 bytes) lies past the end"),
            "{:?}",
            details[5]
        );
        assert_eq!(
            candidates(&recorded),
            [
                PathBuf::from("sub/base.vhd"),
                PathBuf::from("base.vhd"),
                PathBuf::from("a b.vhd"),
                PathBuf::from("/srv/a b.vhd")
            ]
        );
    }

    #[test]
    fn candidates_prefer_relative_then_basename() {
        let r = |p: &str| Recorded { source: String::new(), path: p.into() };
        let c = candidates(&[r("C:/vms/base.vhd"), r("./base.vhd"), r("/srv/x/other.vhd")]);
        assert_eq!(c, vec![PathBuf::from("base.vhd"), PathBuf::from("other.vhd"), PathBuf::from("/srv/x/other.vhd")]);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("/a%20b/c%2"), "/a b/c%2");
    }
}
