//! Any file opened as EWF (`--format ewf`), seeded with EWF2 (.Ex01) sets of one segment. The
//! Adler-32s are put right first, walking the section descriptors back from the end as the
//! reader does, and integrity hashes are turned off, so mutations get past them to the checks
//! behind (open_ewf and open_and_read keep them as they are, for the checksum checks themselves).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdmount::formats::Format;

fn adler32(data: &[u8]) -> [u8; 4] {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    ((b << 16) | a).to_le_bytes()
}

fn le(b: &[u8], at: usize, n: usize) -> usize {
    b[at..at + n].iter().rev().fold(0usize, |v, &x| v.saturating_mul(256).saturating_add(usize::from(x)))
}

/// Puts the Adler-32 of `b[from..sum_at]` at `sum_at`, if both lie in `b`.
fn put(b: &mut [u8], from: usize, sum_at: usize) {
    if from <= sum_at && sum_at.saturating_add(4) <= b.len() {
        let sum = adler32(&b[from..sum_at]);
        b[sum_at..sum_at + 4].copy_from_slice(&sum);
    }
}

fn fix_ewf2_checksums(b: &mut [u8]) {
    if b.len() < 96 {
        return;
    }
    let mut at = b.len() - 64;
    for _ in 0..4096 {
        b[at + 4] &= !1; // no integrity hash
        put(b, at, at + 60);
        let (kind, prev) = (le(b, at, 4), le(b, at + 8, 8));
        let start = if prev == 0 { 32 } else { prev.saturating_add(64) };
        match kind {
            // A sector table: its header, then its entries.
            4 if start.saturating_add(32) <= at => {
                put(b, start, start + 16);
                let end = start + 32 + le(b, start + 8, 4).saturating_mul(16);
                if end.saturating_add(4) <= at {
                    put(b, start + 32, end);
                }
            }
            // The MD5 and SHA1 hash sections.
            8 | 9 if start.saturating_add(24) <= at => put(b, start, start + if kind == 8 { 16 } else { 20 }),
            _ => {}
        }
        if prev < 32 || start > at {
            return;
        }
        at = prev;
    }
}

fuzz_target!(|data: &[u8]| {
    let mut data = data.to_vec();
    fix_ewf2_checksums(&mut data);
    vdmount_fuzz::open_and_read(&data, Some(Format::Ewf));
});
