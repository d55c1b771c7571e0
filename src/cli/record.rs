//! What a running server leaves in /run/vdmount/abuseN: the image it serves, its mode and pid,
//! so `list` can name the image, `detach` finds the server, and `--reattach` checks that the
//! new server serves the same image the old one did.

use std::path::{Path, PathBuf};

const DIR: &str = "/run/vdmount";

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub index: u32,
    pub image: PathBuf,
    /// "read-only" or "cow".
    pub mode: String,
    pub pid: u32,
}

fn path(index: u32) -> PathBuf {
    Path::new(DIR).join(format!("abuse{index}"))
}

pub fn log_path(index: u32) -> PathBuf {
    Path::new(DIR).join(format!("abuse{index}.log"))
}

/// Writes the record; failing to is not fatal (a read-only /run only loses `list`'s image name).
pub fn save(r: &Record) {
    let _ = std::fs::create_dir_all(DIR);
    let text = format!("image={}\nmode={}\npid={}\n", r.image.display(), r.mode, r.pid);
    let _ = std::fs::write(path(r.index), text);
}

pub fn load(index: u32) -> Option<Record> {
    let text = std::fs::read_to_string(path(index)).ok()?;
    let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)?.strip_prefix('=')).map(str::to_string);
    Some(Record { index, image: field("image")?.into(), mode: field("mode")?, pid: field("pid")?.parse().ok()? })
}

pub fn remove(index: u32) {
    let _ = std::fs::remove_file(path(index));
}
