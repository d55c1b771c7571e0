//! EWF segment files: how the files of a set are named (.E01 ... .E99, .EAA ... .ZZZ; .s01 for
//! SMART, in the case of the first file's extension), the 13-byte file header, and the chain of
//! section descriptors each file is made of.

use super::adler32;
use crate::error::{Error, Result};
use crate::formats::bytes::{le16, le64};
use crate::formats::Chain;
use crate::limits::MAX_EWF_SECTIONS_PER_SEGMENT;
use crate::source::file::ImageFile;
use std::path::Path;

/// EWF-E01, EWF-S01 and EWF-X segments (one signature for all three).
pub const SIGNATURE: &[u8; 8] = b"EVF\x09\x0d\x0a\xff\x00";
/// EWF-L01: logical evidence (files, not a disk).
pub const LOGICAL_SIGNATURE: &[u8; 8] = b"LVF\x09\x0d\x0a\xff\x00";
/// EWF2 (.Ex01) and its logical form (.Lx01).
pub const EWF2_SIGNATURE: &[u8; 8] = b"EVF2\x0d\x0a\x81\x00";
pub const EWF2_LOGICAL_SIGNATURE: &[u8; 8] = b"LEF2\x0d\x0a\x81\x00";

const FILE_HEADER_BYTES: u64 = 13;
pub const DESCRIPTOR_BYTES: u64 = 76;

/// The file name of segment `number` (1-based) of the set whose first file is `first`, or None
/// if `first` is not named like a first segment or the scheme has no name that far.
pub fn segment_name(first: &Path, number: u32) -> Option<String> {
    let name = first.file_name()?.to_str()?;
    let (stem, ext) = name.rsplit_once('.')?;
    let ext = ext.as_bytes();
    if ext.len() != 3 || &ext[1..] != b"01" || !ext[0].is_ascii_alphabetic() {
        return None;
    }
    let lead = ext[0];
    let new_ext = if number == 0 {
        return None;
    } else if number <= 99 {
        format!("{}{number:02}", lead as char)
    } else {
        // After 99: AA..ZZ under the first letter, then under the letters after it.
        let k = number - 100;
        let a = if lead.is_ascii_uppercase() { b'A' } else { b'a' };
        let first_letter = u32::from(lead) + k / 676;
        if first_letter > u32::from(a + 25) {
            return None;
        }
        let second = a + (k / 26 % 26) as u8;
        let third = a + (k % 26) as u8;
        format!("{}{}{}", first_letter as u8 as char, second as char, third as char)
    };
    Some(format!("{stem}.{new_ext}"))
}

/// The file name of segment `number` (1-based) of the EWF2 set whose first file is `first`
/// (.Ex01 ... .Ex99, then .ExAA ... .ExZZ, .EyAA ... .EzZZ, in the case of the first file's
/// extension), or None past that or if `first` is not named like a first segment.
pub fn ewf2_segment_name(first: &Path, number: u32) -> Option<String> {
    let name = first.file_name()?.to_str()?;
    let (stem, ext) = name.rsplit_once('.')?;
    let ext = ext.as_bytes();
    if ext.len() != 4 || &ext[2..] != b"01" || !ext[0].is_ascii_alphabetic() || !ext[1].is_ascii_alphabetic() {
        return None;
    }
    let (lead, second) = (ext[0] as char, ext[1]);
    if number == 0 {
        return None;
    }
    if number <= 99 {
        return Some(format!("{stem}.{lead}{}{number:02}", second as char));
    }
    let k = number - 100;
    let a = if ext[0].is_ascii_uppercase() { b'A' } else { b'a' };
    let z = if second.is_ascii_uppercase() { b'Z' } else { b'z' };
    let second = u32::from(second) + k / 676;
    if second > u32::from(z) {
        return None;
    }
    let (third, fourth) = (a + (k / 26 % 26) as u8, a + (k % 26) as u8);
    Some(format!("{stem}.{lead}{}{}{}", second as u8 as char, third as char, fourth as char))
}

/// The name of segment `number` of the set whose first file is `first`, by the naming scheme
/// `name`: refused past `max` segments or past the scheme's end (`firsts` says what a first
/// segment's name ends in).
pub fn next_name(
    first: &Path,
    number: u32,
    max: usize,
    name: fn(&Path, u32) -> Option<String>,
    firsts: &str,
) -> Result<String> {
    if number as usize > max {
        return Err(Error::corrupt(
            first,
            format!("the set goes on past {max} segment files; the image is corrupt or hostile"),
        ));
    }
    name(first, number).ok_or_else(|| {
        Error::corrupt(
            first,
            format!(
                "the set continues in segment {number}, but its name cannot be made from this file's name (the first segment must end in {firsts})"
            ),
        )
    })
}

/// An error about segment `index` (from 0) of the set `first`, saying which set it belongs to.
pub fn of_set(e: Error, index: usize, first: &Path) -> Error {
    match index {
        0 => e,
        _ => Error::Image(format!("{e} (segment {} of the set {})", index + 1, first.display())),
    }
}

/// Opens segment `number` of the set whose first file is `first`, named `name`, beside it and
/// confined like it; a missing one is told apart from one that cannot be opened.
pub fn open_segment(chain: &Chain, first: &Path, number: u32, name: &str) -> Result<ImageFile> {
    // Missing is told apart by the open itself (one request for a remote segment).
    chain
        .confine
        .open_if_present(first, Path::new(name), "segment file")?
        .ok_or_else(|| Error::corrupt(first, format!("segment {number} of the set ({name}, beside it) is missing")))
}

/// Checks the 13-byte file header of `file`, which should be segment `number`.
pub fn check_file_header(file: &ImageFile, number: u32) -> Result<()> {
    let mut h = [0u8; FILE_HEADER_BYTES as usize];
    file.read_exact_at(&mut h, 0, "the EWF file header")?;
    if &h[..8] != SIGNATURE {
        return Err(Error::corrupt(
            &file.path,
            format!("does not start with the EWF signature, yet it should be segment {number} of the set"),
        ));
    }
    let stored = u32::from(le16(&h, 9));
    if stored != number {
        let hint = if number == 1 { " (open the set's first segment, .E01 or .s01)" } else { "" };
        return Err(Error::corrupt(
            &file.path,
            format!("its file header says it is segment {stored} of its set, but it should be segment {number}{hint}"),
        ));
    }
    Ok(())
}

/// One section descriptor.
#[derive(Clone, Debug)]
pub struct Section {
    /// Type, as stored ("header", "volume", "sectors", "table", ...).
    pub kind: String,
    /// Offset of the descriptor in the segment file.
    pub start: u64,
    /// Offset of the next descriptor (this one's own offset for "next" and "done").
    pub next: u64,
    /// Size of the section, descriptor included (0 in some writers' "next" and "done").
    pub size: u64,
}

impl Section {
    /// Where the section's data (after the descriptor) starts.
    pub fn data_start(&self) -> u64 {
        self.start + DESCRIPTOR_BYTES
    }

    /// Where the section's data ends: the recorded size, within the next descriptor.
    pub fn end(&self) -> u64 {
        let sized = self.start.saturating_add(self.size);
        if self.next > self.start && (self.size == 0 || sized > self.next) {
            self.next
        } else {
            sized
        }
    }

    /// Bytes of data after the descriptor.
    pub fn data_len(&self) -> u64 {
        self.end().saturating_sub(self.data_start())
    }

    /// The last section of a segment file.
    pub fn is_last(&self) -> bool {
        self.kind == "next" || self.kind == "done"
    }
}

/// Walks the sections of `file` in order, handing each to `visit`, up to the "next" or "done"
/// section that ends it (returned). Each section must lie past the previous one, so the walk
/// ends; a file that stops before its last section is truncated.
pub fn walk(file: &ImageFile, mut visit: impl FnMut(&Section) -> Result<()>) -> Result<Section> {
    let mut at = FILE_HEADER_BYTES;
    for _ in 0..MAX_EWF_SECTIONS_PER_SEGMENT {
        let section = read_descriptor(file, at)?;
        if section.is_last() {
            visit(&section)?;
            return Ok(section);
        }
        if section.next <= at || section.next >= file.size {
            let why = if section.next <= at {
                "which goes backwards; the segment is corrupt".to_string()
            } else {
                format!(
                    "past the end of the file ({} bytes), with no \"next\" or \"done\" section before it; the segment is truncated or corrupt",
                    file.size
                )
            };
            return Err(Error::corrupt(
                &file.path,
                format!(
                    "the \"{}\" section at offset {at} says the next section is at offset {}, {why}",
                    section.kind, section.next
                ),
            ));
        }
        visit(&section)?;
        at = section.next;
    }
    Err(Error::corrupt(
        &file.path,
        format!("has more than {MAX_EWF_SECTIONS_PER_SEGMENT} sections; the segment is corrupt or hostile"),
    ))
}

fn read_descriptor(file: &ImageFile, at: u64) -> Result<Section> {
    let mut d = [0u8; DESCRIPTOR_BYTES as usize];
    file.read_exact_at(&mut d, at, "an EWF section descriptor")?;
    let stored = u32::from_le_bytes(d[72..76].try_into().unwrap_or_default());
    if adler32(&d[..72]) != stored {
        return Err(Error::corrupt(
            &file.path,
            format!("the EWF section descriptor at offset {at} has a bad checksum; the segment is corrupt"),
        ));
    }
    let name_len = d[..16].iter().position(|&b| b == 0).unwrap_or(16);
    let kind = &d[..name_len];
    if kind.is_empty() || !kind.iter().all(|b| b.is_ascii_graphic()) {
        return Err(Error::corrupt(
            &file.path,
            format!("the EWF section descriptor at offset {at} has no readable section type; the segment is corrupt"),
        ));
    }
    Ok(Section { kind: String::from_utf8_lossy(kind).into_owned(), start: at, next: le64(&d, 16), size: le64(&d, 24) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let p = Path::new("/x/disk.E01");
        assert_eq!(segment_name(p, 1).as_deref(), Some("disk.E01"));
        assert_eq!(segment_name(p, 2).as_deref(), Some("disk.E02"));
        assert_eq!(segment_name(p, 99).as_deref(), Some("disk.E99"));
        assert_eq!(segment_name(p, 100).as_deref(), Some("disk.EAA"));
        assert_eq!(segment_name(p, 101).as_deref(), Some("disk.EAB"));
        assert_eq!(segment_name(p, 126).as_deref(), Some("disk.EBA"));
        assert_eq!(segment_name(p, 775).as_deref(), Some("disk.EZZ"));
        assert_eq!(segment_name(p, 776).as_deref(), Some("disk.FAA"));
        assert_eq!(segment_name(p, 99 + 22 * 676).as_deref(), Some("disk.ZZZ"));
        assert_eq!(segment_name(p, 100 + 22 * 676), None);
        assert_eq!(segment_name(Path::new("a.b.s01"), 100).as_deref(), Some("a.b.saa"));
        assert_eq!(segment_name(Path::new("disk.e01"), 3).as_deref(), Some("disk.e03"));
        assert_eq!(segment_name(Path::new("disk.img"), 2), None);
        assert_eq!(segment_name(Path::new("disk.E02"), 2), None);
    }

    #[test]
    fn ewf2_names() {
        let p = Path::new("/x/disk.Ex01");
        assert_eq!(ewf2_segment_name(p, 1).as_deref(), Some("disk.Ex01"));
        assert_eq!(ewf2_segment_name(p, 2).as_deref(), Some("disk.Ex02"));
        assert_eq!(ewf2_segment_name(p, 99).as_deref(), Some("disk.Ex99"));
        assert_eq!(ewf2_segment_name(p, 100).as_deref(), Some("disk.ExAA"));
        assert_eq!(ewf2_segment_name(p, 101).as_deref(), Some("disk.ExAB"));
        assert_eq!(ewf2_segment_name(p, 126).as_deref(), Some("disk.ExBA"));
        assert_eq!(ewf2_segment_name(p, 775).as_deref(), Some("disk.ExZZ"));
        assert_eq!(ewf2_segment_name(p, 776).as_deref(), Some("disk.EyAA"));
        assert_eq!(ewf2_segment_name(p, 99 + 3 * 676).as_deref(), Some("disk.EzZZ"));
        assert_eq!(ewf2_segment_name(p, 100 + 3 * 676), None);
        assert_eq!(ewf2_segment_name(Path::new("a.ex01"), 100).as_deref(), Some("a.exaa"));
        assert_eq!(ewf2_segment_name(Path::new("disk.E01"), 2), None);
        assert_eq!(ewf2_segment_name(Path::new("disk.Ex02"), 2), None);
    }
}
