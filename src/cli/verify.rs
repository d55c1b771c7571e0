//! `vdmount verify IMAGE`: recomputes the hashes an image stored of its media when it was made
//! (EWF's MD5, and SHA1 where stored; DMG's CRC-32 of each partition table's sectors) over the
//! virtual disk, in one pass, and compares.

use super::ImageArgs;
use crate::error::{Error, Result};
use md5::Digest;
use std::sync::mpsc::sync_channel;

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub image: ImageArgs,
}

/// Bytes read per step.
const CHUNK: usize = 1 << 20;

pub fn run(args: &VerifyArgs) -> Result<()> {
    let disk = args.image.open()?;
    let path = &args.image.image;
    let stored = disk.stored_digests();
    if stored.md5.is_none() && stored.sha1.is_none() && stored.crc32.is_empty() && stored.inconsistencies.is_empty() {
        return Err(Error::Image(format!(
            "{}: the image stores no hash of its media (MD5, SHA1, or per-partition CRC-32), so there is nothing to verify against",
            path.display()
        )));
    }
    let size = disk.virtual_size();
    let progress = super::cat::progress_bar(size);
    let (mut md5, mut sha1) = (md5::Md5::new(), sha1::Sha1::new());
    let mut parts = Parts::new(&stored.crc32);
    // One thread reads (and inflates) while this one hashes; two buffers in flight.
    let result = std::thread::scope(|s| {
        let (tx, rx) = sync_channel::<Result<Vec<u8>>>(2);
        let disk = &disk;
        s.spawn(move || {
            let mut offset = 0u64;
            while offset < size {
                let mut buf = vec![0u8; (size - offset).min(CHUNK as u64) as usize];
                let r = disk.read_at(&mut buf, offset).map(|()| buf);
                let failed = r.is_err();
                if tx.send(r).is_err() || failed {
                    return;
                }
                offset += CHUNK as u64;
            }
        });
        let mut done = 0u64;
        for buf in rx {
            let buf = buf?;
            if stored.md5.is_some() {
                md5.update(&buf);
            }
            if stored.sha1.is_some() {
                sha1.update(&buf);
            }
            parts.update(done, &buf);
            done += buf.len() as u64;
            progress.set_position(done);
        }
        Ok::<(), Error>(())
    });
    progress.finish_and_clear();
    result?;
    let mut bad = Vec::new();
    if let Some(want) = stored.md5 {
        let got: [u8; 16] = md5.finalize().into();
        report("MD5", &got, &want, &mut bad);
    }
    if let Some(want) = stored.sha1 {
        let got: [u8; 20] = sha1.finalize().into();
        report("SHA1", &got, &want, &mut bad);
    }
    for (part, got) in stored.crc32.iter().zip(parts.finish()) {
        report(&format!("CRC-32 of {}", part.what), &got.to_be_bytes(), &part.crc.to_be_bytes(), &mut bad);
    }
    for why in &stored.inconsistencies {
        println!("{why}");
    }
    if let Some(first) = stored.inconsistencies.first() {
        bad.push(first.clone());
    }
    if !bad.is_empty() {
        return Err(Error::Image(format!(
            "{}: {} mismatch: the data read is not what the image recorded when it was made",
            path.display(),
            bad.join(" and ")
        )));
    }
    Ok(())
}

fn report(name: &str, got: &[u8], want: &[u8], bad: &mut Vec<String>) {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let verdict = if got == want { "ok" } else { "MISMATCH" };
    println!("{name:<5} computed {}  stored {}  {verdict}", hex(got), hex(want));
    if got != want {
        bad.push(name.to_string());
    }
}

/// CRC-32s over parts of the disk, fed from the one pass over it in order.
struct Parts {
    /// Every part's ranges as (range, part), sorted; the parts' ranges are disjoint.
    ranges: Vec<(std::ops::Range<u64>, usize)>,
    /// The first range not yet wholly fed.
    next: usize,
    hashers: Vec<crc32fast::Hasher>,
}

impl Parts {
    fn new(parts: &[crate::formats::PartCrc32]) -> Parts {
        let mut ranges: Vec<_> =
            parts.iter().enumerate().flat_map(|(i, p)| p.ranges.iter().map(move |r| (r.clone(), i))).collect();
        ranges.sort_by_key(|(r, _)| r.start);
        Parts { ranges, next: 0, hashers: vec![crc32fast::Hasher::new(); parts.len()] }
    }

    /// Feeds `buf`, the disk's bytes from `offset`, to the parts it overlaps.
    fn update(&mut self, offset: u64, buf: &[u8]) {
        let end = offset + buf.len() as u64;
        while let Some((r, part)) = self.ranges.get(self.next) {
            if r.start >= end {
                break;
            }
            let (from, to) = (r.start.max(offset), r.end.min(end));
            if from < to {
                self.hashers[*part].update(&buf[(from - offset) as usize..(to - offset) as usize]);
            }
            if r.end > end {
                break;
            }
            self.next += 1;
        }
    }

    fn finish(self) -> impl Iterator<Item = u32> {
        self.hashers.into_iter().map(|h| h.finalize())
    }
}
