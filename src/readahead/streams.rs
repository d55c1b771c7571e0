//! Which reads are sequential. Several readers interleave (the server's queue threads, `cat`'s
//! reader threads), so a few streams are tracked at once, as the kernel's read-ahead does per
//! open file: a read that starts where a stream ended, or just past it, continues that stream;
//! any other read starts a new one in place of the least recently used.

/// How far past a stream's end a read may start and still continue it: readers of one stream
/// on several threads arrive slightly out of order (`cat` reads 1 MiB per thread).
const AHEAD: u64 = 1 << 20;
/// Reads in a row a stream needs before it counts as sequential, so that random reads which
/// happen to land just past each other almost never start a prefetch.
const HITS: u32 = 4;

#[derive(Clone, Copy)]
struct Stream {
    /// Where the furthest read so far ended.
    end: u64,
    /// Reads that continued the stream.
    hits: u32,
    /// When it was last used, for replacement.
    used: u64,
}

pub struct Streams {
    list: Vec<Stream>,
    max: usize,
    clock: u64,
}

impl Streams {
    pub fn new(max: usize) -> Streams {
        Streams { list: Vec::with_capacity(max), max: max.max(1), clock: 0 }
    }

    /// Records a read of `len` bytes at `offset`; true if it continues a sequential stream.
    pub fn note(&mut self, offset: u64, len: u64) -> bool {
        self.clock += 1;
        let end = offset.saturating_add(len);
        // A read that moves a stream forward and starts before its end or at most AHEAD past it.
        let found = self.list.iter_mut().find(|s| end > s.end && offset <= s.end.saturating_add(AHEAD));
        if let Some(s) = found {
            s.end = end;
            s.hits = s.hits.saturating_add(1);
            s.used = self.clock;
            return s.hits >= HITS;
        }
        let fresh = Stream { end, hits: 0, used: self.clock };
        if self.list.len() < self.max {
            self.list.push(fresh);
        } else if let Some(oldest) = self.list.iter_mut().min_by_key(|s| s.used) {
            *oldest = fresh;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_after_four_continuations() {
        let mut s = Streams::new(4);
        assert!(!s.note(0, 4096));
        assert!(!s.note(4096, 4096));
        assert!(!s.note(8192, 4096));
        assert!(!s.note(12288, 4096));
        assert!(s.note(16384, 4096));
    }

    #[test]
    fn random_reads_are_not_sequential() {
        // Spread over a disk, or inside one 64 MiB stretch (a registry hive read at random).
        for span in [1u64 << 40, 64 << 20] {
            let mut s = Streams::new(4);
            let mut x = 12345u64;
            let mut seen = 0;
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                seen += s.note((x >> 20) % span / 4096 * 4096, 4096) as u32;
            }
            assert!(seen <= 5, "{seen} of 100000 random reads counted as sequential in {span} bytes");
        }
    }

    #[test]
    fn rereading_the_same_block_is_not_sequential() {
        let mut s = Streams::new(4);
        for _ in 0..10 {
            assert!(!s.note(4096, 4096));
        }
    }

    #[test]
    fn interleaved_streams_are_each_sequential() {
        let mut s = Streams::new(4);
        let bases = [0u64, 1 << 30, 2 << 30];
        let mut seen = 0;
        for i in 0..10u64 {
            for b in bases {
                seen += s.note(b + i * 65536, 65536) as u32;
            }
        }
        assert_eq!(seen, 3 * 6);
    }
}
