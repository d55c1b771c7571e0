//! What a running server leaves in /run/vdmount/abuseN (or ublkbN): the image it serves, its mode and pid,
//! so `list` can name the image, `detach` finds the server, and `--reattach` checks that the
//! new server serves the same image the old one did.
//!
//! A record lives as long as its device: it is written when a server sets the device up and
//! stays while the device serves or waits for a new server (a dead server's record is what
//! `--reattach /dev/abuseN` reads). The sandboxed server cannot delete files, so a record is
//! removed by whoever finds its device free: `detach`, `list`, or the next server's `save`.
//!
//! Every value is escaped (see `escape`), so a file name holding a newline cannot add lines.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use super::transport::Dev;

const DIR: &str = "/run/vdmount";

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    pub dev: Dev,
    pub image: PathBuf,
    /// "read-only", "cow" or "cow=FILE".
    pub mode: String,
    pub pid: u32,
    /// Folders the server was allowed to open backing files in.
    pub allow_dirs: Vec<PathBuf>,
    /// The server was allowed to open backing files anywhere.
    pub allow_any_path: bool,
}

fn name(dev: Dev) -> String {
    dev.name()
}

pub fn log_path(dev: Dev) -> PathBuf {
    Path::new(DIR).join(format!("{}.log", dev.name()))
}

/// Percent-escapes control characters, '%', '\\' and non-ASCII bytes: the result is one line
/// of printable ASCII that `unescape` turns back into exactly the same bytes.
fn escape(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for &b in raw {
        if !(0x20..0x7f).contains(&b) || b == b'%' || b == b'\\' {
            out += &format!("%{b:02X}");
        } else {
            out.push(b as char);
        }
    }
    out
}

fn unescape(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

fn encode(r: &Record) -> String {
    let mut text = format!(
        "image={}\nmode={}\npid={}\n",
        escape(r.image.as_os_str().as_bytes()),
        escape(r.mode.as_bytes()),
        r.pid
    );
    for d in &r.allow_dirs {
        text += &format!("allow_dir={}\n", escape(d.as_os_str().as_bytes()));
    }
    if r.allow_any_path {
        text += "allow_any_path=1\n";
    }
    text
}

fn decode(dev: Dev, text: &str) -> Option<Record> {
    let values = |k: &'static str| text.lines().filter_map(move |l| l.strip_prefix(k)?.strip_prefix('='));
    let path = |v: &str| unescape(v).map(|b| PathBuf::from(OsString::from_vec(b)));
    Some(Record {
        dev,
        image: path(values("image").next()?)?,
        mode: String::from_utf8(unescape(values("mode").next()?)?).ok()?,
        pid: values("pid").next()?.parse().ok()?,
        allow_dirs: values("allow_dir").map(path).collect::<Option<_>>()?,
        allow_any_path: values("allow_any_path").any(|v| v == "1"),
    })
}

fn c_name(name: &str) -> CString {
    CString::new(name).expect("record names have no NUL")
}

/// /run/vdmount, made 0755 if missing, opened without following a symlink, and used only if
/// it is a folder we own that no one else can write to (else someone could plant or swap our
/// records and logs).
fn open_dir(dir: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let c = CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: a path string; the descriptor returned is ours.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR) {
            std::io::Error::other(format!("{}: is a symbolic link or not a folder; remove it", dir.display()))
        } else {
            e
        });
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let meta = File::from(fd.try_clone()?).metadata()?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(std::io::Error::other(format!(
            "{}: is owned by uid {}, not by us (uid {me}); remove it",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o7777 != 0o755 {
        // SAFETY: fchmod on the folder we just opened and own.
        if unsafe { libc::fchmod(fd.as_raw_fd(), 0o755) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(fd)
}

/// Opens `name` in the folder, never through a symlink; `create` makes a new file only.
fn open_in(dir: &OwnedFd, name: &str, flags: i32, mode: libc::mode_t) -> std::io::Result<File> {
    let c = c_name(name);
    // SAFETY: a path relative to our folder's descriptor; the descriptor returned is ours.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other(format!("{name}: not a regular file")));
    }
    Ok(file)
}

/// Writes the record atomically (a new temporary file renamed over the old record), so a
/// reader sees the old record or the new one, never half of one.
fn save_in(dir: &Path, r: &Record) -> std::io::Result<()> {
    let d = open_dir(dir)?;
    let tmp = format!(".{}.{}.tmp", name(r.dev), std::process::id());
    // A temporary left by a crashed vdmount with the same pid would block O_EXCL.
    // SAFETY: unlinkat relative to our folder's descriptor.
    unsafe { libc::unlinkat(d.as_raw_fd(), c_name(&tmp).as_ptr(), 0) };
    let written = open_in(&d, &tmp, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o644).and_then(|mut f| {
        f.write_all(encode(r).as_bytes())?;
        f.sync_all()
    });
    // SAFETY: renameat/unlinkat relative to our folder's descriptor.
    let renamed = written.and_then(|()| {
        match unsafe {
            libc::renameat(d.as_raw_fd(), c_name(&tmp).as_ptr(), d.as_raw_fd(), c_name(&name(r.dev)).as_ptr())
        } {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    });
    if renamed.is_err() {
        // SAFETY: as above.
        unsafe { libc::unlinkat(d.as_raw_fd(), c_name(&tmp).as_ptr(), 0) };
    }
    renamed
}

fn load_in(dir: &Path, dev: Dev) -> Option<Record> {
    let d = open_dir(dir).ok()?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut open_in(&d, &name(dev), libc::O_RDONLY | libc::O_NONBLOCK, 0).ok()?, &mut text)
        .ok()?;
    decode(dev, &text)
}

/// Writes the record; failing to is not fatal (a read-only /run only loses `list`'s image
/// name), but is reported.
pub fn save(r: &Record) {
    if let Err(e) = save_in(Path::new(DIR), r) {
        eprintln!("vdmount: warning: cannot write the record {DIR}/{}: {e}", name(r.dev));
    }
}

pub fn load(dev: Dev) -> Option<Record> {
    load_in(Path::new(DIR), dev)
}

pub fn remove(dev: Dev) {
    let Ok(d) = open_dir(Path::new(DIR)) else { return };
    // SAFETY: unlinkat relative to our folder's descriptor.
    unsafe { libc::unlinkat(d.as_raw_fd(), c_name(&name(dev)).as_ptr(), 0) };
}

/// The server's log, /run/vdmount/abuseN.log: appended to, 0600, never through a symlink
/// planted at its name.
pub fn open_log(dev: Dev) -> std::io::Result<File> {
    let d = open_dir(Path::new(DIR))?;
    let log = open_in(
        &d,
        &format!("{}.log", dev.name()),
        libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_NONBLOCK,
        0o600,
    )?;
    // A log left by an older vdmount may be 0644.
    // SAFETY: fchmod on the file we just opened.
    unsafe { libc::fchmod(log.as_raw_fd(), 0o600) };
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn hostile() -> Record {
        Record {
            dev: Dev::abuse(3),
            image: PathBuf::from("/evidence/a\nmode=cow\npid=1\n%41\\x\u{7f}é.qcow2"),
            mode: "cow=/tmp/o\nmode=read-only\r.qcow2".into(),
            pid: 4242,
            allow_dirs: vec![
                PathBuf::from("/mnt/x\nallow_any_path=1"),
                PathBuf::from(OsStr::from_bytes(b"/raw\xff\x00dir")),
            ],
            allow_any_path: false,
        }
    }

    #[test]
    fn hostile_names_round_trip_and_forge_no_line() {
        let r = hostile();
        let text = encode(&r);
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.lines().all(|l| l.bytes().all(|b| (0x20..0x7f).contains(&b))), "{text}");
        assert_eq!(decode(Dev::abuse(3), &text), Some(r));
    }

    #[test]
    fn old_records_load_with_empty_allow_fields() {
        let r = decode(Dev::abuse(0), "image=/a b.qcow2\nmode=read-only\npid=7\n").unwrap();
        assert_eq!(
            r,
            Record {
                dev: Dev::abuse(0),
                image: "/a b.qcow2".into(),
                mode: "read-only".into(),
                pid: 7,
                ..Default::default()
            }
        );
        let any = Record { allow_any_path: true, ..r.clone() };
        assert_eq!(decode(Dev::abuse(0), &encode(&any)), Some(any));
        assert_eq!(decode(Dev::abuse(0), "image=%4\nmode=cow\npid=1\n"), None, "a cut escape");
    }

    #[test]
    fn saved_atomically_in_a_private_folder() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("run");
        let r = hostile();
        save_in(&dir, &r).unwrap();
        assert_eq!(load_in(&dir, Dev::abuse(3)), Some(r.clone()));
        let again = Record { pid: 5, ..r };
        save_in(&dir, &again).unwrap();
        assert_eq!(load_in(&dir, Dev::abuse(3)), Some(again.clone()));
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![OsString::from("abuse3")], "a temporary file was left");
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o7777, 0o755);
        // A loose mode is tightened; a symlink in place of the folder is refused.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        save_in(&dir, &again).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o7777, 0o755);
        let link = top.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(save_in(&link, &again).is_err());
        assert_eq!(load_in(&link, Dev::abuse(3)), None);
        // A symlink planted at the record's name is replaced, not followed.
        let target = top.path().join("precious");
        std::fs::write(&target, "keep").unwrap();
        std::fs::remove_file(dir.join("abuse3")).unwrap();
        std::os::unix::fs::symlink(&target, dir.join("abuse3")).unwrap();
        assert_eq!(load_in(&dir, Dev::abuse(3)), None, "a record read through a symlink");
        save_in(&dir, &again).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(load_in(&dir, Dev::abuse(3)), Some(again));
    }
}
