//! Which files an image may name. Images come from strangers: a backing file called
//! "/etc/shadow", "../../x", or a symlink beside the image pointing out would otherwise serve a
//! host file as a disk. So every file an image names (backing file, data file, extent, parent)
//! must resolve beneath the folder of the image the user named, or beneath a folder given with
//! `--allow-dir`, and must be a regular file; `--allow-any-path` turns this off.
//!
//! The check is made on the opened file, not on its name, so nothing can swap the name between
//! check and use: the name is opened with O_PATH (no side effects: a FIFO does not block, a
//! device is not opened), the kernel says where that descriptor really is (/proc/self/fd), and
//! only a regular file beneath an allowed folder is then reopened for reading through the same
//! descriptor. Magic links (/proc/self/root/..., /proc/PID/fd/N) are refused outright.

use crate::error::{Error, Result};
use crate::source::file::ImageFile;
use crate::source::remote;
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Where the files an image names may be.
#[derive(Clone, Debug)]
pub struct Confinement {
    /// Folders (canonical) beneath which named files may lie: the top image's, then --allow-dir.
    roots: Vec<PathBuf>,
    /// --allow-any-path: follow names anywhere, as qemu does (regular files and block devices).
    any_path: bool,
    /// For a remote top image: the URL folders (its own, then --allow-dir URLs) names must stay
    /// beneath (remote/url.rs).
    urls: Vec<String>,
}

impl Confinement {
    /// The rules for the chain under `top`, the image the user named.
    pub fn new(top: &Path, allow_dirs: &[PathBuf], any_path: bool) -> Result<Confinement> {
        if let Some(url) = top.to_str().filter(|t| remote::is_url(t)) {
            let bad = |u: &str, e: String| Error::Usage(format!("{u}: {e}"));
            let mut urls = vec![remote::url::folder(url).map_err(|e| bad(url, e))?];
            for dir in allow_dirs.iter().filter_map(|d| d.to_str()).filter(|d| remote::is_url(d)) {
                let dir = if dir.ends_with('/') { dir.to_string() } else { format!("{dir}/") };
                urls.push(remote::url::folder(&dir).map_err(|e| bad(&dir, e))?);
            }
            return Ok(Confinement { roots: Vec::new(), any_path, urls });
        }
        let folder = match top.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut roots =
            vec![std::fs::canonicalize(folder).map_err(|e| Error::io(folder, "cannot resolve the image's folder", e))?];
        for dir in allow_dirs {
            let canonical =
                std::fs::canonicalize(dir).map_err(|e| Error::Usage(format!("--allow-dir {}: {e}", dir.display())))?;
            if !canonical.is_dir() {
                return Err(Error::Usage(format!("--allow-dir {}: not a folder", dir.display())));
            }
            roots.push(canonical);
        }
        Ok(Confinement { roots, any_path, urls: Vec::new() })
    }

    /// Opens the file `name` that the image `child` names as its `role` ("backing file",
    /// "external data file", ...); a relative name is taken from the child's folder.
    pub fn open(&self, child: &Path, name: &Path, role: &str) -> Result<ImageFile> {
        if let Some(url) = child.to_str().filter(|c| remote::is_url(c)) {
            return self.open_remote(child, url, name, role);
        }
        if name.to_str().is_some_and(remote::is_url) {
            return Err(Error::Refused {
                path: child.to_path_buf(),
                msg: format!(
                    "names its {role} \"{}\", a URL: a local image may not name a remote layer",
                    name.display()
                ),
            });
        }
        let path = resolve_beside(child, name);
        if self.any_path {
            return ImageFile::open(&path);
        }
        let named = || format!("names its {role} \"{}\"", name.display());
        let handle = open_path(&path).map_err(|e| {
            let why = if e.raw_os_error() == Some(libc::ELOOP) {
                "a symlink loop, or a link through /proc, which an image may not use".to_string()
            } else {
                e.to_string()
            };
            Error::Refused {
                path: child.to_path_buf(),
                msg: format!("{}, which cannot be opened as {}: {why}", named(), path.display()),
            }
        })?;
        let real = std::fs::read_link(format!("/proc/self/fd/{}", handle.as_raw_fd())).map_err(|e| Error::Refused {
            path: child.to_path_buf(),
            msg: format!(
                "{}: cannot tell where it leads ({e}; is /proc mounted?); pass --allow-any-path to follow it unchecked",
                named()
            ),
        })?;
        if !self.roots.iter().any(|r| real.starts_with(r)) {
            let folder = real.parent().unwrap_or(Path::new("/"));
            return Err(Error::Refused {
                path: child.to_path_buf(),
                msg: format!(
                    "{}, which resolves to {}, outside {}; vdmount opens only files beneath the image's folder: pass --allow-dir {} to allow that folder, or --allow-any-path",
                    named(),
                    real.display(),
                    self.describe_roots(),
                    folder.display()
                ),
            });
        }
        // fstat works on an O_PATH descriptor.
        let held = File::from(handle);
        let meta = held.metadata().map_err(|e| Error::io(&path, "cannot stat", e))?;
        if !meta.is_file() {
            return Err(Error::Refused {
                path: child.to_path_buf(),
                msg: format!(
                    "{}, which resolves to {}, {}, not a regular file; only the image named on the command line may be a device{}",
                    named(),
                    real.display(),
                    kind(&meta),
                    if meta.file_type().is_block_device() { " (--allow-any-path allows it)" } else { "" }
                ),
            });
        }
        // Reopening through the descriptor reads exactly the file that was checked.
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(format!("/proc/self/fd/{}", held.as_raw_fd()))
            .map_err(|e| Error::io(&path, "cannot open", e))?;
        ImageFile::from_file(&path, file)
    }

    /// `open`, but None when nothing is at the name (for readers that tell a missing file
    /// apart, as EWF segments): locally, nothing at the resolved path (a link leading outside
    /// is there, and refused by `open`); remotely, the open's own not-found answer, so the file
    /// costs one request, not a probe and an open.
    pub fn open_if_present(&self, child: &Path, name: &Path, role: &str) -> Result<Option<ImageFile>> {
        let path = resolve_beside(child, name);
        let remote = child.to_str().is_some_and(remote::is_url) && path.to_str().is_some_and(remote::is_url);
        if !remote {
            if path.symlink_metadata().is_err() {
                return Ok(None);
            }
            return self.open(child, name, role).map(Some);
        }
        let target = path.to_str().unwrap_or_default();
        if !self.any_path && !remote::url::beneath(target, &self.urls) {
            // Refused by open, with no request leaving the folders.
            return self.open(child, name, role).map(Some);
        }
        ImageFile::open_url_if_present(target)
    }

    /// The names of the files beside `child`, for readers that must look at each (a differencing
    /// VDI names its parent only by UUID): the entries of a local folder; for a URL, the server's
    /// listing of its folder (remote/listing.rs), which may not exist: then why not. Each name
    /// is still to be opened with `open`, which confines it.
    pub fn list_beside(&self, child: &Path) -> std::result::Result<Vec<OsString>, String> {
        if let Some(url) = child.to_str().filter(|c| remote::is_url(c)) {
            return Ok(remote::list_folder(url)?.into_iter().map(OsString::from).collect());
        }
        let folder = match child.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let entries = std::fs::read_dir(folder).map_err(|e| e.to_string())?;
        Ok(entries.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
    }

    /// Opens `name` as the remote image `url` names it: resolved against `url`, beneath the
    /// allowed URL folders unless --allow-any-path, never a local path.
    fn open_remote(&self, child: &Path, url: &str, name: &Path, role: &str) -> Result<ImageFile> {
        let named = format!("names its {role} \"{}\"", name.display());
        let refused = |msg: String| Error::Refused { path: child.to_path_buf(), msg };
        let text = name.to_str().ok_or_else(|| refused(format!("{named}, which is not UTF-8")))?;
        let target = remote::url::resolve(url, text).map_err(|e| refused(format!("{named}, {e}")))?;
        if !self.any_path && !remote::url::beneath(&target, &self.urls) {
            return Err(refused(format!(
                "{named}, which resolves to {target}, outside {}; pass --allow-dir URL to allow that folder, or --allow-any-path",
                self.urls.join(" and ")
            )));
        }
        ImageFile::open_url(&target)
    }

    fn describe_roots(&self) -> String {
        let mut names = vec![format!("{} (the image's folder)", self.roots[0].display())];
        names.extend(self.roots[1..].iter().map(|r| format!("{} (--allow-dir)", r.display())));
        names.join(" and ")
    }
}

/// `name` resolved relative to the folder holding `child` (absolute names stay as they are);
/// for a remote `child`, the URL beside it.
pub fn resolve_beside(child: &Path, name: &Path) -> PathBuf {
    if let (Some(url), Some(n)) = (child.to_str().filter(|c| remote::is_url(c)), name.to_str()) {
        if let Ok(u) = remote::url::resolve(url, n) {
            return PathBuf::from(u);
        }
    }
    if name.is_absolute() {
        return name.to_path_buf();
    }
    match child.parent() {
        Some(dir) => dir.join(name),
        None => name.to_path_buf(),
    }
}

/// Opens `path` with O_PATH, refusing magic links (openat2's RESOLVE_NO_MAGICLINKS; kernels
/// before 5.6 lack openat2, and get a plain O_PATH open, still checked by where it leads).
fn open_path(path: &Path) -> std::io::Result<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain integers; all zero is its "nothing asked" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: a valid C string and an open_how of the size given.
    let fd = unsafe {
        libc::syscall(libc::SYS_openat2, libc::AT_FDCWD, c.as_ptr(), &how, std::mem::size_of::<libc::open_how>())
    };
    let fd = if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        // SAFETY: as above.
        unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) as libc::c_long }
    } else {
        fd
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just gave us, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a folder"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}
