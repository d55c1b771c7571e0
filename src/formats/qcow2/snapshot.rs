//! The qcow2 internal snapshot table: listed by `info`, and `--snapshot` reads one of them.

use crate::error::{Error, Result};
use crate::formats::bytes::{be16, be32, be64};
use crate::limits;
use crate::source::file::ImageFile;

/// Fixed part of a snapshot table entry.
const ENTRY_HEADER_LEN: usize = 40;
/// qemu's limit on a snapshot's extra data.
const MAX_EXTRA_DATA: u64 = 1024;

pub struct Snapshot {
    pub id: String,
    pub name: String,
    pub l1_table_offset: u64,
    pub l1_size: u32,
    pub date_sec: u32,
    /// Virtual disk size when the snapshot was taken, if the entry records it.
    pub disk_size: Option<u64>,
    pub vm_state_size: u64,
}

/// Reads `count` snapshot entries from `offset`.
pub fn read_table(file: &ImageFile, offset: u64, count: u32, cluster_size: u64) -> Result<Vec<Snapshot>> {
    let path = &file.path;
    limits::check(path, "number of qcow2 snapshots", u64::from(count), limits::MAX_SNAPSHOTS)?;
    if count == 0 {
        return Ok(Vec::new());
    }
    if !offset.is_multiple_of(cluster_size) {
        return Err(Error::corrupt(
            path,
            format!("the snapshot table offset {offset} is not cluster aligned; the image is corrupt"),
        ));
    }
    let mut list = Vec::with_capacity(count as usize);
    let mut at = offset;
    for index in 0..count {
        let what = format!("snapshot table entry {index}");
        let mut head = [0u8; ENTRY_HEADER_LEN];
        file.read_exact_at(&mut head, at, &what)?;
        let id_len = u64::from(be16(&head, 12));
        let name_len = u64::from(be16(&head, 14));
        let extra_len = u64::from(be32(&head, 36));
        limits::check(path, &format!("extra data size of {what}"), extra_len, MAX_EXTRA_DATA)?;
        let rest_len = extra_len + id_len + name_len;
        let rest = file.read_vec(at + ENTRY_HEADER_LEN as u64, rest_len, rest_len, &what)?;
        let (extra, strings) = rest.split_at(extra_len as usize);
        let (id, name) = strings.split_at(id_len as usize);
        let extra_u64 = |field: usize| extra.get(field..field + 8).map(|b| be64(b, 0));
        list.push(Snapshot {
            id: String::from_utf8_lossy(id).into_owned(),
            name: String::from_utf8_lossy(name).into_owned(),
            l1_table_offset: be64(&head, 0),
            l1_size: be32(&head, 8),
            date_sec: be32(&head, 16),
            disk_size: extra_u64(8),
            vm_state_size: extra_u64(0).unwrap_or(u64::from(be32(&head, 32))),
        });
        // Entries are padded to 8 bytes. The offsets stay far below u64::MAX: each entry adds at
        // most 40 + 1024 + 2 * 65535 bytes, 65536 times.
        at += (ENTRY_HEADER_LEN as u64 + rest_len).div_ceil(8) * 8;
    }
    Ok(list)
}

/// The snapshot `wanted` names: by id first, then by name, as qemu-img looks them up.
pub fn find<'a>(path: &std::path::Path, list: &'a [Snapshot], wanted: &str) -> Result<&'a Snapshot> {
    if let Some(s) = list.iter().find(|s| s.id == wanted).or_else(|| list.iter().find(|s| s.name == wanted)) {
        return Ok(s);
    }
    let have = if list.is_empty() {
        "the image has no internal snapshots".to_string()
    } else {
        let names: Vec<String> = list.iter().map(|s| format!("{} (id {})", s.name, s.id)).collect();
        format!("the image has: {}", names.join(", "))
    };
    Err(Error::Usage(format!("{}: no internal snapshot named or numbered '{wanted}'; {have}", path.display())))
}

/// One line describing `s` for `info`.
pub fn describe(s: &Snapshot, current_size: u64) -> String {
    format!(
        "id {}, name '{}', disk size {} bytes, taken {} UTC, vm state {} bytes",
        s.id,
        s.name,
        s.disk_size.unwrap_or(current_size),
        crate::formats::utc::utc_date(u64::from(s.date_sec)),
        s.vm_state_size
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::file::test_file;

    /// Two snapshot table entries (big-endian), each padded to 8 bytes: "1" named "base" with
    /// 16 bytes of extra data (qemu 2.x and later), "2" named "x" with none (older qemu).
    fn table() -> Vec<u8> {
        let mut b = vec![
            0, 0, 0, 0, 0, 0x05, 0, 0, //                         0: l1_table_offset 0x50000
            0x00, 0x00, 0x00, 0x02, //                            8: l1_size 2
            0x00, 0x01, //                                       12: id_str_size 1
            0x00, 0x04, //                                       14: name_size 4
            0x65, 0x53, 0xf1, 0x00, //                           16: date_sec 1700000000
            0x00, 0x00, 0x00, 0x00, //                           20: date_nsec 0
            0, 0, 0, 0, 0, 0, 0, 0, //                           24: vm_clock_nsec 0
            0x00, 0x00, 0x00, 0x07, //                           32: vm_state_size 7 (32-bit)
            0x00, 0x00, 0x00, 0x10, //                           36: extra_data_size 16
            0, 0, 0, 0, 0, 0, 0x10, 0, //                        40: extra: vm_state_size_large 4096
            0, 0, 0, 0, 0x40, 0, 0, 0,    //                        48: extra: disk_size 1 GiB
            b'1', //                                             56: id "1"
            b'b', b'a', b's', b'e', //                           57: name "base"
            0, 0, 0, //                                          61: padding to 64
            0, 0, 0, 0, 0, 0x06, 0, 0, //                        64: l1_table_offset 0x60000
            0x00, 0x00, 0x00, 0x01, //                           72: l1_size 1
            0x00, 0x01, //                                       76: id_str_size 1
            0x00, 0x01, //                                       78: name_size 1
            0x00, 0x00, 0x00, 0x00, //                           80: date_sec 0
            0x00, 0x00, 0x00, 0x00, //                           84: date_nsec 0
            0, 0, 0, 0, 0, 0, 0, 0, //                           88: vm_clock_nsec 0
            0x00, 0x00, 0x00, 0x09, //                           96: vm_state_size 9
            0x00, 0x00, 0x00, 0x00, //                          100: extra_data_size 0
            b'2', //                                            104: id "2"
            b'x', //                                            105: name "x"
        ];
        b.resize(112, 0); //                                    106: padding
        b
    }

    /// `table()` at offset 512 of the test file (a 512-byte cluster).
    fn read(table: &[u8], count: u32, offset: u64) -> Result<Vec<Snapshot>> {
        let mut b = vec![0u8; 512];
        b.extend(table);
        let (_tmp, file) = test_file(&b);
        read_table(&file, offset, count, 512)
    }

    fn refusal(table: &[u8], count: u32, offset: u64) -> String {
        crate::source::file::refused(read(table, count, offset))
    }

    #[test]
    fn entry_fields() {
        let list = read(&table(), 2, 512).unwrap();
        let s = &list[0];
        assert_eq!((s.id.as_str(), s.name.as_str()), ("1", "base"));
        assert_eq!((s.l1_table_offset, s.l1_size), (0x50000, 2));
        assert_eq!(s.date_sec, 1_700_000_000);
        assert_eq!(s.disk_size, Some(1 << 30));
        assert_eq!(s.vm_state_size, 4096);
        let s = &list[1];
        assert_eq!((s.id.as_str(), s.name.as_str()), ("2", "x"));
        assert_eq!((s.l1_table_offset, s.l1_size), (0x60000, 1));
        assert_eq!((s.disk_size, s.vm_state_size), (None, 9));
        assert_eq!(
            describe(s, 42),
            "id 2, name 'x', disk size 42 bytes, taken 1970-01-01 00:00:00 UTC, vm state 9 bytes"
        );
    }

    #[test]
    fn refuses_too_many_snapshots_or_an_unaligned_table() {
        assert!(
            refusal(&table(), 65537, 512).contains("number of qcow2 snapshots is 65537, more than the limit of 65536")
        );
        assert!(refusal(&table(), 2, 520).contains("the snapshot table offset 520 is not cluster aligned"));
    }

    #[test]
    fn refuses_too_much_extra_data_or_an_entry_past_the_end() {
        let mut t = table();
        t[36..40].copy_from_slice(&1025u32.to_be_bytes()); //   36: extra_data_size 1025
        assert!(refusal(&t, 2, 512)
            .contains("extra data size of snapshot table entry 0 is 1025, more than the limit of 1024"));
        let e = refusal(&table(), 3, 512); // a third entry, past the end of the file
        assert!(e.contains("snapshot table entry 2 at offset 624 (40 bytes) lies past the end"), "{e}");
        let mut t = table();
        t[78..80].copy_from_slice(&100u16.to_be_bytes()); //    78: entry 1's name_size 100
        let e = refusal(&t, 2, 512);
        assert!(e.contains("snapshot table entry 1 at offset 616 (101 bytes) lies past the end"), "{e}");
    }
}
