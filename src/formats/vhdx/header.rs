//! The file type identifier (signature and creator) and the two headers, of which the valid one
//! with the higher sequence number is current.

use super::guid::Guid;
use crate::error::{Error, Result};
use crate::formats::bytes::{le16, le32, le64};
use crate::source::file::ImageFile;

pub const HEADER_OFFSETS: [u64; 2] = [64 << 10, 128 << 10];
const HEADER_BYTES: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub sequence: u64,
    pub file_write_guid: Guid,
    pub data_write_guid: Guid,
    pub log_guid: Guid,
    pub log_version: u16,
    pub log_length: u32,
    pub log_offset: u64,
}

/// The current header and what `info` should say about the other one.
pub struct Headers {
    pub current: Header,
    /// 1 or 2.
    pub current_number: usize,
    /// Why the other header was not used, if it was invalid.
    pub other_problem: Option<String>,
}

/// The creator string of the file type identifier (UTF-16LE, up to 256 units, NUL-terminated).
pub fn read_creator(file: &ImageFile) -> Result<String> {
    let mut id = [0u8; 520];
    file.read_exact_at(&mut id, 0, "the VHDX file type identifier")?;
    if &id[..8] != b"vhdxfile" {
        return Err(Error::corrupt(&file.path, "no \"vhdxfile\" signature at offset 0: not a VHDX image"));
    }
    let units: Vec<u16> =
        id[8..].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
    Ok(String::from_utf16_lossy(&units))
}

/// CRC-32C of `buf` with its checksum field (bytes 4..8) taken as zero, as every VHDX
/// structure with a checksum computes it.
pub fn checksum(buf: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&buf[..4]);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc32c::crc32c_append(crc, &buf[8..])
}

fn parse_header(buf: &[u8]) -> std::result::Result<Header, String> {
    if &buf[..4] != b"head" {
        return Err("no \"head\" signature".into());
    }
    let stored = le32(buf, 4);
    let computed = checksum(buf);
    if stored != computed {
        return Err(format!("bad CRC-32C (stored {stored:#010x}, computed {computed:#010x})"));
    }
    let version = le16(buf, 66);
    if version != 1 {
        return Err(format!("version {version}, only 1 exists"));
    }
    Ok(Header {
        sequence: le64(buf, 8),
        file_write_guid: Guid::read(&buf[16..]),
        data_write_guid: Guid::read(&buf[32..]),
        log_guid: Guid::read(&buf[48..]),
        log_version: le16(buf, 64),
        log_length: le32(buf, 68),
        log_offset: le64(buf, 72),
    })
}

fn read_one(file: &ImageFile, offset: u64) -> std::result::Result<Header, String> {
    if file.size < offset + HEADER_BYTES as u64 {
        return Err(format!("the file ends at {} bytes, before it", file.size));
    }
    let mut buf = vec![0u8; HEADER_BYTES];
    file.read_exact_at(&mut buf, offset, "a VHDX header").map_err(|e| e.to_string())?;
    parse_header(&buf)
}

/// Reads both headers and picks the current one.
pub fn read_headers(file: &ImageFile) -> Result<Headers> {
    let h1 = read_one(file, HEADER_OFFSETS[0]);
    let h2 = read_one(file, HEADER_OFFSETS[1]);
    let (current, current_number, other_problem) = match (h1, h2) {
        (Ok(a), Ok(b)) => {
            if a.sequence > b.sequence {
                (a, 1, None)
            } else if b.sequence > a.sequence {
                (b, 2, None)
            } else if a == b {
                // Disk2VHD writes two identical headers with the same sequence number.
                (a, 1, None)
            } else {
                return Err(Error::corrupt(
                    &file.path,
                    format!(
                        "both VHDX headers have sequence number {} but differ, so neither is known to be current; the image is corrupt",
                        a.sequence
                    ),
                ));
            }
        }
        (Ok(a), Err(e)) => (a, 1, Some(format!("header 2 (at 128 KiB) is invalid: {e}"))),
        (Err(e), Ok(b)) => (b, 2, Some(format!("header 1 (at 64 KiB) is invalid: {e}"))),
        (Err(e1), Err(e2)) => {
            return Err(Error::corrupt(
                &file.path,
                format!(
                    "neither VHDX header is valid (header 1 at 64 KiB: {e1}; header 2 at 128 KiB: {e2}); the image is corrupt or truncated"
                ),
            ))
        }
    };
    Ok(Headers { current, current_number, other_problem })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::file::test_file;

    /// A VHDX header (little-endian) with sequence number `seq`, a 1 MiB log at 1 MiB, and its
    /// CRC-32C; padded to its 4 KiB.
    fn header(seq: u8) -> Vec<u8> {
        let mut h = vec![
            b'h', b'e', b'a', b'd', //                            0: signature "head"
            0x00, 0x00, 0x00, 0x00, //                            4: checksum (set below)
            seq, 0, 0, 0, 0, 0, 0, 0, //                          8: sequence number
            0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, //   16: file write GUID
            0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
            0x22, //   32: data write GUID
            0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, //   48: log GUID: zero (log empty)
            0x00, 0x00, //                                       64: log version 0
            0x01, 0x00, //                                       66: version 1
            0x00, 0x00, 0x10, 0x00, //                           68: log length 1 MiB
            0, 0, 0x10, 0, 0, 0, 0, 0, //                        72: log offset 1 MiB
        ];
        h.resize(HEADER_BYTES, 0); //                            80: reserved
        fix_checksum(&mut h);
        h
    }

    fn fix_checksum(h: &mut [u8]) {
        let crc = checksum(h);
        h[4..8].copy_from_slice(&crc.to_le_bytes());
    }

    /// A file with the identifier, then `h1` at 64 KiB and `h2` at 128 KiB.
    fn file_with(h1: &[u8], h2: &[u8]) -> Vec<u8> {
        let mut b = b"vhdxfile".to_vec(); //                      0: signature "vhdxfile"
        b.extend("vdmount".encode_utf16().flat_map(u16::to_le_bytes)); // 8: creator, UTF-16LE
        b.resize(64 << 10, 0);
        b.extend(h1);
        b.resize(128 << 10, 0);
        b.extend(h2);
        b
    }

    fn read(bytes: &[u8]) -> Result<Headers> {
        let (_tmp, file) = test_file(bytes);
        read_headers(&file)
    }

    fn refusal(bytes: &[u8]) -> String {
        crate::source::file::refused(read(bytes))
    }

    #[test]
    fn header_fields() {
        let h = parse_header(&header(7)).unwrap();
        assert_eq!(h.sequence, 7);
        assert_eq!(h.file_write_guid, Guid([0x11; 16]));
        assert_eq!(h.data_write_guid, Guid([0x22; 16]));
        assert!(h.log_guid.is_zero());
        assert_eq!(h.log_version, 0);
        assert_eq!((h.log_length, h.log_offset), (1 << 20, 1 << 20));
    }

    #[test]
    fn creator() {
        let (_tmp, file) = test_file(&file_with(&header(1), &header(2)));
        assert_eq!(read_creator(&file).unwrap(), "vdmount");
        let (_tmp, file) = test_file(b"vhdxfile");
        assert!(read_creator(&file).is_err()); // too short for the identifier
        let mut b = file_with(&header(1), &header(2));
        b[7] = b'F'; //                                           0: signature "vhdxfilF"
        let (_tmp, file) = test_file(&b);
        let Err(e) = read_creator(&file) else { panic!("signature accepted") };
        assert!(e.to_string().contains("no \"vhdxfile\" signature at offset 0"));
    }

    #[test]
    fn refuses_signature_checksum_and_version() {
        let mut h = header(1);
        h[..4].copy_from_slice(b"HEAD"); //                       0: signature "HEAD"
        fix_checksum(&mut h);
        assert_eq!(parse_header(&h).unwrap_err(), "no \"head\" signature");
        let mut h = header(1);
        h[8] = 2; //                                              8: sequence changed, checksum not
        assert!(parse_header(&h).unwrap_err().starts_with("bad CRC-32C (stored "));
        let mut h = header(1);
        h[66] = 2; //                                            66: version 2
        fix_checksum(&mut h);
        assert_eq!(parse_header(&h).unwrap_err(), "version 2, only 1 exists");
    }

    #[test]
    fn the_valid_header_with_the_higher_sequence_is_current() {
        let h = read(&file_with(&header(1), &header(2))).unwrap();
        assert_eq!((h.current_number, h.current.sequence, h.other_problem), (2, 2, None));
        let h = read(&file_with(&header(3), &header(2))).unwrap();
        assert_eq!((h.current_number, h.current.sequence), (1, 3));
        let mut bad = header(9);
        bad[66] = 2; //                                          66: version 2 (checksum good)
        fix_checksum(&mut bad);
        let h = read(&file_with(&header(1), &bad)).unwrap();
        assert_eq!(h.current_number, 1);
        assert_eq!(h.other_problem.as_deref(), Some("header 2 (at 128 KiB) is invalid: version 2, only 1 exists"));
        // Disk2VHD writes two identical headers.
        assert_eq!(read(&file_with(&header(4), &header(4))).unwrap().current_number, 1);
    }

    #[test]
    fn refuses_two_bad_headers_or_two_different_ones_of_one_sequence() {
        let e = refusal(&file_with(&[0; 4096], &header(1)[..4095]));
        assert!(e.contains("neither VHDX header is valid (header 1 at 64 KiB: no \"head\" signature; header 2 at 128 KiB: the file ends"), "{e}");
        let mut other = header(5);
        other[72] = 1; //                                        72: log offset differs
        fix_checksum(&mut other);
        let e = refusal(&file_with(&header(5), &other));
        assert!(e.contains("both VHDX headers have sequence number 5 but differ"), "{e}");
    }
}
