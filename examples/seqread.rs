//! One sequential reader of a whole disk, as a server queue thread answers `dd` of the device:
//! requests of 512 KiB (the server's largest) one after another, on one thread, through the
//! read-ahead (src/readahead/) or, with `--no-readahead`, straight from the format's reader.
//! For bench/compressed.sh; prints "BYTES SECONDS decoded-ahead N taken N" (the bytes the
//! read-ahead decoded on its threads, and those the reader took from them).
//!
//!   seqread IMAGE [--no-readahead] [--request BYTES]

use std::sync::Arc;
use std::time::Instant;
use vdmount::cache::{Cache, DEFAULT_CACHE_BYTES};
use vdmount::formats::{open, OpenOptions};
use vdmount::readahead::ReadAhead;

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut image, mut plain, mut request) = (None, false, 512usize << 10);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--no-readahead" => plain = true,
            "--request" => {
                request = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| die("--request needs a number"))
            }
            _ if image.is_none() => image = Some(std::path::PathBuf::from(a)),
            _ => die(&format!("unexpected argument {a}")),
        }
    }
    let image = image.unwrap_or_else(|| die("usage: seqread IMAGE [--no-readahead] [--request BYTES]"));
    let mut disk =
        open(&image, &OpenOptions::new(Cache::new(DEFAULT_CACHE_BYTES))).unwrap_or_else(|e| die(&e.to_string()));
    let ra = (!plain).then(|| Arc::new(ReadAhead::new(disk.clone())));
    if let Some(ra) = &ra {
        disk = ra.clone();
    }
    let start = Instant::now();
    // On a thread of its own, as the server's readers are (the opening thread never prefetches).
    let read = std::thread::spawn(move || {
        let size = disk.virtual_size();
        let mut buf = vec![0u8; request.max(1)];
        let mut offset = 0u64;
        while offset < size {
            let n = (size - offset).min(buf.len() as u64) as usize;
            disk.read_at(&mut buf[..n], offset).unwrap_or_else(|e| die(&e.to_string()));
            offset += n as u64;
        }
        offset
    })
    .join()
    .unwrap_or_else(|_| die("the reader panicked"));
    let secs = start.elapsed().as_secs_f64();
    let (decoded, taken) = ra.map_or((0, 0), |r| r.stats());
    println!("{read} {secs:.3} decoded-ahead {decoded} taken {taken}");
}

fn die(msg: &str) -> ! {
    eprintln!("seqread: {msg}");
    std::process::exit(1);
}
