//! Random 4 KiB reads at queue depth 1 through the library's reader, for bench/run.sh.
//!
//!   randread IMAGE [--count N] [--seed S] [--cache-size MIB] [--base B --span S] [--print-offsets]
//!
//! `--base B --span S` keeps the reads inside bytes [B, B+S) of the disk: a "hot file" such as a
//! registry hive or a log, read at random, rather than reads spread over the whole disk.
//! The offsets are 4 KiB aligned, drawn from a fixed-seed generator, so the same command lists
//! the same offsets every time: `--print-offsets` prints them (one a line) instead of reading,
//! which is how the bench gives qemu-io exactly the same reads. Otherwise it reads them one after
//! another and prints "reads seconds iops".

use std::path::PathBuf;
use std::time::Instant;
use vdmount::cache::{Cache, DEFAULT_CACHE_BYTES};
use vdmount::formats::{open, OpenOptions};

const BLOCK: u64 = 4096;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut image: Option<PathBuf> = None;
    let (mut count, mut seed, mut cache_mib, mut print) = (20_000u64, 1u64, DEFAULT_CACHE_BYTES >> 20, false);
    let (mut base, mut span) = (0u64, u64::MAX);
    while let Some(a) = args.next() {
        let mut number = |name: &str| -> u64 {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| die(&format!("{name} needs a number")))
        };
        match a.as_str() {
            "--count" => count = number("--count"),
            "--seed" => seed = number("--seed"),
            "--cache-size" => cache_mib = number("--cache-size"),
            "--base" => base = number("--base"),
            "--span" => span = number("--span"),
            "--print-offsets" => print = true,
            _ if image.is_none() => image = Some(a.into()),
            _ => die(&format!("unexpected argument {a}")),
        }
    }
    let image = image.unwrap_or_else(|| {
        die("usage: randread IMAGE [--count N] [--seed S] [--cache-size MIB] [--base B --span S] [--print-offsets]")
    });
    let disk = open(&image, &OpenOptions::new(Cache::new(cache_mib << 20))).unwrap_or_else(|e| die(&e.to_string()));
    let first = base / BLOCK;
    let blocks = (disk.virtual_size() / BLOCK).saturating_sub(first).min(span / BLOCK);
    if blocks == 0 {
        die("no whole 4 KiB block in the range to read");
    }
    let mut rng = XorShift(seed.max(1));
    let offsets: Vec<u64> = (0..count).map(|_| (first + rng.next() % blocks) * BLOCK).collect();
    if print {
        let text: String = offsets.iter().map(|o| format!("{o}\n")).collect();
        print!("{text}");
        return;
    }
    let mut buf = vec![0u8; BLOCK as usize];
    let mut checksum = 0u64;
    let start = Instant::now();
    for &off in &offsets {
        disk.read_at(&mut buf, off).unwrap_or_else(|e| die(&e.to_string()));
        // Touch the data so the read cannot be optimised away.
        checksum = checksum.wrapping_add(u64::from(buf[(off / BLOCK % BLOCK) as usize]));
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{count} {secs:.6} {:.0} {checksum}", count as f64 / secs);
}

/// xorshift64*: small, fast, and the same sequence on every machine.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn die(msg: &str) -> ! {
    eprintln!("randread: {msg}");
    std::process::exit(1)
}
