//! Compressed EWF chunks: a zlib stream (header and Adler-32 trailer included) that inflates to
//! at most one chunk. A stream that would inflate further is refused: a hostile image must not
//! make us produce more than a chunk.

use super::table::Chunk;
use crate::error::{Error, Result};
use crate::limits::{self, MAX_EWF_CHUNK_BYTES};
use crate::source::file::ImageFile;

/// Most bytes a compressed chunk may take for a chunk of `chunk_size` bytes: zlib's worst
/// case (stored blocks) is a few bytes per 16 KiB more than the input; SMART writes every chunk
/// compressed, so incompressible data takes that.
pub fn max_stored(chunk_size: u64) -> u64 {
    chunk_size + chunk_size / 8 + 1024
}

/// Inflates the compressed `chunk` (number `index` of the media) of `file`, a chunk of up to
/// `chunk_size` bytes; returns its bytes.
pub fn inflate(file: &ImageFile, index: u64, chunk: Chunk, chunk_size: u64) -> Result<Vec<u8>> {
    let what = format!("compressed chunk {index}");
    limits::check(&file.path, &format!("size of {what}"), chunk.stored, max_stored(chunk_size))?;
    let input = file.read_vec(chunk.offset, chunk.stored, max_stored(MAX_EWF_CHUNK_BYTES), &what)?;
    // One byte of room past the chunk tells over-long output from exact.
    let mut out = limits::alloc(&file.path, &what, chunk_size + 1)?;
    let bad = |why: String| {
        Error::corrupt(&file.path, format!("{what} at offset {}: {why}; the image is corrupt", chunk.offset))
    };
    let mut d = flate2::Decompress::new(true);
    let status = d
        .decompress(&input, &mut out, flate2::FlushDecompress::Finish)
        .map_err(|e| bad(format!("invalid zlib data ({e})")))?;
    let produced = d.total_out();
    if produced > chunk_size {
        return Err(bad(format!("it inflates to more than a chunk ({chunk_size} bytes)")));
    }
    if status != flate2::Status::StreamEnd {
        return Err(bad("its zlib stream ends early".into()));
    }
    out.truncate(produced as usize);
    Ok(out)
}
