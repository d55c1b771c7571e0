//! `vdmount verify IMAGE`: recomputes the hashes an image stored of its media when it was made
//! (EWF's MD5, and SHA1 where stored) over the whole virtual disk, and compares.

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
    if stored.md5.is_none() && stored.sha1.is_none() {
        return Err(Error::Image(format!(
            "{}: the image stores no hash of its media (MD5 or SHA1), so there is nothing to verify against",
            path.display()
        )));
    }
    let size = disk.virtual_size();
    let progress = super::cat::progress_bar(size);
    let (mut md5, mut sha1) = (md5::Md5::new(), sha1::Sha1::new());
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
            md5.update(&buf);
            if stored.sha1.is_some() {
                sha1.update(&buf);
            }
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
    if !bad.is_empty() {
        return Err(Error::Image(format!(
            "{}: {} mismatch: the media data is not what was acquired",
            path.display(),
            bad.join(" and ")
        )));
    }
    Ok(())
}

fn report(name: &'static str, got: &[u8], want: &[u8], bad: &mut Vec<&'static str>) {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let verdict = if got == want { "ok" } else { "MISMATCH" };
    println!("{name:<5} computed {}  stored {}  {verdict}", hex(got), hex(want));
    if got != want {
        bad.push(name);
    }
}
