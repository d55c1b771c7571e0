//! The image file as the replayed log says it should be: the file's bytes with the log's writes
//! laid over them in memory. The file itself is never written.

use crate::error::Result;
use crate::formats::image_file::ImageFile;
use std::collections::BTreeMap;

/// What one stretch of the overlay holds.
enum Piece {
    Zeros(u64),
    Bytes(Box<[u8]>),
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Zeros(n) => *n,
            Piece::Bytes(b) => b.len() as u64,
        }
    }

    /// The part of this piece (which starts at `start`) that lies in `[from, to)`.
    fn cut(&self, start: u64, from: u64, to: u64) -> Piece {
        match self {
            Piece::Zeros(_) => Piece::Zeros(to - from),
            Piece::Bytes(b) => Piece::Bytes(b[(from - start) as usize..(to - start) as usize].into()),
        }
    }
}

/// Writes replayed from the log: non-overlapping stretches of the file, by start offset.
#[derive(Default)]
pub struct Overlay {
    pieces: BTreeMap<u64, Piece>,
}

impl Overlay {
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The end of the last stretch written.
    pub fn end(&self) -> u64 {
        self.pieces.iter().next_back().map_or(0, |(s, p)| s + p.len())
    }

    pub fn write_bytes(&mut self, offset: u64, bytes: Box<[u8]>) {
        self.insert(offset, Piece::Bytes(bytes));
    }

    pub fn write_zeros(&mut self, offset: u64, len: u64) {
        if len > 0 {
            self.insert(offset, Piece::Zeros(len));
        }
    }

    /// Lays `piece` at `start`, replacing whatever it covers. The caller has checked that
    /// `start + len` does not overflow.
    fn insert(&mut self, start: u64, piece: Piece) {
        let end = start + piece.len();
        let overlapping: Vec<u64> =
            self.pieces.range(..end).rev().take_while(|(s, p)| *s + p.len() > start).map(|(s, _)| *s).collect();
        for s in overlapping {
            let Some(old) = self.pieces.remove(&s) else { continue };
            let old_end = s + old.len();
            if s < start {
                self.pieces.insert(s, old.cut(s, s, start));
            }
            if old_end > end {
                self.pieces.insert(end, old.cut(s, end, old_end));
            }
        }
        self.pieces.insert(start, piece);
    }

    /// Copies the overlay's bytes over `buf`, which holds the file's bytes from `offset`.
    pub fn apply(&self, buf: &mut [u8], offset: u64) {
        let Some(end) = offset.checked_add(buf.len() as u64) else { return };
        let first = self.pieces.range(..=offset).next_back().map_or(offset, |(s, _)| *s);
        for (&s, piece) in self.pieces.range(first..end) {
            let from = s.max(offset);
            let to = (s + piece.len()).min(end);
            if from >= to {
                continue;
            }
            let dst = &mut buf[(from - offset) as usize..(to - offset) as usize];
            match piece {
                Piece::Zeros(_) => dst.fill(0),
                Piece::Bytes(b) => dst.copy_from_slice(&b[(from - s) as usize..(to - s) as usize]),
            }
        }
    }
}

/// The image file with the replayed log over it; every read after the log replay goes
/// through this.
pub struct VhdxFile {
    pub file: ImageFile,
    overlay: Overlay,
    /// The file's size after replay: the log may extend it.
    pub size: u64,
}

impl VhdxFile {
    pub fn new(file: ImageFile, overlay: Overlay, min_size: u64) -> VhdxFile {
        let size = file.size.max(overlay.end()).max(min_size);
        VhdxFile { file, overlay, size }
    }

    /// Metadata read: all of it must lie inside the (replayed) file.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64, what: &str) -> Result<()> {
        if self.overlay.is_empty() && self.size == self.file.size {
            return self.file.read_exact_at(buf, offset, what);
        }
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > self.size) {
            // Past even the replayed size: let the file report it.
            return self.file.read_exact_at(buf, offset, what);
        }
        let in_file = self.file.size.saturating_sub(offset).min(buf.len() as u64) as usize;
        let (head, tail) = buf.split_at_mut(in_file);
        if !head.is_empty() {
            self.file.read_exact_at(head, offset, what)?;
        }
        tail.fill(0);
        self.overlay.apply(buf, offset);
        Ok(())
    }

    /// Guest data read: past the end of the file reads as zeros.
    pub fn read_data_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file.read_data_at(buf, offset)?;
        self.overlay.apply(buf, offset);
        Ok(())
    }

    pub fn read_vec(&self, offset: u64, len: u64, limit: u64, what: &str) -> Result<Vec<u8>> {
        crate::limits::check(&self.file.path, &format!("size of {what}"), len, limit)?;
        let mut v = vec![0u8; len as usize];
        self.read_exact_at(&mut v, offset, what)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(o: &Overlay, len: usize) -> Vec<u8> {
        let mut v = vec![9u8; len];
        o.apply(&mut v, 0);
        v
    }

    #[test]
    fn later_writes_win_and_split_earlier_ones() {
        let mut o = Overlay::default();
        o.write_bytes(4, vec![1; 8].into());
        o.write_zeros(6, 2);
        o.write_bytes(0, vec![2; 2].into());
        o.write_zeros(14, 4);
        o.write_bytes(15, vec![3; 1].into());
        assert_eq!(view(&o, 20), [2, 2, 9, 9, 1, 1, 0, 0, 1, 1, 1, 1, 9, 9, 0, 3, 0, 0, 9, 9]);
        let mut part = vec![9u8; 4];
        o.apply(&mut part, 5);
        assert_eq!(part, [1, 0, 0, 1]);
        assert_eq!(o.end(), 18);
    }
}
