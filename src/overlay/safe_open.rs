//! Opening a file we will write (a `--cow=FILE` overlay) when its folder may be shared with
//! others (/tmp): one open that never follows a symlink at the name, and every check made on
//! that descriptor (fstat), so nothing can swap the file between the check and the use.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Flags on every open here: no symlink at the last component, no controlling terminal, and
/// no waiting on a FIFO planted at the name.
const FLAGS: i32 = libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC;

/// Opens the existing file at `path` for reading and writing; `Ok(None)` if there is none.
/// Refuses a symlink, anything but a regular file, and a file another user owns.
pub fn open_own_file(path: &Path, what: &str) -> Result<Option<File>> {
    let file = match OpenOptions::new().read(true).write(true).custom_flags(FLAGS).open(path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Error::unsupported(path, format!("is a symbolic link; give the real path of the {what}")))
        }
        Err(e) => return Err(Error::io(path, format!("cannot open the {what}"), e)),
    };
    check_own_regular(&file, path, what)?;
    Ok(Some(file))
}

/// Creates a new file at `path`, readable and writable by its owner only (0600); refuses if
/// anything (a file, a symlink, even a dangling one) already has that name.
pub fn create_private(path: &Path, what: &str) -> Result<File> {
    OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).custom_flags(FLAGS).open(path).map_err(|e| {
        match e.raw_os_error() {
            Some(libc::EEXIST) => Error::io(path, format!("cannot create the {what} (it must not exist yet)"), e),
            Some(libc::ELOOP) => {
                Error::unsupported(path, format!("is a symbolic link; give the real path of the {what}"))
            }
            _ => Error::io(path, format!("cannot create the {what}"), e),
        }
    })
}

/// The checks on an opened descriptor: a regular file, owned by the user running vdmount.
pub fn check_own_regular(file: &File, path: &Path, what: &str) -> Result<()> {
    let meta = file.metadata().map_err(|e| Error::io(path, format!("cannot stat the {what}"), e))?;
    if !meta.is_file() {
        return Err(Error::unsupported(path, format!("is not a regular file; give a regular file as the {what}")));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(Error::unsupported(
            path,
            format!(
                "is owned by uid {}, not by you (uid {me}): someone else may have put it there; check it, then chown it to yourself or give another FILE",
                meta.uid()
            ),
        ));
    }
    Ok(())
}

/// Removes the file we created at `path` after a failed setup, only if the name still refers
/// to that very file (someone may have replaced it meanwhile).
pub fn remove_if_same(path: &Path, file: &File) {
    if let (Ok(ours), Ok(now)) = (file.metadata(), std::fs::symlink_metadata(path)) {
        if ours.dev() == now.dev() && ours.ino() == now.ino() {
            let _ = std::fs::remove_file(path);
        }
    }
}
