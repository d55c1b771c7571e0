//! The one error type. Every variant names the file it is about, and the message says what is
//! wrong and, where there is something to do, what to do next.

use std::io;
use std::path::{Path, PathBuf};

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused or failed an operation on the file.
    #[error("{}: {context}: {source}", path.display())]
    Io { path: PathBuf, context: String, source: io::Error },

    /// The file's contents are not a valid image of the format being read.
    #[error("{}: {msg}", path.display())]
    Corrupt { path: PathBuf, msg: String },

    /// A valid image that uses something vdmount does not (or will not) read.
    #[error("{}: {msg}", path.display())]
    Unsupported { path: PathBuf, msg: String },

    /// The image names a file it may not use: outside the allowed folders, or not a regular
    /// file (see source/confine.rs).
    #[error("{}: {msg}", path.display())]
    Refused { path: PathBuf, msg: String },

    /// A value read from the image is beyond what vdmount accepts (see `limits.rs`).
    #[error("{}: {field} is {value}, more than the limit of {limit}; the image is corrupt or hostile", path.display())]
    Limit { path: PathBuf, field: String, value: u64, limit: u64 },

    /// A failure inside a backing layer, with the image that named that layer (the innermost
    /// one: that is the pair to look at).
    #[error("{source} (backing file of {})", child.display())]
    InLayer { child: PathBuf, source: Box<Error> },

    /// An image problem whose message already names the file (a layer `info` could not open).
    #[error("{0}")]
    Image(String),

    /// A request the backend refuses, with the errno the kernel gets (EROFS, EOPNOTSUPP...).
    #[error("{0}")]
    Errno(#[source] io::Error),

    /// The kernel side failed: no abuse.ko, no free device, an ioctl refused.
    #[error("{0}")]
    Device(String),

    /// Anything else the user got wrong (bad option, wrong device).
    #[error("{0}")]
    Usage(String),
}

impl Error {
    pub fn io(path: &Path, context: impl Into<String>, source: io::Error) -> Error {
        Error::Io { path: path.to_path_buf(), context: context.into(), source }
    }
    pub fn corrupt(path: &Path, msg: impl Into<String>) -> Error {
        Error::Corrupt { path: path.to_path_buf(), msg: msg.into() }
    }
    pub fn unsupported(path: &Path, msg: impl Into<String>) -> Error {
        Error::Unsupported { path: path.to_path_buf(), msg: msg.into() }
    }

    /// An error that carries just an errno for the kernel.
    pub fn from_errno(e: i32) -> Error {
        Error::Errno(io::Error::from_raw_os_error(e))
    }

    /// A failure of the control device `ctl` while doing `what`, with what to do about it.
    pub fn device(ctl: &Path, what: &str, e: io::Error) -> Error {
        let hint = match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENXIO) if ctl.starts_with("/dev") => {
                " (is abuse.ko loaded? try: modprobe abuse)"
            }
            Some(libc::EBUSY) => " (another server is using it; pick another /dev/abctlN, or omit CTLDEV)",
            Some(libc::EACCES) | Some(libc::EPERM) => " (serving a block device needs root)",
            Some(libc::EINVAL) => " (for --reattach: the size and mode must be the first server's)",
            Some(libc::ENODEV) => " (nothing to reattach to: start without --reattach)",
            _ => "",
        };
        Error::Device(format!("{}: {what}: {e}{hint}", ctl.display()))
    }

    /// This error, from opening a layer the image `child` named.
    pub fn in_layer_of(self, child: &Path) -> Error {
        match self {
            Error::InLayer { .. } | Error::Refused { .. } => self,
            e => Error::InLayer { child: child.to_path_buf(), source: Box::new(e) },
        }
    }

    /// The errno to hand to the kernel when this error ends a block request.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            Error::InLayer { source, .. } => source.errno(),
            Error::Errno(source) => source.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EIO,
        }
    }
}
