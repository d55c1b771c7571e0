//! Compressed EWF chunks: a zlib stream (header and Adler-32 trailer included), or in EWF2 a
//! bzip2 stream, that decompresses to at most one chunk. A stream that would decompress further
//! is refused: a hostile image must not make us produce more than a chunk.

use super::table::Chunk;
use crate::error::{Error, Result};
use crate::limits::{self, MAX_EWF_CHUNK_BYTES};
use crate::source::file::ImageFile;

// Inflater state is tens of KiB to set up: each thread keeps one and resets it.
thread_local! {
    static INFLATER: std::cell::RefCell<flate2::Decompress> = std::cell::RefCell::new(flate2::Decompress::new(true));
}

/// Most bytes a compressed chunk may take for a chunk of `chunk_size` bytes: zlib's worst
/// case (stored blocks) is a few bytes per 16 KiB more than the input; SMART writes every chunk
/// compressed, so incompressible data takes that.
pub fn max_stored(chunk_size: u64) -> u64 {
    chunk_size + chunk_size / 8 + 1024
}

/// How chunks are compressed: EWF1 knows only zlib; EWF2 names one of the two in its file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Zlib,
    Bzip2,
}

/// Inflates the compressed `chunk` (number `index` of the media) of `file`, a chunk of up to
/// `chunk_size` bytes, into a new buffer.
pub fn inflate(file: &ImageFile, index: u64, chunk: Chunk, chunk_size: u64) -> Result<Vec<u8>> {
    decompress(file, index, chunk, chunk_size, Method::Zlib)
}

/// Like `inflate`, for a chunk compressed with `method`.
pub fn decompress(file: &ImageFile, index: u64, chunk: Chunk, chunk_size: u64, method: Method) -> Result<Vec<u8>> {
    let what = format!("compressed chunk {index}");
    limits::check(&file.path, &format!("size of {what}"), chunk.stored, max_stored(chunk_size))?;
    let mut input = file.read_vec(chunk.offset, chunk.stored, max_stored(MAX_EWF_CHUNK_BYTES), &what)?;
    let mut out = limits::alloc(&file.path, &what, chunk_size + 1)?;
    let n = decompress_into(file, index, chunk, method, &mut input, &mut out)?;
    out.truncate(n);
    Ok(out)
}

/// Inflates `chunk` into `out`, one chunk plus one byte long (the extra byte tells over-long
/// output from exact), reading it into `input` (resized, so per-thread buffers can be reused);
/// returns the bytes produced.
pub fn inflate_into(file: &ImageFile, index: u64, chunk: Chunk, input: &mut Vec<u8>, out: &mut [u8]) -> Result<usize> {
    decompress_into(file, index, chunk, Method::Zlib, input, out)
}

/// Like `inflate_into`, for a chunk compressed with `method`.
pub fn decompress_into(
    file: &ImageFile,
    index: u64,
    chunk: Chunk,
    method: Method,
    input: &mut Vec<u8>,
    out: &mut [u8],
) -> Result<usize> {
    let chunk_size = out.len() as u64 - 1;
    let bad = |why: String| {
        Error::corrupt(
            &file.path,
            format!("compressed chunk {index} at offset {}: {why}; the image is corrupt", chunk.offset),
        )
    };
    if chunk.stored > max_stored(chunk_size) {
        return Err(bad(format!("it takes {} bytes, more than a chunk of {chunk_size} bytes can", chunk.stored)));
    }
    input.resize(chunk.stored as usize, 0);
    file.read_exact_at(input, chunk.offset, "a compressed chunk")?;
    let (ended, produced) = match method {
        Method::Zlib => {
            let (status, produced) = INFLATER.with(|cell| {
                let mut d = cell.borrow_mut();
                d.reset(true);
                let status = d.decompress(input, out, flate2::FlushDecompress::Finish);
                (status, d.total_out())
            });
            let status = status.map_err(|e| bad(format!("invalid zlib data ({e})")))?;
            (status == flate2::Status::StreamEnd, produced)
        }
        Method::Bzip2 => {
            // Its state is a few MiB at most (900 KiB blocks), whatever the input says.
            let mut d = bzip2::Decompress::new(false);
            let status = d.decompress(input, out).map_err(|e| bad(format!("invalid bzip2 data ({e})")))?;
            (status == bzip2::Status::StreamEnd, d.total_out())
        }
    };
    let name = if method == Method::Zlib { "zlib" } else { "bzip2" };
    if produced > chunk_size {
        return Err(bad(format!("it decompresses to more than a chunk ({chunk_size} bytes)")));
    }
    if !ended {
        return Err(bad(format!("its {name} stream ends early")));
    }
    Ok(produced as usize)
}
