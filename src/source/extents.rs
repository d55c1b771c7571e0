//! Where a range of the virtual disk lives in the image files, for data stored as-is. The
//! server hands this to abuse.ko, which reads the files into the request itself (one copy
//! instead of two); `DiskImage::map` fills it.

use std::os::fd::RawFd;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    /// `len` bytes of the open regular file `fd`, from `offset`.
    Data { fd: RawFd, offset: u64, len: u64 },
    /// `len` bytes of zeros.
    Zero { len: u64 },
}

impl Extent {
    pub fn len(&self) -> u64 {
        match *self {
            Extent::Data { len, .. } | Extent::Zero { len } => len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Extents in disk order, adjacent ones merged, at most `max` of them.
pub struct Extents {
    list: Vec<Extent>,
    max: usize,
}

impl Extents {
    pub fn new(max: usize) -> Extents {
        Extents { list: Vec::with_capacity(max), max }
    }

    pub fn clear(&mut self) {
        self.list.clear();
    }

    pub fn as_slice(&self) -> &[Extent] {
        &self.list
    }

    /// Bytes described so far.
    pub fn total(&self) -> u64 {
        self.list.iter().map(Extent::len).sum()
    }

    /// Appends `e`, merged into the last extent when it continues it. Returns false, appending
    /// nothing, when that would make more than `max` extents: the caller then reads instead.
    #[must_use]
    pub fn push(&mut self, e: Extent) -> bool {
        if e.is_empty() {
            return true;
        }
        match (self.list.last_mut(), e) {
            (Some(Extent::Zero { len }), Extent::Zero { len: more }) => {
                *len += more;
                return true;
            }
            (Some(Extent::Data { fd, offset, len }), Extent::Data { fd: f, offset: o, len: more })
                if *fd == f && offset.checked_add(*len) == Some(o) =>
            {
                *len += more;
                return true;
            }
            _ => {}
        }
        if self.list.len() >= self.max {
            return false;
        }
        self.list.push(e);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_what_continues_and_stops_at_max() {
        let mut x = Extents::new(2);
        assert!(x.push(Extent::Data { fd: 3, offset: 0, len: 512 }));
        assert!(x.push(Extent::Data { fd: 3, offset: 512, len: 512 }));
        assert!(x.push(Extent::Zero { len: 0 }));
        assert!(x.push(Extent::Zero { len: 4096 }));
        assert!(x.push(Extent::Zero { len: 4096 }));
        assert!(!x.push(Extent::Data { fd: 3, offset: 1024, len: 512 }));
        assert_eq!(x.as_slice(), &[Extent::Data { fd: 3, offset: 0, len: 1024 }, Extent::Zero { len: 8192 }]);
        assert_eq!(x.total(), 9216);
        // Same fd but not contiguous, or another fd: a new extent.
        let mut y = Extents::new(8);
        assert!(y.push(Extent::Data { fd: 3, offset: 0, len: 512 }));
        assert!(y.push(Extent::Data { fd: 3, offset: 4096, len: 512 }));
        assert!(y.push(Extent::Data { fd: 4, offset: 4608, len: 512 }));
        assert_eq!(y.as_slice().len(), 3);
    }
}
