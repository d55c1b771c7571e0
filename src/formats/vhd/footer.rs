//! The VHD footer: 512 big-endian bytes ("conectix") at the end of every VHD, with a copy at
//! offset 0 in dynamic and differencing disks. Which copy to trust, and the virtual size rule.

use crate::error::{Error, Result};
use crate::formats::bytes::{be16, be32, be64};
use crate::source::file::ImageFile;

pub const FOOTER_SIZE: usize = 512;
const COOKIE: &[u8; 8] = b"conectix";
const CHECKSUM_AT: usize = 64;
/// The largest CHS geometry (65535 cylinders, 16 heads, 255 sectors): writers store it when the
/// disk is too big for CHS, so it says nothing about the size.
const MAX_GEOMETRY_SECTORS: u64 = 65535 * 16 * 255;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskType {
    Fixed,
    Dynamic,
    Differencing,
}

impl DiskType {
    pub fn name(self) -> &'static str {
        match self {
            DiskType::Fixed => "fixed",
            DiskType::Dynamic => "dynamic",
            DiskType::Differencing => "differencing",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Footer {
    pub data_offset: u64,
    pub timestamp: u32,
    pub creator_app: [u8; 4],
    pub creator_major: u16,
    pub creator_minor: u16,
    pub creator_os: [u8; 4],
    pub original_size: u64,
    pub current_size: u64,
    pub cylinders: u16,
    pub heads: u8,
    pub sectors_per_track: u8,
    pub disk_type: DiskType,
    pub unique_id: [u8; 16],
    pub saved_state: bool,
}

/// One's complement of the byte sum of `bytes`, the 4 bytes at `checksum_at` counted as zero
/// (the VHD checksum of both the footer and the dynamic header).
pub fn checksum(bytes: &[u8], checksum_at: usize) -> u32 {
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !(checksum_at..checksum_at + 4).contains(i))
        .fold(0u32, |sum, (_, &b)| sum.wrapping_add(u32::from(b)));
    !sum
}

impl Footer {
    /// Parses a footer whose cookie and checksum have been checked.
    fn parse(b: &[u8; FOOTER_SIZE], path: &std::path::Path, where_: &str) -> Result<Footer> {
        let disk_type = match be32(b, 60) {
            2 => DiskType::Fixed,
            3 => DiskType::Dynamic,
            4 => DiskType::Differencing,
            t => {
                return Err(Error::unsupported(
                    path,
                    format!("the VHD footer ({where_}) gives disk type {t}; only 2 (fixed), 3 (dynamic) and 4 (differencing) exist"),
                ))
            }
        };
        let mut f = Footer {
            data_offset: be64(b, 16),
            timestamp: be32(b, 24),
            creator_app: [0; 4],
            creator_major: be16(b, 32),
            creator_minor: be16(b, 34),
            creator_os: [0; 4],
            original_size: be64(b, 40),
            current_size: be64(b, 48),
            cylinders: be16(b, 56),
            heads: b[58],
            sectors_per_track: b[59],
            disk_type,
            unique_id: [0; 16],
            saved_state: b[84] != 0,
        };
        f.creator_app.copy_from_slice(&b[28..32]);
        f.creator_os.copy_from_slice(&b[36..40]);
        f.unique_id.copy_from_slice(&b[68..84]);
        Ok(f)
    }

    pub fn chs_size(&self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors_per_track) * 512
    }

    /// The virtual size and the rule that gave it, as qemu 10.0 (block/vpc.c,
    /// vpc_ignore_current_size) decides: Virtual PC ("vpc ") and old qemu ("qemu") sized the
    /// disk by its CHS geometry, so for them the size is cylinders*heads*sectors*512, unless the
    /// geometry is the maximum one (then current_size, to avoid truncation). Every other creator
    /// ("win " Hyper-V, "qem2" qemu with force_size, "d2v " Disk2vhd, "tap\0" XenServer blktap,
    /// "CTXS" XenConverter, "wa\0\0" Azure, FreeBSD mkimg, unknown ones) gets current_size.
    pub fn virtual_size(&self) -> (u64, &'static str) {
        let chs_creator = &self.creator_app == b"vpc " || &self.creator_app == b"qemu";
        let max_geometry = self.chs_size() / 512 == MAX_GEOMETRY_SECTORS;
        if chs_creator && !max_geometry {
            (self.chs_size(), "CHS geometry (creator \"vpc \" or \"qemu\", as qemu reads it)")
        } else if chs_creator {
            (self.current_size, "current_size (CHS geometry is the maximum, so it is not the size)")
        } else {
            (self.current_size, "current_size (creator is not \"vpc \" or \"qemu\", as qemu reads it)")
        }
    }
}

/// The footer chosen, where its copies are, and what was found about them (for `info`).
pub struct Located {
    pub footer: Footer,
    /// Offset of the copy at the end of the file (size - 512, or size - 511 for old writers),
    /// if there is one: where a fixed disk's data ends.
    pub tail_offset: Option<u64>,
    pub state: String,
}

/// What one copy of the footer turned out to be.
enum FooterCopy {
    Missing,
    Good(Box<[u8; FOOTER_SIZE]>),
    BadChecksum { expected: u32, found: u32 },
}

impl FooterCopy {
    fn read(file: &ImageFile, offset: u64, len: usize, what: &str) -> Result<FooterCopy> {
        let mut b = [0u8; FOOTER_SIZE];
        // A 511-byte footer lacks the last reserved byte, which reads as zero.
        file.read_exact_at(&mut b[..len], offset, what)?;
        if &b[..8] != COOKIE {
            return Ok(FooterCopy::Missing);
        }
        let expected = checksum(&b, CHECKSUM_AT);
        let found = be32(&b, CHECKSUM_AT);
        if expected != found {
            return Ok(FooterCopy::BadChecksum { expected, found });
        }
        Ok(FooterCopy::Good(Box::new(b)))
    }

    fn describe(&self) -> String {
        match self {
            FooterCopy::Missing => "absent".into(),
            FooterCopy::Good(_) => "checksum good".into(),
            FooterCopy::BadChecksum { expected, found } => {
                format!("checksum BAD (expected {expected:#010x} from its bytes, found {found:#010x})")
            }
        }
    }
}

/// Finds the footer copies and picks the one to trust.
///
/// Policy: the copy at offset 0 (dynamic and differencing disks) is used when its checksum is
/// good, as qemu does; if it is bad, the copy at the end of the file is used instead, and `info`
/// says so. If no copy has a good checksum the image is refused, naming the file and the
/// checksums: a footer whose checksum does not match was altered after it was written (the
/// third-party case vhd-dfvfs-badhdrcksum), and a forensic reader must not guess which of its
/// fields are still right. qemu refuses such images too.
pub fn locate(file: &ImageFile) -> Result<Located> {
    if file.size < FOOTER_SIZE as u64 {
        return Err(Error::corrupt(
            &file.path,
            format!("the file is {} bytes, too short to hold a 512-byte VHD footer", file.size),
        ));
    }
    let head = FooterCopy::read(file, 0, FOOTER_SIZE, "the VHD footer copy at offset 0")?;
    let head_present = !matches!(head, FooterCopy::Missing);

    // The end copy, at size-512 (or size-511 for some old writers); when the file is a single
    // footer, that is the head copy itself, not a second one.
    let mut tail = FooterCopy::Missing;
    let mut tail_offset = None;
    for len in [FOOTER_SIZE, FOOTER_SIZE - 1] {
        let offset = file.size - len as u64;
        if head_present && offset < FOOTER_SIZE as u64 {
            continue;
        }
        let copy = FooterCopy::read(file, offset, len, "the VHD footer at the end of the file")?;
        if !matches!(copy, FooterCopy::Missing) {
            tail = copy;
            tail_offset = Some(offset);
            break;
        }
    }

    let state = format!("head copy {}; end copy {}", head.describe(), tail.describe());
    let (bytes, where_, note) = match (&head, &tail) {
        (FooterCopy::Good(h), FooterCopy::Good(t)) if h != t => (h, "offset 0", "; the copies differ, the head copy is used"),
        (FooterCopy::Good(h), _) => (h, "offset 0", ""),
        (FooterCopy::BadChecksum { .. }, FooterCopy::Good(t)) => (t, "end of file", "; the head copy is bad, the end copy is used"),
        (FooterCopy::Missing, FooterCopy::Good(t)) => (t, "end of file", ""),
        (FooterCopy::Missing, FooterCopy::Missing) => {
            return Err(Error::corrupt(
                &file.path,
                "no VHD footer (\"conectix\") at offset 0 or in the last 512 bytes; this is not a VHD image",
            ))
        }
        _ => {
            return Err(Error::corrupt(
                &file.path,
                format!(
                    "no VHD footer copy has a good checksum ({state}); the footer was altered or damaged, so its sizes and offsets cannot be trusted; vdmount does not guess them (get an undamaged copy of the image)"
                ),
            ))
        }
    };
    let footer = Footer::parse(bytes, &file.path, where_)?;
    Ok(Located { footer, tail_offset, state: format!("{state}{note}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::file::test_file;

    /// A VHD footer (big-endian) of a 1 MiB fixed disk made by Hyper-V, with its checksum.
    fn footer() -> Vec<u8> {
        let mut f = vec![
            b'c', b'o', b'n', b'e', b'c', b't', b'i', b'x', //    0: cookie "conectix"
            0x00, 0x00, 0x00, 0x02, //                            8: features: reserved bit
            0x00, 0x01, 0x00, 0x00, //                           12: file format version 1.0
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, //   16: data offset: none (fixed)
            0x12, 0x34, 0x56, 0x78, //                           24: timestamp 0x12345678
            b'w', b'i', b'n', b' ', //                           28: creator application "win "
            0x00, 0x0a, //                                       32: creator version major 10
            0x00, 0x00, //                                       34: creator version minor 0
            b'W', b'i', b'2', b'k', //                           36: creator host OS "Wi2k"
            0, 0, 0, 0, 0, 0x10, 0x00, 0x00, //                  40: original size 1 MiB
            0, 0, 0, 0, 0, 0x10, 0x00, 0x00, //                  48: current size 1 MiB
            0x00, 0x20, //                                       56: cylinders 32
            0x04, //                                             58: heads 4
            0x11, //                                             59: sectors per track 17
            0x00, 0x00, 0x00, 0x02, //                           60: disk type 2 (fixed)
            0x00, 0x00, 0x00, 0x00, //                           64: checksum (set below)
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, //   68: unique id
            0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10,
            0x00, //                                             84: saved state 0
        ];
        f.resize(FOOTER_SIZE, 0); //                             85: reserved
        fix_checksum(&mut f);
        f
    }

    fn fix_checksum(f: &mut [u8]) {
        let sum = checksum(f, CHECKSUM_AT);
        f[CHECKSUM_AT..CHECKSUM_AT + 4].copy_from_slice(&sum.to_be_bytes());
    }

    /// A fixed disk: 1 MiB of data, then the footer.
    fn fixed(footer: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 1 << 20];
        b.extend(footer);
        b
    }

    fn locate_bytes(bytes: &[u8]) -> Result<Located> {
        let (_tmp, file) = test_file(bytes);
        locate(&file)
    }

    fn refusal(bytes: &[u8]) -> String {
        crate::source::file::refused(locate_bytes(bytes))
    }

    #[test]
    fn footer_fields() {
        let l = locate_bytes(&fixed(&footer())).unwrap();
        let f = &l.footer;
        assert_eq!(f.data_offset, u64::MAX);
        assert_eq!(f.timestamp, 0x1234_5678);
        assert_eq!(&f.creator_app, b"win ");
        assert_eq!((f.creator_major, f.creator_minor), (10, 0));
        assert_eq!(&f.creator_os, b"Wi2k");
        assert_eq!((f.original_size, f.current_size), (1 << 20, 1 << 20));
        assert_eq!((f.cylinders, f.heads, f.sectors_per_track), (32, 4, 17));
        assert_eq!(f.disk_type, DiskType::Fixed);
        assert_eq!(f.unique_id, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
        assert!(!f.saved_state);
        assert_eq!(f.virtual_size().0, 1 << 20);
        assert_eq!(l.tail_offset, Some(1 << 20));
        assert_eq!(l.state, "head copy absent; end copy checksum good");
    }

    #[test]
    fn virtual_pc_disks_are_sized_by_their_geometry() {
        let mut f = footer();
        f[28..32].copy_from_slice(b"vpc "); //                   28: creator application "vpc "
        fix_checksum(&mut f);
        let l = locate_bytes(&fixed(&f)).unwrap();
        assert_eq!(l.footer.virtual_size().0, 32 * 4 * 17 * 512);
    }

    #[test]
    fn a_damaged_head_copy_gives_way_to_the_end_copy() {
        let mut head = footer();
        head[48..56].copy_from_slice(&(2u64 << 20).to_be_bytes()); // 48: current size changed, checksum not
        let mut b = head;
        b.extend(fixed(&footer()));
        let l = locate_bytes(&b).unwrap();
        assert_eq!(l.footer.current_size, 1 << 20);
        assert!(l.state.contains("head copy checksum BAD"), "{}", l.state);
        assert!(l.state.ends_with("the head copy is bad, the end copy is used"), "{}", l.state);
    }

    #[test]
    fn refuses_no_cookie_bad_checksum_and_short_file() {
        let mut f = footer();
        f[..8].copy_from_slice(b"conectiX"); //                   0: cookie "conectiX"
        assert!(refusal(&fixed(&f)).contains("no VHD footer (\"conectix\") at offset 0 or in the last 512 bytes"));
        let mut f = footer();
        f[64] ^= 1; //                                           64: checksum off by one bit
        let e = refusal(&fixed(&f));
        assert!(e.contains("no VHD footer copy has a good checksum") && e.contains("checksum BAD"), "{e}");
        assert!(refusal(&footer()[..511]).contains("the file is 511 bytes, too short"));
    }

    #[test]
    fn refuses_unknown_disk_types() {
        let mut f = footer();
        f[63] = 5; //                                            60: disk type 5
        fix_checksum(&mut f);
        assert!(refusal(&fixed(&f)).contains("gives disk type 5"));
    }

    #[test]
    fn checksum_skips_its_own_field() {
        let mut b = [0u8; 512];
        b[0] = 1;
        b[64..68].copy_from_slice(&[0xff; 4]);
        assert_eq!(checksum(&b, 64), !1u32);
    }
}
