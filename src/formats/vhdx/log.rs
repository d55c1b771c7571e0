//! The VHDX log (MS-VHDX 2.3): a circular buffer of entries, each a header ("loge"),
//! descriptors ("desc" for a 4 KiB sector, "zero" for a zeroed range) and data sectors
//! ("data"). If the current header names a log, the active sequence (the valid chain of
//! entries, tail to head, whose head has the highest sequence number) must be replayed before
//! any metadata is read. vdmount replays it into an in-memory `Overlay`.

use super::guid::Guid;
use super::header::{checksum, Header};
use super::overlay::Overlay;
use crate::error::{Error, Result};
use crate::formats::bytes::{le32, le64};
use crate::limits::{self, MemoryBudget, MAX_LOG_BYTES};
use crate::source::file::ImageFile;
use std::borrow::Cow;
use std::collections::HashMap;

/// The log is written in 4 KiB sectors.
const LOG_SECTOR: u64 = 4096;
const ENTRY_HEADER_BYTES: usize = 64;
const DESCRIPTOR_BYTES: usize = 32;

/// What replaying the log did, for `info`.
pub struct Replay {
    pub overlay: Overlay,
    pub entries: usize,
    pub first_sequence: u64,
    pub last_sequence: u64,
    /// The size the head entry says the file must have.
    pub last_file_offset: u64,
}

/// The outcome of looking at the log.
pub enum LogState {
    /// The header names no log.
    Clean,
    /// A log is named but holds no valid sequence: there is nothing to replay.
    NoActiveSequence,
    Replayed(Replay),
}

/// A valid entry found in the log.
struct Entry {
    pos: u64,
    sequence: u64,
    length: u64,
    tail: u64,
    flushed_file_offset: u64,
    last_file_offset: u64,
}

enum Descriptor {
    Zero { offset: u64, length: u64 },
    Data { offset: u64, leading: [u8; 8], trailing: [u8; 4] },
}

/// Reads the log the current header names and replays its active sequence.
pub fn replay(file: &ImageFile, header: &Header, budget: &MemoryBudget) -> Result<LogState> {
    if header.log_guid.is_zero() || header.log_length == 0 {
        return Ok(LogState::Clean);
    }
    let path = &file.path;
    if header.log_version != 0 {
        return Err(Error::unsupported(
            path,
            format!("the VHDX log has version {}; only version 0 exists, so it cannot be replayed", header.log_version),
        ));
    }
    let length = header.log_length as u64;
    if !length.is_multiple_of(LOG_SECTOR)
        || header.log_offset < (1 << 20)
        || !header.log_offset.is_multiple_of(LOG_SECTOR)
    {
        return Err(Error::corrupt(
            path,
            format!(
                "the VHDX log is placed at offset {} with length {}; it must start at or after 1 MiB and both must be multiples of 4 KiB; the image is corrupt",
                header.log_offset, length
            ),
        ));
    }
    if header.log_offset.checked_add(length).is_none_or(|end| end > file.size) {
        return Err(Error::corrupt(
            path,
            format!(
                "the VHDX log (offset {}, {length} bytes) lies past the end of the file ({} bytes) and must be replayed; the image is truncated or corrupt",
                header.log_offset, file.size
            ),
        ));
    }
    // The log, then at most as much again for the replayed sectors kept in memory.
    limits::check(path, "length of the VHDX log", length, MAX_LOG_BYTES)?;
    budget.take(path, "replaying the VHDX log", length * 2)?;
    let log = file.read_vec(header.log_offset, length, MAX_LOG_BYTES, "the VHDX log")?;
    let reader = LogReader { log: &log, guid: header.log_guid };

    // Each position is tried once; a valid entry is skipped over whole, since no valid
    // entry holds another one's header at a sector boundary. The checksum budget keeps a
    // hostile log full of near-valid entries from costing quadratic time.
    let mut budget = 4 * length + (64 << 20);
    let mut entries = Vec::new();
    let mut pos = 0;
    while pos < length {
        match reader.entry_at(pos, &mut budget).map_err(|e| e.into_error(path))? {
            Some(e) => {
                pos += e.length;
                entries.push(e);
            }
            None => pos += LOG_SECTOR,
        }
    }
    let Some(sequence) = active_sequence(&entries, length).map_err(|e| e.into_error(path))? else {
        return Ok(LogState::NoActiveSequence);
    };

    let mut overlay = Overlay::default();
    for e in &sequence {
        if e.flushed_file_offset > file.size {
            return Err(Error::corrupt(
                path,
                format!(
                    "VHDX log entry {} says the file had been written up to {} bytes, but it has {}: the file is truncated",
                    e.sequence, e.flushed_file_offset, file.size
                ),
            ));
        }
        apply_entry(&reader, e, &mut overlay, path)?;
    }
    let (first, head) = (sequence[0], sequence[sequence.len() - 1]);
    Ok(LogState::Replayed(Replay {
        overlay,
        entries: sequence.len(),
        first_sequence: first.sequence,
        last_sequence: head.sequence,
        last_file_offset: head.last_file_offset,
    }))
}

/// Problems found while scanning, turned into errors naming the file by the caller.
enum LogError {
    Limit(&'static str, u64, u64),
}

impl LogError {
    fn into_error(self, path: &std::path::Path) -> Error {
        match self {
            LogError::Limit(field, value, limit) => {
                Error::Limit { path: path.to_path_buf(), field: field.to_string(), value, limit }
            }
        }
    }
}

struct LogReader<'a> {
    log: &'a [u8],
    guid: Guid,
}

/// 4 KiB sectors the header and `count` descriptors take: the header counts as two
/// descriptors, and a sector holds 128.
fn descriptor_sectors(count: u32) -> u64 {
    (count as u64 + 2).div_ceil(128)
}

impl LogReader<'_> {
    fn len(&self) -> u64 {
        self.log.len() as u64
    }

    /// `len` bytes of the circular log from `pos`, wrapping at its end.
    fn bytes(&self, pos: u64, len: u64) -> Cow<'_, [u8]> {
        let (pos, len) = (pos as usize, len as usize);
        if pos + len <= self.log.len() {
            Cow::Borrowed(&self.log[pos..pos + len])
        } else {
            let mut v = Vec::with_capacity(len);
            v.extend_from_slice(&self.log[pos..]);
            v.extend_from_slice(&self.log[..len - (self.log.len() - pos)]);
            Cow::Owned(v)
        }
    }

    /// The valid entry at `pos` (a sector boundary), if there is one.
    fn entry_at(&self, pos: u64, budget: &mut u64) -> std::result::Result<Option<Entry>, LogError> {
        let h = &self.log[pos as usize..(pos + LOG_SECTOR) as usize];
        if &h[..4] != b"loge" {
            return Ok(None);
        }
        let length = le32(h, 8) as u64;
        let sequence = le64(h, 16);
        let count = le32(h, 24);
        if length == 0
            || !length.is_multiple_of(LOG_SECTOR)
            || length > self.len()
            || sequence == 0
            || Guid::read(&h[32..]) != self.guid
            || descriptor_sectors(count) * LOG_SECTOR > length
        {
            return Ok(None);
        }
        match budget.checked_sub(length) {
            Some(rest) => *budget = rest,
            None => {
                return Err(LogError::Limit(
                    "bytes of VHDX log entries checksummed while searching the log",
                    4 * self.len() + (64 << 20) + length,
                    4 * self.len() + (64 << 20),
                ))
            }
        }
        let entry = self.bytes(pos, length);
        if le32(&entry, 4) != checksum(&entry) {
            return Ok(None);
        }
        if self.descriptors(&entry).is_none() {
            return Ok(None);
        }
        Ok(Some(Entry {
            pos,
            sequence,
            length,
            tail: le32(h, 12) as u64,
            flushed_file_offset: le64(h, 48),
            last_file_offset: le64(h, 56),
        }))
    }

    /// The descriptors of a whole entry, each paired with its data sector (by position in the
    /// entry), or None if any is invalid.
    fn descriptors(&self, entry: &[u8]) -> Option<Vec<(Descriptor, usize)>> {
        let sequence = le64(entry, 16);
        let count = le32(entry, 24);
        let mut data_sector = descriptor_sectors(count) as usize;
        let total_sectors = entry.len() / LOG_SECTOR as usize;
        let mut out = Vec::with_capacity(count as usize);
        for i in 0..count as usize {
            let d = &entry[ENTRY_HEADER_BYTES + i * DESCRIPTOR_BYTES..][..DESCRIPTOR_BYTES];
            if le64(d, 24) != sequence || !le64(d, 16).is_multiple_of(LOG_SECTOR) {
                return None;
            }
            let offset = le64(d, 16);
            match &d[..4] {
                b"zero" => {
                    let length = le64(d, 8);
                    if !length.is_multiple_of(LOG_SECTOR) || offset.checked_add(length).is_none() {
                        return None;
                    }
                    out.push((Descriptor::Zero { offset, length }, 0));
                }
                b"desc" => {
                    if data_sector >= total_sectors || offset.checked_add(LOG_SECTOR).is_none() {
                        return None;
                    }
                    let s = &entry[data_sector * LOG_SECTOR as usize..][..LOG_SECTOR as usize];
                    let s_seq = ((le32(s, 4) as u64) << 32) | le32(s, 4092) as u64;
                    if &s[..4] != b"data" || s_seq != sequence {
                        return None;
                    }
                    let mut leading = [0u8; 8];
                    leading.copy_from_slice(&d[8..16]);
                    let mut trailing = [0u8; 4];
                    trailing.copy_from_slice(&d[4..8]);
                    out.push((Descriptor::Data { offset, leading, trailing }, data_sector));
                    data_sector += 1;
                }
                _ => return None,
            }
        }
        Some(out)
    }
}

/// The active sequence: among valid entries, the one with the highest sequence number whose
/// Tail field leads, entry by entry with sequence numbers rising by one, back to itself.
fn active_sequence(entries: &[Entry], log_length: u64) -> std::result::Result<Option<Vec<&Entry>>, LogError> {
    let by_pos: HashMap<u64, &Entry> = entries.iter().map(|e| (e.pos, e)).collect();
    let mut heads: Vec<&Entry> = entries.iter().collect();
    heads.sort_by_key(|e| std::cmp::Reverse(e.sequence));
    // Bounds the total walking a hostile log with many broken chains can cause.
    let step_limit = 16 * entries.len() as u64 + 4096;
    let mut steps = 0u64;
    for head in heads {
        let mut chain = Vec::new();
        let mut pos = head.tail;
        let mut expected: Option<u64> = None;
        loop {
            steps += 1;
            if steps > step_limit {
                return Err(LogError::Limit("steps taken following VHDX log entry chains", steps, step_limit));
            }
            let Some(e) = by_pos.get(&pos) else { break };
            if expected.is_some_and(|s| s != e.sequence) || e.sequence > head.sequence {
                break;
            }
            chain.push(*e);
            if e.pos == head.pos {
                return Ok(Some(chain));
            }
            expected = Some(e.sequence + 1);
            pos = (e.pos + e.length) % log_length;
            if chain.len() > entries.len() {
                break;
            }
        }
    }
    Ok(None)
}

fn apply_entry(reader: &LogReader, e: &Entry, overlay: &mut Overlay, path: &std::path::Path) -> Result<()> {
    let entry = reader.bytes(e.pos, e.length);
    let Some(descriptors) = reader.descriptors(&entry) else {
        return Err(Error::corrupt(path, format!("VHDX log entry {} changed while being replayed", e.sequence)));
    };
    for (d, sector) in descriptors {
        match d {
            Descriptor::Zero { offset, length } => overlay.write_zeros(offset, length),
            Descriptor::Data { offset, leading, trailing } => {
                let data = &entry[sector * LOG_SECTOR as usize..][..LOG_SECTOR as usize];
                let mut bytes = vec![0u8; LOG_SECTOR as usize];
                bytes[..8].copy_from_slice(&leading);
                bytes[8..4092].copy_from_slice(&data[8..4092]);
                bytes[4092..].copy_from_slice(&trailing);
                overlay.write_bytes(offset, bytes.into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::file::test_file;

    /// The header fields the log is placed by: a 4 KiB log at 1 MiB, with a log GUID.
    fn header() -> Header {
        Header {
            sequence: 1,
            file_write_guid: Guid([0x11; 16]),
            data_write_guid: Guid([0x22; 16]),
            log_guid: Guid([0x33; 16]),
            log_version: 0,
            log_length: 4096,
            log_offset: 1 << 20,
        }
    }

    /// A file of 1 MiB + 4 KiB of zeros: the log holds no entry.
    fn replay_with(h: &Header) -> Result<LogState> {
        let (_tmp, file) = test_file(&vec![0u8; (1 << 20) + 4096]);
        replay(&file, h, &MemoryBudget::default())
    }

    fn refusal(h: &Header) -> String {
        crate::source::file::refused(replay_with(h))
    }

    /// A log of one entry (little-endian), sequence 5, of two sectors: its header and
    /// descriptors, then one data sector. It zeroes file offset 0..4096 and writes the sector
    /// at 4096.
    fn entry() -> Vec<u8> {
        let mut b = vec![
            b'l', b'o', b'g', b'e', //                            0: signature "loge"
            0x00, 0x00, 0x00, 0x00, //                            4: checksum (set below)
            0x00, 0x20, 0x00, 0x00, //                            8: entry length 8 KiB
            0x00, 0x00, 0x00, 0x00, //                           12: tail 0 (this entry)
            5, 0, 0, 0, 0, 0, 0, 0, //                           16: sequence number 5
            0x02, 0x00, 0x00, 0x00, //                           24: descriptor count 2
            0x00, 0x00, 0x00, 0x00, //                           28: reserved
        ];
        b.extend([0x33; 16]); //                                 32: log GUID
        b.extend([0, 0, 0x10, 0, 0, 0, 0, 0]); //                48: flushed file offset 1 MiB
        b.extend([0, 0x20, 0x10, 0, 0, 0, 0, 0]); //             56: last file offset 1 MiB + 8 KiB
        b.extend(b"zero"); //                                    64: descriptor 0: "zero"
        b.extend([0; 4]); //                                     68:   reserved
        b.extend([0, 0x10, 0, 0, 0, 0, 0, 0]); //                72:   length 4 KiB
        b.extend([0; 8]); //                                     80:   file offset 0
        b.extend([5, 0, 0, 0, 0, 0, 0, 0]); //                   88:   sequence number 5
        b.extend(b"desc"); //                                    96: descriptor 1: "desc"
        b.extend(b"TAIL"); //                                   100:   trailing 4 bytes
        b.extend(b"LEADING!"); //                               104:   leading 8 bytes
        b.extend([0, 0x10, 0, 0, 0, 0, 0, 0]); //               112:   file offset 4 KiB
        b.extend([5, 0, 0, 0, 0, 0, 0, 0]); //                  120:   sequence number 5
        b.resize(4096, 0); //                                   128: no more descriptors
        b.extend(b"data"); //                                  4096: data sector: "data"
        b.extend([0; 4]); //                                   4100:   sequence number, high half
        b.extend([0xab; 4084]); //                             4104:   bytes 8..4092 of the sector
        b.extend([5, 0, 0, 0]); //                             8188:   sequence number, low half
        fix_checksum(&mut b);
        b
    }

    fn fix_checksum(b: &mut [u8]) {
        let crc = checksum(b);
        b[4..8].copy_from_slice(&crc.to_le_bytes());
    }

    /// `log` at 1 MiB of a file that ends with it.
    fn replay_log(log: &[u8]) -> Result<LogState> {
        let mut b = vec![0u8; 1 << 20];
        b.extend(log);
        let (_tmp, file) = test_file(&b);
        let h = Header { log_length: log.len() as u32, ..header() };
        replay(&file, &h, &MemoryBudget::default())
    }

    #[test]
    fn replays_an_entry() {
        let LogState::Replayed(r) = replay_log(&entry()).unwrap() else { panic!("not replayed") };
        assert_eq!((r.entries, r.first_sequence, r.last_sequence), (1, 5, 5));
        assert_eq!(r.last_file_offset, (1 << 20) + 8192);
        let mut v = vec![9u8; 8192];
        r.overlay.apply(&mut v, 0);
        assert!(v[..4096].iter().all(|&b| b == 0));
        assert_eq!(&v[4096..4104], b"LEADING!");
        assert!(v[4104..8188].iter().all(|&b| b == 0xab));
        assert_eq!(&v[8188..], b"TAIL");
    }

    #[test]
    fn invalid_entries_are_not_replayed() {
        let mut e = entry();
        e[32] = 0x34; //                                         32: another log's GUID
        fix_checksum(&mut e);
        assert!(matches!(replay_log(&e).unwrap(), LogState::NoActiveSequence));
        let mut e = entry();
        e[16] = 6; //                                            16: sequence changed, checksum not
        assert!(matches!(replay_log(&e).unwrap(), LogState::NoActiveSequence));
        let mut e = entry();
        e[120] = 6; //                                          120: descriptor 1's sequence 6
        fix_checksum(&mut e);
        assert!(matches!(replay_log(&e).unwrap(), LogState::NoActiveSequence));
        let mut e = entry();
        e[8188] = 6; //                                        8188: data sector's sequence 6
        fix_checksum(&mut e);
        assert!(matches!(replay_log(&e).unwrap(), LogState::NoActiveSequence));
    }

    #[test]
    fn refuses_an_entry_flushed_past_the_end_of_the_file() {
        let mut e = entry();
        e[50] = 0x20; //                                         48: flushed file offset 2 MiB
        fix_checksum(&mut e);
        let Err(err) = replay_log(&e) else { panic!("log accepted") };
        let err = err.to_string();
        assert!(
            err.contains("VHDX log entry 5 says the file had been written up to 2097152 bytes, but it has 1056768"),
            "{err}"
        );
    }

    #[test]
    fn no_log_guid_or_no_entries() {
        let h = Header { log_guid: Guid::default(), ..header() };
        assert!(matches!(replay_with(&h).unwrap(), LogState::Clean));
        assert!(matches!(replay_with(&header()).unwrap(), LogState::NoActiveSequence));
    }

    #[test]
    fn refuses_unknown_log_versions() {
        let h = Header { log_version: 1, ..header() };
        assert!(refusal(&h).contains("the VHDX log has version 1; only version 0 exists"));
    }

    #[test]
    fn refuses_a_misplaced_or_truncated_log() {
        for (log_offset, log_length) in [(1 << 20, 4095), ((1 << 20) - 4096, 4096), ((1 << 20) + 512, 4096)] {
            let h = Header { log_offset, log_length, ..header() };
            let e = refusal(&h);
            assert!(
                e.contains(&format!(
                    "the VHDX log is placed at offset {log_offset} with length {log_length}; it must start"
                )),
                "{e}"
            );
        }
        let h = Header { log_length: 8192, ..header() };
        let e = refusal(&h);
        assert!(
            e.contains("the VHDX log (offset 1048576, 8192 bytes) lies past the end of the file (1052672 bytes)"),
            "{e}"
        );
    }
}
