//! The image file as the replayed log says it should be: the file's bytes with the log's writes
//! laid over them in memory. The file itself is never written.

use crate::error::Result;
use crate::formats::layer::DataFile;
use crate::formats::{Extent, Extents};
use crate::source::file::ImageFile;
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

    /// The pieces overlapping `[offset, end)`, in order, each with its start and the part of
    /// it inside the range (`from..to`).
    fn overlapping(&self, offset: u64, end: u64) -> impl Iterator<Item = (u64, &Piece, u64, u64)> {
        let first = self.pieces.range(..=offset).next_back().map_or(offset, |(s, _)| *s);
        self.pieces.range(first..end).filter_map(move |(&s, piece)| {
            let (from, to) = (s.max(offset), (s + piece.len()).min(end));
            (from < to).then_some((s, piece, from, to))
        })
    }

    /// Copies the overlay's bytes over `buf`, which holds the file's bytes from `offset`.
    pub fn apply(&self, buf: &mut [u8], offset: u64) {
        let Some(end) = offset.checked_add(buf.len() as u64) else { return };
        for (s, piece, from, to) in self.overlapping(offset, end) {
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

    pub fn read_vec(&self, offset: u64, len: u64, limit: u64, what: &str) -> Result<Vec<u8>> {
        crate::limits::check(&self.file.path, &format!("size of {what}"), len, limit)?;
        let mut v = vec![0u8; len as usize];
        self.read_exact_at(&mut v, offset, what)?;
        Ok(v)
    }
}

impl DataFile for VhdxFile {
    /// Guest data read: past the end of the file reads as zeros.
    fn read_data_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file.read_data_at(buf, offset)?;
        self.overlay.apply(buf, offset);
        Ok(())
    }

    /// Appends the extents `read_data_at` reads for `len` bytes at `offset`: the file's, with
    /// zeros where the log wrote zeros. False where the log wrote bytes: they are only in memory.
    fn map_data(&self, offset: u64, len: u64, out: &mut Extents) -> bool {
        let Some(end) = offset.checked_add(len) else { return false };
        let mut pos = offset;
        for (_, piece, from, to) in self.overlay.overlapping(offset, end) {
            let described = self.file.map_data(pos, from - pos, out)
                && matches!(piece, Piece::Zeros(_))
                && out.push(Extent::Zero { len: to - from });
            if !described {
                return false;
            }
            pos = to;
        }
        self.file.map_data(pos, end - pos, out)
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

    #[test]
    fn map_data_describes_the_file_and_logged_zeros_but_not_logged_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, [7u8; 64]).unwrap();
        let file = ImageFile::open(&path).unwrap();
        let mut o = Overlay::default();
        o.write_zeros(8, 8);
        o.write_bytes(40, vec![1; 4].into());
        let f = VhdxFile::new(file, o, 0);
        let mut x = Extents::new(8);
        assert!(f.map_data(4, 28, &mut x));
        let Extent::Data { fd, .. } = x.as_slice()[0] else { panic!("{:?}", x.as_slice()) };
        let want =
            [Extent::Data { fd, offset: 4, len: 4 }, Extent::Zero { len: 8 }, Extent::Data { fd, offset: 16, len: 16 }];
        assert_eq!(x.as_slice(), &want);
        // Past the file's end reads as zeros, as read_data_at gives.
        x.clear();
        assert!(f.map_data(44, 30, &mut x));
        assert_eq!(x.as_slice(), &[Extent::Data { fd, offset: 44, len: 20 }, Extent::Zero { len: 10 }]);
        x.clear();
        assert!(!f.map_data(30, 12, &mut x));
    }
}
