//! Which reads are sequential. Several readers interleave (the server's queue threads, `cat`'s
//! reader threads), so a few streams are tracked at once, as the kernel's read-ahead does per
//! open file: a read that starts where a stream ended, or at most its own length past it (the
//! readers of one stream on several threads arrive slightly out of order), continues it;
//! any other read starts a new one in place of the least recently used one that is not (yet)
//! sequential, or else of the least recently used.

/// Reads in a row a stream needs before it counts as sequential, so that random reads which
/// happen to land just past each other almost never start a prefetch.
const HITS: u32 = 4;
/// Reads (of any stream) after which an unused stream is forgotten: a random read that lands
/// just past a stream that ended long ago starts no prefetch.
const STALE: u64 = 64;

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
        // A read that moves a stream forward and starts before its end or at most `len` past it.
        let found = self.list.iter_mut().find(|s| end > s.end && offset <= s.end.saturating_add(len));
        if let Some(s) = found {
            if self.clock - s.used > STALE {
                s.hits = 0;
            }
            s.end = end;
            s.hits = s.hits.saturating_add(1);
            s.used = self.clock;
            return s.hits >= HITS;
        }
        let clock = self.clock;
        let fresh = Stream { end, hits: 0, used: clock };
        if self.list.len() < self.max {
            self.list.push(fresh);
        } else if let Some(victim) =
            self.list.iter_mut().min_by_key(|s| (s.hits >= HITS && clock - s.used <= STALE, s.used))
        {
            // A stream that is not sequential, or no longer used, goes first: random reads
            // interleaved with sequential ones must not push the sequential streams out.
            *victim = fresh;
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

    #[test]
    fn random_reads_do_not_push_out_sequential_streams() {
        let mut s = Streams::new(8);
        let mut x = 99u64;
        let mut seen = 0;
        for i in 0..100u64 {
            seen += s.note(i * 65536, 65536) as u32;
            for _ in 0..5 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                s.note((1 << 40) + (x >> 24) % (1 << 38) / 4096 * 4096, 4096);
            }
        }
        assert_eq!(seen, 100 - 4);
    }
}
