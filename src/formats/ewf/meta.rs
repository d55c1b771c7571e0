//! What an EWF set says about its media: the volume section (sizes), the header and header2
//! sections (case metadata, zlib-compressed text), and the stored hashes (hash, digest, xhash).

use super::adler32;
use super::segment::Section;
use crate::error::{Error, Result};
use crate::formats::bytes::{le32, le64};
use crate::limits::{self, MAX_EWF_CHUNK_BYTES, MAX_EWF_HEADER_BYTES, MAX_VIRTUAL_SIZE};
use crate::source::file::ImageFile;

/// The volume (or disk) section: how the media is cut into chunks.
#[derive(Clone, Debug)]
pub struct Volume {
    pub chunk_count: u64,
    pub sectors_per_chunk: u64,
    pub bytes_per_sector: u64,
    pub sector_count: u64,
    /// "SMART" for the 94-byte layout, else the EnCase one.
    pub smart: bool,
    pub media_type: u8,
    pub media_flags: u8,
    pub compression_level: u8,
    pub set_id: [u8; 16],
}

impl Volume {
    pub fn read(file: &ImageFile, s: &Section) -> Result<Volume> {
        let len = s.data_len();
        let (smart, want) = if len >= 1052 { (false, 1052) } else { (true, 94) };
        let d = file.read_vec(s.data_start(), want, 1052, "the EWF volume section")?;
        let sum_at = want as usize - 4;
        if adler32(&d[..sum_at]) != le32(&d, sum_at) {
            return Err(Error::corrupt(&file.path, "the EWF volume section has a bad checksum; the image is corrupt"));
        }
        let v = Volume {
            chunk_count: u64::from(le32(&d, 4)),
            sectors_per_chunk: u64::from(le32(&d, 8)),
            bytes_per_sector: u64::from(le32(&d, 12)),
            sector_count: if smart { u64::from(le32(&d, 16)) } else { le64(&d, 16) },
            smart,
            media_type: if smart { 0 } else { d[0] },
            media_flags: if smart { 0 } else { d[36] },
            compression_level: if smart { 0 } else { d[52] },
            set_id: if smart { [0; 16] } else { d[64..80].try_into().unwrap_or_default() },
        };
        v.check(file)?;
        Ok(v)
    }

    fn check(&self, file: &ImageFile) -> Result<()> {
        let path = &file.path;
        if self.bytes_per_sector == 0 || self.sectors_per_chunk == 0 {
            return Err(Error::corrupt(
                path,
                format!(
                    "the EWF volume section says {} bytes per sector and {} sectors per chunk; the image is corrupt",
                    self.bytes_per_sector, self.sectors_per_chunk
                ),
            ));
        }
        limits::check(path, "EWF chunk size", self.chunk_size(), MAX_EWF_CHUNK_BYTES)?;
        let size = self.sector_count.saturating_mul(self.bytes_per_sector);
        limits::check(path, "EWF media size", size, MAX_VIRTUAL_SIZE)?;
        let needed = self.sector_count.div_ceil(self.sectors_per_chunk);
        if self.chunk_count < needed {
            return Err(Error::corrupt(
                path,
                format!(
                    "the EWF volume section says {} chunks, but {} sectors of {} per chunk need {needed}; the image is corrupt",
                    self.chunk_count, self.sector_count, self.sectors_per_chunk
                ),
            ));
        }
        Ok(())
    }

    pub fn chunk_size(&self) -> u64 {
        self.sectors_per_chunk * self.bytes_per_sector
    }

    /// Bytes of media: what the virtual disk holds.
    pub fn media_size(&self) -> u64 {
        self.sector_count * self.bytes_per_sector
    }
}

/// The media hashes the acquiring tool stored.
#[derive(Clone, Debug, Default)]
pub struct Hashes {
    pub md5: Option<[u8; 16]>,
    pub sha1: Option<[u8; 20]>,
}

impl Hashes {
    /// From a "hash" section (MD5) or a "digest" section (MD5 and SHA1); all-zero means unset.
    pub fn read_section(&mut self, file: &ImageFile, s: &Section) -> Result<()> {
        let digest = s.kind == "digest";
        let want = if digest { 80 } else { 36 };
        if s.data_len() < want {
            return Ok(()); // too short to hold hashes: nothing stored
        }
        let d = file.read_vec(s.data_start(), want, 80, "the EWF hash section")?;
        let sum_at = want as usize - 4;
        if adler32(&d[..sum_at]) != le32(&d, sum_at) {
            return Err(Error::corrupt(
                &file.path,
                format!(
                    "the EWF \"{}\" section at offset {} has a bad checksum; the image is corrupt",
                    s.kind, s.start
                ),
            ));
        }
        let md5: [u8; 16] = d[..16].try_into().unwrap_or_default();
        if md5 != [0; 16] {
            self.md5 = Some(md5);
        }
        if digest {
            let sha1: [u8; 20] = d[16..36].try_into().unwrap_or_default();
            if sha1 != [0; 20] {
                self.sha1 = Some(sha1);
            }
        }
        Ok(())
    }

    /// From an EWF-X "xhash" section: XML with <MD5> and <SHA1> elements in hex.
    pub fn read_xhash(&mut self, file: &ImageFile, s: &Section) -> Result<()> {
        let text = String::from_utf8_lossy(&inflate_section(file, s)?).into_owned();
        if self.md5.is_none() {
            self.md5 = xml_hex(&text, "md5").and_then(|v| v.try_into().ok());
        }
        if self.sha1.is_none() {
            self.sha1 = xml_hex(&text, "sha1").and_then(|v| v.try_into().ok());
        }
        Ok(())
    }
}

/// The hex bytes of the first `<tag>` element of `xml` (tag case ignored).
fn xml_hex(xml: &str, tag: &str) -> Option<Vec<u8>> {
    let lower = xml.to_ascii_lowercase();
    let start = lower.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = start + lower[start..].find('<')?;
    hex_decode(xml[start..end].trim())
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The zlib-compressed data of a header, header2, xheader or xhash section, inflated.
pub fn inflate_section(file: &ImageFile, s: &Section) -> Result<Vec<u8>> {
    let what = format!("the EWF \"{}\" section", s.kind);
    let input = file.read_vec(s.data_start(), s.data_len(), MAX_EWF_HEADER_BYTES, &what)?;
    let mut out = Vec::new();
    let mut d = flate2::Decompress::new(true);
    // One byte of room past the limit tells too long from exactly at it.
    out.reserve(MAX_EWF_HEADER_BYTES as usize + 1);
    let status = d.decompress_vec(&input, &mut out, flate2::FlushDecompress::Finish);
    match status {
        Ok(_) if out.len() as u64 > MAX_EWF_HEADER_BYTES => Err(Error::Limit {
            path: file.path.clone(),
            field: format!("inflated size of {what}"),
            value: out.len() as u64,
            limit: MAX_EWF_HEADER_BYTES,
        }),
        Ok(_) => Ok(out),
        Err(e) => Err(Error::corrupt(&file.path, format!("{what} at offset {} is not valid zlib data: {e}", s.start))),
    }
}

/// The case metadata of a header (ASCII) or header2 (UTF-16LE) section, as (name, value) pairs
/// in the order the names below list them.
pub fn case_metadata(text: &[u8]) -> Vec<(String, String)> {
    let text = if text.starts_with(&[0xff, 0xfe]) {
        let units: Vec<u16> = text[2..].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        String::from_utf16_lossy(&units)
    } else {
        String::from_utf8_lossy(text).into_owned()
    };
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    let Some(main) = lines.iter().position(|l| *l == "main") else {
        return Vec::new();
    };
    let (Some(names), Some(values)) = (lines.get(main + 1), lines.get(main + 2)) else {
        return Vec::new();
    };
    let pairs: Vec<(&str, &str)> = names.split('\t').zip(values.split('\t')).collect();
    const SHOWN: [(&str, &str); 11] = [
        ("c", "case number"),
        ("n", "evidence number"),
        ("a", "description"),
        ("e", "examiner"),
        ("t", "notes"),
        ("md", "model"),
        ("sn", "serial number"),
        ("m", "acquisition date"),
        ("u", "system date"),
        ("av", "acquired with version"),
        ("ov", "acquired on"),
    ];
    let mut out = Vec::new();
    for (id, label) in SHOWN {
        if let Some((_, v)) = pairs.iter().find(|(n, v)| *n == id && !v.trim().is_empty()) {
            let v = v.trim();
            let shown = match id {
                "m" | "u" => date_text(v),
                _ => v.to_string(),
            };
            out.push((label.to_string(), shown));
        }
    }
    out
}

/// header2 dates are POSIX times, header dates "2002 3 4 10 19 59": both shown as
/// "2002-03-04 10:19:59" (header2's in UTC, header's in the acquiring machine's time).
pub fn date_text(v: &str) -> String {
    let parts: Vec<&str> = v.split_whitespace().collect();
    if parts.len() == 6 {
        let n: Vec<u32> = parts.iter().filter_map(|p| p.parse().ok()).collect();
        if n.len() == 6 {
            return format!("{}-{:02}-{:02} {:02}:{:02}:{:02}", n[0], n[1], n[2], n[3], n[4], n[5]);
        }
    }
    match v.parse::<i64>() {
        Ok(t) if t >= 0 => format!("{} UTC", crate::formats::utc::utc_date(t as u64)),
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text() {
        let t = b"1\nmain\nc\tn\ta\te\tt\tav\tov\tm\tu\tp\ncase 7\t\t\tjo\t\t20140813\tLinux\t2026 12 3 10 51 15\t2026 12 3 10 51 15\t0\n\n";
        let m = case_metadata(t);
        assert_eq!(m[0], ("case number".to_string(), "case 7".to_string()));
        assert_eq!(m[1], ("examiner".to_string(), "jo".to_string()));
        assert_eq!(m[2], ("acquisition date".to_string(), "2026-12-03 10:51:15".to_string()));
        assert_eq!(date_text("1142163845"), "2006-03-12 11:44:05 UTC");
        assert!(case_metadata(b"garbage").is_empty());
    }

    #[test]
    fn xhash() {
        let x = "<xhash>\n\t<MD5>e40241392c86e1798c00855f9b751db9</MD5>\n</xhash>";
        assert_eq!(hex(&xml_hex(x, "md5").unwrap()), "e40241392c86e1798c00855f9b751db9");
        assert_eq!(xml_hex(x, "sha1"), None);
    }
}
