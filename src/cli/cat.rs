//! `vdmount cat IMAGE`: the whole virtual disk, as raw bytes, to standard output.
//!
//! Several reader threads read ahead in large chunks (so both cores decompress compressed
//! images), and the main thread writes the chunks out in order. Buffers come from a fixed pool,
//! so memory stays at READERS × POOL_PER_READER × CHUNK plus the cache whatever the disk size.

use super::ImageArgs;
use crate::error::{Error, Result};
use crate::formats::DiskImage;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Mutex;

#[derive(clap::Args)]
pub struct CatArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Testing aid: read where the reader can describe the data as extents (as the server does
    /// for abuse.ko) by reading those extents, in pieces of varied sizes, and report on stderr
    /// how many bytes were described. The output must not change.
    #[arg(long, hide = true)]
    pub via_extents: bool,
}

/// Bytes read from the image per step: large enough that per-call costs vanish, small enough
/// that a buffer stays warm in the CPU cache between the read and the write.
const CHUNK: usize = 1 << 20;
/// Most reader threads, whatever the core count.
const MAX_READERS: usize = 8;
/// Buffers per reader: one being filled, one waiting to be written.
const POOL_PER_READER: usize = 2;

/// A chunk as a reader hands it to the writer: its index, and its bytes (or the read's error).
type Filled = (u64, Result<Vec<u8>>);

pub fn run(args: &CatArgs) -> Result<()> {
    let disk = args.image.open()?;
    let size = disk.virtual_size();
    let chunks = size.div_ceil(CHUNK as u64);
    let readers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, MAX_READERS);

    let (free_tx, free_rx) = channel::<Vec<u8>>();
    for _ in 0..readers * POOL_PER_READER {
        let _ = free_tx.send(vec![0u8; CHUNK]);
    }
    let free_rx = Mutex::new(free_rx);
    let (filled_tx, filled_rx) = sync_channel::<Filled>(readers * POOL_PER_READER);
    let next = AtomicU64::new(0);
    let described = AtomicU64::new(0);
    let via_extents = args.via_extents.then_some(&described);

    let progress = progress_bar(size);
    let result = std::thread::scope(|s| {
        for _ in 0..readers {
            let filled_tx = filled_tx.clone();
            let (disk, free_rx, next) = (&disk, &free_rx, &next);
            s.spawn(move || read_chunks(&**disk, size, chunks, next, free_rx, filled_tx, via_extents));
        }
        drop(filled_tx);
        // Returning drops the channel ends the readers wait on, so they stop too.
        write_in_order(chunks, size, filled_rx, free_tx, &progress)
    });
    // The bar stays where it stopped, and whatever follows (an error) starts on its own line.
    progress.abandon();
    if !progress.is_hidden() {
        eprintln!();
    }
    result?;
    if args.via_extents {
        eprintln!("vdmount: {} of {size} bytes described as extents", described.load(Ordering::Relaxed));
    }
    Ok(())
}

/// Fills `buf` (the disk from `offset`) as abuse.ko would see a server answer it: in requests
/// of varied sizes, each described as extents and read with pread where the reader can,
/// read with `read_at` where it cannot. Adds the described bytes to `described`.
fn read_via_extents(disk: &dyn DiskImage, buf: &mut [u8], offset: u64, described: &AtomicU64) -> Result<()> {
    use crate::abuse::uapi::ABUSE_MAX_EXTENTS;
    use crate::formats::{Extent, Extents};
    // Sizes that straddle clusters and grains in every way (all multiples of 512).
    const PIECES: [usize; 6] = [4096, 66048, 524288, 1536, 126976, 512];
    let mut extents = Extents::new(ABUSE_MAX_EXTENTS as usize);
    let (mut done, mut i) = (0usize, (offset / 512) as usize);
    while done < buf.len() {
        let len = PIECES[i % PIECES.len()].min(buf.len() - done);
        i += 1;
        let piece = &mut buf[done..done + len];
        let at = offset + done as u64;
        extents.clear();
        if disk.map(at, len as u64, &mut extents)? {
            if extents.total() != len as u64 {
                return Err(Error::Usage(format!(
                    "internal error: extents at {at} cover {} bytes, not {len}",
                    extents.total()
                )));
            }
            let mut pos = 0usize;
            for e in extents.as_slice() {
                let part = &mut piece[pos..pos + e.len() as usize];
                match *e {
                    Extent::Zero { .. } => part.fill(0),
                    Extent::Data { fd, offset, .. } => pread_exact(fd, part, offset)
                        .map_err(|e| Error::Usage(format!("reading extent at file offset {offset}: {e}")))?,
                }
                pos += part.len();
            }
            described.fetch_add(len as u64, Ordering::Relaxed);
        } else {
            disk.read_at(piece, at)?;
        }
        done += len;
    }
    Ok(())
}

/// What the kernel does with an extent: read it all, or fail (a short read is an error).
fn pread_exact(fd: std::os::fd::RawFd, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    // SAFETY: the fd is the reader's open image file, borrowed for this call only; ManuallyDrop
    // keeps the File from closing it.
    let file = std::mem::ManuallyDrop::new(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    std::os::unix::fs::FileExt::read_exact_at(&*file, buf, offset)
}

/// A reader thread: takes a free buffer, then the next chunk index, fills it, hands it on.
/// Taking the buffer first means whoever holds the lowest unwritten index has a buffer for it,
/// so the writer can never wait forever while every buffer waits behind it.
fn read_chunks(
    disk: &dyn DiskImage,
    size: u64,
    chunks: u64,
    next: &AtomicU64,
    free_rx: &Mutex<Receiver<Vec<u8>>>,
    filled_tx: SyncSender<Filled>,
    via_extents: Option<&AtomicU64>,
) {
    loop {
        let buf = match free_rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(mut buf) = buf else { return };
        let index = next.fetch_add(1, Ordering::Relaxed);
        if index >= chunks {
            return;
        }
        let offset = index * CHUNK as u64;
        let len = (size - offset).min(CHUNK as u64) as usize;
        buf.truncate(len);
        let result = match via_extents {
            Some(described) => read_via_extents(disk, &mut buf, offset, described),
            None => disk.read_at(&mut buf, offset),
        }
        .map(|()| buf);
        if filled_tx.send((index, result)).is_err() {
            return;
        }
    }
}

/// The main thread: writes chunks to standard output in index order, returning each buffer to
/// the pool once written.
fn write_in_order(
    chunks: u64,
    size: u64,
    filled_rx: Receiver<Filled>,
    free_tx: Sender<Vec<u8>>,
    progress: &ProgressBar,
) -> Result<()> {
    let mut out = stdout_file();
    // Results, errors included, are taken in disk order: the error reported is the first one on
    // the disk, whatever thread hit it first, and everything before it has been written.
    let mut waiting: BTreeMap<u64, Result<Vec<u8>>> = BTreeMap::new();
    let mut written = 0u64;
    while written < chunks {
        let Ok((index, result)) = filled_rx.recv() else {
            return Err(Error::Usage("internal error: the reader threads stopped early".into()));
        };
        waiting.insert(index, result);
        while let Some(ready) = waiting.remove(&written) {
            let mut buf = ready?;
            if let Err(e) = out.write_all(&buf) {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(()); // `vdmount cat img | head -c ...`: the reader has what it wanted
                }
                return Err(Error::Usage(format!("writing to standard output: {e}")));
            }
            written += 1;
            progress.set_position((written * CHUNK as u64).min(size));
            buf.resize(CHUNK, 0);
            let _ = free_tx.send(buf);
        }
    }
    Ok(())
}

/// Standard output as a plain file: no line buffering, no lock, one write(2) per chunk.
fn stdout_file() -> std::mem::ManuallyDrop<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: fd 1 stays open for the life of the process; ManuallyDrop never closes it.
    std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(1) })
}

/// A progress bar on standard error (bytes, rate, time left). indicatif draws it only when
/// standard error is a terminal, and at most 20 times a second however often it is updated.
pub(super) fn progress_bar(total: u64) -> ProgressBar {
    let style = ProgressStyle::with_template("{bytes} / {total_bytes}  {percent}%  {bytes_per_sec}  {eta} left")
        .expect("a valid progress template");
    ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()).with_style(style)
}
