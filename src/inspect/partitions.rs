//! The partition table of a virtual disk (GPT, or MBR with its extended partitions) and the
//! filesystem label of each partition where that is cheap to read: what `vdmount` prints once
//! a device is up, and how it knows which /dev/abuseNpM nodes to wait for.

use crate::error::Result;
use crate::formats::DiskImage;

#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    /// M of /dev/abuseNpM, numbered as the kernel numbers them.
    pub number: u32,
    /// Start and size in bytes.
    pub start: u64,
    pub size: u64,
    /// Partition type, as a short name where known ("linux", "efi", "ntfs/fat"...).
    pub kind: String,
    /// Filesystem found at the start of the partition, and its label.
    pub filesystem: Option<String>,
    pub label: Option<String>,
}

/// GPT and MBR are read in 512-byte sectors, or 4096 on 4Kn disks.
pub fn read_table(disk: &dyn DiskImage) -> Result<Vec<Partition>> {
    let ss = disk.logical_sector_size() as u64;
    let mut mbr = vec![0u8; ss as usize];
    disk.read_at(&mut mbr, 0)?;
    if mbr[510] != 0x55 || mbr[511] != 0xAA {
        return Ok(Vec::new());
    }
    let entries: Vec<&[u8]> = (0..4).map(|i| &mbr[446 + i * 16..462 + i * 16]).collect();
    let mut parts = if entries.iter().any(|e| e[4] == 0xEE) { gpt(disk, ss)? } else { mbr_parts(disk, ss, &entries)? };
    for p in &mut parts {
        let (fs, label) = probe_filesystem(disk, p.start);
        p.filesystem = fs;
        p.label = label;
    }
    Ok(parts)
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn gpt(disk: &dyn DiskImage, ss: u64) -> Result<Vec<Partition>> {
    let mut hdr = vec![0u8; ss as usize];
    disk.read_at(&mut hdr, ss)?;
    if &hdr[0..8] != b"EFI PART" {
        return Ok(Vec::new());
    }
    let table_lba = le64(&hdr, 72);
    let count = le32(&hdr, 80).min(256) as u64; // the kernel reads at most 256 entries too
    let esize = le32(&hdr, 84) as u64;
    if !(128..=4096).contains(&esize) {
        return Ok(Vec::new());
    }
    let mut table = vec![0u8; (count * esize) as usize];
    disk.read_at(&mut table, table_lba.saturating_mul(ss))?;
    let mut parts = Vec::new();
    for i in 0..count {
        let e = &table[(i * esize) as usize..((i + 1) * esize) as usize];
        if e[0..16].iter().all(|&b| b == 0) {
            continue;
        }
        let (first, last) = (le64(e, 32), le64(e, 40));
        // Entries come from the image: an entry ending before it starts, or past any disk, is
        // skipped rather than trusted.
        let Some(sectors) = last.checked_sub(first).and_then(|n| n.checked_add(1)) else { continue };
        let name: Vec<u16> =
            e[56..128].chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&c| c != 0).collect();
        let name = String::from_utf16_lossy(&name);
        parts.push(Partition {
            number: i as u32 + 1,
            start: first.saturating_mul(ss),
            size: sectors.saturating_mul(ss),
            kind: format!(
                "{}{}",
                gpt_type(&e[0..16]),
                if name.is_empty() { String::new() } else { format!(" \"{name}\"") }
            ),
            filesystem: None,
            label: None,
        });
    }
    Ok(parts)
}

fn gpt_type(guid: &[u8]) -> &'static str {
    // Mixed-endian GUIDs as stored on disk, first 4 bytes are enough to tell the common ones.
    match le32(guid, 0) {
        0x0FC63DAF => "linux",
        0xC12A7328 => "efi",
        0xEBD0A0A2 => "windows data",
        0xE3C9E316 => "windows reserved",
        0xDE94BBA4 => "windows recovery",
        0x0657FD6D => "linux swap",
        0xE6D6D379 => "linux lvm",
        0xA19D880F => "linux raid",
        0x4F68BCE3 => "linux root (x86-64)",
        0x933AC7E1 => "linux home",
        0x21686148 => "bios boot",
        _ => "other",
    }
}

fn mbr_type(t: u8) -> &'static str {
    match t {
        0x83 => "linux",
        0x82 => "linux swap",
        0x8e => "linux lvm",
        0x07 => "ntfs/exfat",
        0x0b | 0x0c => "fat32",
        0x04 | 0x06 | 0x0e => "fat16",
        0x01 => "fat12",
        0xef => "efi",
        0xfd => "linux raid",
        _ => "other",
    }
}

fn mbr_parts(disk: &dyn DiskImage, ss: u64, entries: &[&[u8]]) -> Result<Vec<Partition>> {
    let mut parts = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let (kind, start, len) = (e[4], le32(e, 8) as u64, le32(e, 12) as u64);
        if kind == 0 || len == 0 {
            continue;
        }
        if matches!(kind, 0x05 | 0x0f | 0x85) {
            // Extended: the kernel shows it as a 1 KiB partition and numbers logicals from 5.
            parts.push(Partition {
                number: i as u32 + 1,
                start: start * ss,
                size: 1024.min(len * ss),
                kind: "extended".into(),
                filesystem: None,
                label: None,
            });
            logical(disk, ss, start, &mut parts)?;
        } else {
            parts.push(Partition {
                number: i as u32 + 1,
                start: start * ss,
                size: len * ss,
                kind: mbr_type(kind).into(),
                filesystem: None,
                label: None,
            });
        }
    }
    Ok(parts)
}

/// Walks the chain of extended boot records (bounded, as a hostile image may loop it).
fn logical(disk: &dyn DiskImage, ss: u64, ext_start: u64, parts: &mut Vec<Partition>) -> Result<()> {
    let mut ebr_lba = ext_start;
    let mut number = 5;
    let mut buf = vec![0u8; ss as usize];
    for _ in 0..64 {
        disk.read_at(&mut buf, ebr_lba.saturating_mul(ss))?;
        if buf[510] != 0x55 || buf[511] != 0xAA {
            break;
        }
        let (e1, e2) = (&buf[446..462], &buf[462..478]);
        if e1[4] != 0 && le32(e1, 12) != 0 {
            let start = ebr_lba + le32(e1, 8) as u64;
            parts.push(Partition {
                number,
                start: start * ss,
                size: le32(e1, 12) as u64 * ss,
                kind: mbr_type(e1[4]).into(),
                filesystem: None,
                label: None,
            });
            number += 1;
        }
        if e2[4] == 0 || le32(e2, 8) == 0 {
            break;
        }
        ebr_lba = ext_start + le32(e2, 8) as u64;
    }
    Ok(())
}

fn text(b: &[u8]) -> Option<String> {
    let s: String = String::from_utf8_lossy(b).trim_end_matches(['\0', ' ']).to_string();
    (!s.is_empty()).then_some(s)
}

/// The filesystem at `start` and its label, for the common ones (and the encrypted volumes a
/// mount must not try: "crypto_LUKS", "BitLocker"); errors mean "don't know".
pub fn probe_filesystem(disk: &dyn DiskImage, start: u64) -> (Option<String>, Option<String>) {
    let mut b = vec![0u8; 68 * 1024];
    if disk.read_at(&mut b, start).is_err() {
        return (None, None);
    }
    let sb = &b[1024..2048];
    if sb[56] == 0x53 && sb[57] == 0xEF {
        let incompat = le32(sb, 96);
        let fs = if incompat & 0x40 != 0 || incompat & 0x80 != 0 {
            "ext4"
        } else if le32(sb, 92) & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        };
        return (Some(fs.into()), text(&sb[120..136]));
    }
    if &b[0..4] == b"XFSB" {
        return (Some("xfs".into()), text(&b[108..120]));
    }
    if &b[0x10040..0x10048] == b"_BHRfS_M" {
        return (Some("btrfs".into()), text(&b[0x1012b..0x1012b + 256]));
    }
    if &b[3..11] == b"NTFS    " {
        return (Some("ntfs".into()), None);
    }
    if &b[3..11] == b"EXFAT   " {
        return (Some("exfat".into()), None);
    }
    if &b[82..87] == b"FAT32" {
        return (Some("vfat".into()), text(&b[71..82]).filter(|l| l != "NO NAME"));
    }
    if &b[54..59] == b"FAT16" || &b[54..59] == b"FAT12" {
        return (Some("vfat".into()), text(&b[43..54]).filter(|l| l != "NO NAME"));
    }
    if &b[4096 - 10..4096] == b"SWAPSPACE2" {
        return (Some("swap".into()), text(&b[1024 + 28..1024 + 44]));
    }
    if &b[0..6] == b"LUKS\xba\xbe" {
        return (Some("crypto_LUKS".into()), None);
    }
    if &b[3..11] == b"-FVE-FS-" {
        return (Some("BitLocker".into()), None);
    }
    if &b[512..520] == b"LABELONE" {
        return (Some("LVM2_member".into()), None);
    }
    (None, None)
}
