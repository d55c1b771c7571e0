//! Decompression of compressed clusters (qcow2 zlib/zstd, qcow v1 zlib). A compressed cluster
//! must decompress to exactly one cluster: shorter output is an error (as in qemu) and so is
//! longer output (a hostile image must not make us produce more than a cluster).

use crate::error::{Error, Result};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Raw deflate (no zlib header), as qemu writes it.
    Zlib,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zlib => "zlib",
            Compression::Zstd => "zstd",
        }
    }
}

/// Decompresses the first `want` bytes of `input` (the compressed cluster stored at `host` in
/// `path`), a cluster of `cluster_size` bytes; all of it, checked, when `want` is the cluster
/// size. A prefix is checked only for ending too soon: the rest of the stream is not read.
pub fn decompress(
    kind: Compression,
    input: &[u8],
    cluster_size: usize,
    want: usize,
    path: &Path,
    host: u64,
) -> Result<Vec<u8>> {
    if want < cluster_size {
        let mut out = vec![0u8; want];
        let produced = run(kind, input, &mut out, path, host)?;
        if produced < want {
            return Err(too_short(path, host, cluster_size));
        }
        return Ok(out);
    }
    // One byte of room past the cluster tells over-long output from exact output.
    let mut out = vec![0u8; cluster_size + 1];
    decompress_into(kind, input, &mut out, path, host)?;
    out.truncate(cluster_size);
    Ok(out)
}

fn run(kind: Compression, input: &[u8], out: &mut [u8], path: &Path, host: u64) -> Result<usize> {
    match kind {
        Compression::Zlib => inflate(input, out),
        Compression::Zstd => unzstd(input, out),
    }
    .map_err(|why| {
        Error::corrupt(
            path,
            format!(
                "compressed cluster at offset {host} ({} bytes): {} data is invalid: {why}",
                input.len(),
                kind.name()
            ),
        )
    })
}

fn too_short(path: &Path, host: u64, cluster_size: usize) -> Error {
    Error::corrupt(
        path,
        format!("compressed cluster at offset {host} decompresses to less than one cluster ({cluster_size} bytes); the image is corrupt"),
    )
}

/// Decompresses `input` into `out`, which is one cluster plus one byte long (the extra byte
/// tells over-long output from exact output); the cluster is `out[..out.len() - 1]`.
pub fn decompress_into(kind: Compression, input: &[u8], out: &mut [u8], path: &Path, host: u64) -> Result<()> {
    let cluster_size = out.len().saturating_sub(1);
    let produced = run(kind, input, out, path, host)?;
    if produced < cluster_size {
        return Err(too_short(path, host, cluster_size));
    }
    if produced > cluster_size {
        return Err(Error::corrupt(
            path,
            format!(
                "compressed cluster at offset {host} decompresses to more than one cluster ({cluster_size} bytes); the image is corrupt"
            ),
        ));
    }
    Ok(())
}

// Decompressor state is tens of KiB to set up: each thread keeps one of each and resets it.
thread_local! {
    static INFLATER: std::cell::RefCell<flate2::Decompress> = std::cell::RefCell::new(flate2::Decompress::new(false));
    static UNZSTD: std::cell::RefCell<Option<zstd::stream::raw::Decoder<'static>>> = const { std::cell::RefCell::new(None) };
}

/// Raw deflate into `out`; returns the bytes produced. Input may have trailing padding (qcow2
/// rounds compressed sizes to sectors), so running out of input is not an error by itself.
fn inflate(input: &[u8], out: &mut [u8]) -> std::result::Result<usize, String> {
    INFLATER.with(|cell| {
        let mut d = cell.borrow_mut();
        d.reset(false);
        inflate_with(&mut d, input, out)
    })
}

fn inflate_with(d: &mut flate2::Decompress, input: &[u8], out: &mut [u8]) -> std::result::Result<usize, String> {
    use flate2::{FlushDecompress, Status};
    loop {
        let (in_before, out_before) = (d.total_in() as usize, d.total_out() as usize);
        let (Some(src), Some(dst)) = (input.get(in_before..), out.get_mut(out_before..)) else {
            return Ok(out_before);
        };
        let status = d.decompress(src, dst, FlushDecompress::Finish).map_err(|e| e.to_string())?;
        let (in_after, out_after) = (d.total_in() as usize, d.total_out() as usize);
        if status == Status::StreamEnd || out_after >= out.len() || (in_after == in_before && out_after == out_before) {
            return Ok(out_after);
        }
    }
}

/// One zstd frame into `out`; returns the bytes produced, or an error if the frame does not end
/// (qemu's rule: a frame still open when the cluster is full means the data is damaged).
fn unzstd(input: &[u8], out: &mut [u8]) -> std::result::Result<usize, String> {
    use zstd::stream::raw::{Decoder, Operation};
    UNZSTD.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = match &mut *slot {
            Some(d) => {
                d.reinit().map_err(|e| e.to_string())?;
                d
            }
            None => slot.insert(Decoder::new().map_err(|e| e.to_string())?),
        };
        unzstd_with(d, input, out)
    })
}

fn unzstd_with(
    d: &mut zstd::stream::raw::Decoder<'static>,
    input: &[u8],
    out: &mut [u8],
) -> std::result::Result<usize, String> {
    use zstd::stream::raw::Operation;
    let (mut read, mut written) = (0usize, 0usize);
    loop {
        let (Some(src), Some(dst)) = (input.get(read..), out.get_mut(written..)) else {
            return Err("internal bounds".into());
        };
        let status = d.run_on_buffers(src, dst).map_err(|e| e.to_string())?;
        read += status.bytes_read;
        written += status.bytes_written;
        if status.remaining == 0 {
            return Ok(written);
        }
        if written >= out.len() {
            return Ok(written); // over-long: reported by the caller
        }
        if status.bytes_read == 0 && status.bytes_written == 0 {
            return Err("the frame ends early".into());
        }
    }
}
