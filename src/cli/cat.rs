//! `vdmount cat IMAGE`: the whole virtual disk, as raw bytes, to standard output.

use super::ImageArgs;
use crate::error::{Error, Result};
use std::io::Write;

#[derive(clap::Args)]
pub struct CatArgs {
    #[command(flatten)]
    pub image: ImageArgs,
}

/// Bytes read from the image per step: large enough that per-call costs vanish.
const CHUNK: usize = 4 << 20;

pub fn run(args: &CatArgs) -> Result<()> {
    let disk = args.image.open()?;
    let size = disk.virtual_size();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < size {
        let n = (size - offset).min(CHUNK as u64) as usize;
        disk.read_at(&mut buf[..n], offset)?;
        if let Err(e) = out.write_all(&buf[..n]) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(Error::Usage(format!("writing to standard output: {e}")));
        }
        offset += n as u64;
    }
    out.flush().map_err(|e| Error::Usage(format!("writing to standard output: {e}")))
}
