//! Compressed EWF chunks: a zlib stream (header and Adler-32 trailer included), or in EWF2 a
//! bzip2 stream, that decompresses to at most one chunk. A stream that would decompress further
//! is refused: a hostile image must not make us produce more than a chunk.

use super::table::Chunk;
use crate::cache::{Cache, Key, Kind};
use crate::error::{Error, Result};
use crate::formats::cached::whole_cluster;
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

/// Decompresses the compressed `chunk` (number `index` of the media) of `file`, a chunk of up to
/// `chunk_size` bytes compressed with `method`, into a new buffer.
pub fn decompress(file: &ImageFile, index: u64, chunk: Chunk, chunk_size: u64, method: Method) -> Result<Vec<u8>> {
    let what = format!("compressed chunk {index}");
    limits::check(&file.path, &format!("size of {what}"), chunk.stored, max_stored(chunk_size))?;
    let mut input = file.read_vec(chunk.offset, chunk.stored, max_stored(MAX_EWF_CHUNK_BYTES), &what)?;
    let mut out = limits::alloc(&file.path, &what, chunk_size + 1)?;
    let n = decompress_into(file, index, chunk, method, &mut input, &mut out)?;
    out.truncate(n);
    Ok(out)
}

/// Decompresses `chunk` (compressed with `method`) into `out`, one chunk plus one byte long (the
/// extra byte tells over-long output from exact), reading it into `input` (resized, so
/// per-thread buffers can be reused); returns the bytes produced.
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

/// Where a compressed chunk is and what it holds: chunk `at` of the media, `chunk` in `file`,
/// compressed with `method`, holding `want` bytes of media in chunks of `chunk_size`.
pub struct Compressed<'a> {
    pub file: &'a ImageFile,
    pub at: u64,
    pub chunk: Chunk,
    pub method: Method,
    pub chunk_size: u64,
    pub want: u64,
}

/// Fills `out` with the bytes from `skip` on of the compressed chunk `c`, through `cache`.
pub fn read(cache: &Cache, c: &Compressed, skip: u64, out: &mut [u8]) -> Result<()> {
    let (file, at, offset, want) = (c.file, c.at, c.chunk.offset, c.want);
    let key = Key { file: file.id, kind: Kind::Cluster, offset };
    let short = |got: usize| {
        Error::corrupt(
            &file.path,
            format!(
                "compressed chunk {at} at offset {offset} decompresses to {got} bytes, less than its {want} bytes of data; the image is corrupt"
            ),
        )
    };
    // A whole chunk (what sequential readers ask for) is decompressed straight into `out`,
    // without filling the cache with chunks that will not be read again.
    if skip == 0 && out.len() as u64 == c.chunk_size {
        // Served from the cache only when it holds the whole chunk.
        let mut produced = out.len();
        let whole = whole_cluster(cache, key, out, |input, output| {
            produced = decompress_into(file, at, c.chunk, c.method, input, output)?;
            Ok(produced)
        })?;
        if whole {
            return if produced as u64 >= want { Ok(()) } else { Err(short(produced)) };
        }
    }
    let data = cache.get_or_load(key, || decompress(file, at, c.chunk, c.chunk_size, c.method))?;
    let src = usize::try_from(skip).ok().and_then(|s| data.get(s..s.checked_add(out.len())?));
    match src {
        Some(src) if data.len() as u64 >= want => {
            out.copy_from_slice(src);
            Ok(())
        }
        _ => Err(short(data.len())),
    }
}
