//! Decompressing one chunk. A chunk must decompress to exactly its sectors: shorter output is
//! damage, and longer output is refused before it is produced (the output buffer has one byte
//! of room past the chunk, so a hostile chunk cannot make us write more than that).

use super::adc;
use super::mish::Kind;
use std::io::Read;

/// Decompresses `input` (a `kind` chunk) into `out`; returns the bytes produced, at most
/// `out.len()`.
pub fn decompress(kind: Kind, input: &[u8], out: &mut [u8]) -> Result<usize, String> {
    match kind {
        Kind::Adc => adc::decompress(input, out),
        // UDZO chunks are zlib streams (with header and checksum), as qemu and dmg2img read them.
        Kind::Zlib => fill(flate2::read::ZlibDecoder::new(input), out),
        Kind::Bzip2 => fill(bzip2::read::BzDecoder::new(input), out),
        Kind::Lzfse => {
            let mut decoder = lzfse_rust::LzfseRingDecoder::default();
            fill(decoder.reader_bytes(input), out)
        }
        Kind::Zero | Kind::Raw | Kind::Ignore => Err(format!("{} chunks are not compressed", kind.name())),
    }
}

/// Reads from `r` until `out` is full or the stream ends; returns the bytes read.
fn fill(mut r: impl Read, out: &mut [u8]) -> Result<usize, String> {
    let mut n = 0;
    while n < out.len() {
        match r.read(&mut out[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(n)
}
