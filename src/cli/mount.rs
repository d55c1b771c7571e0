//! `vdmount mount IMAGE DIR`: attach IMAGE (read-only unless --cow), then mount every filesystem
//! on it under DIR, one folder each (DIR/p1-root, ...), with options that never write to a
//! read-only device; what cannot be mounted is listed with the reason. `vdmount umount DIR`
//! undoes it: unmounts what is mounted from vdmount devices under DIR, removes the folders it
//! made, and detaches the devices.

use super::detach::{self, DetachArgs};
use super::harden::unescape;
use super::mount_lvm::{activate, deactivate, dev_below, PvPlace, Volume};
use super::serve;
use super::serve_args::ServeArgs;
use super::transport::TransportChoice;
use super::ImageArgs;
use crate::error::{Error, Result};
use crate::inspect::mount_options::{plan, Plan};
use crate::inspect::partitions::{probe_filesystem, read_table};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct MountArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// The folder to mount under (made if missing): one folder per filesystem, named after its
    /// partition and label (DIR/p1-root).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Mount read-write, with writes kept in an overlay (as `vdmount --cow`; --cow=FILE keeps them
    /// in a qcow2 file).
    #[arg(long, value_name = "FILE", num_args = 0..=1, require_equals = true)]
    pub cow: Option<Option<PathBuf>>,
    /// The kernel transport, as for serving (auto, abuse, ublk).
    #[arg(long, value_enum, value_name = "KIND", default_value_t = TransportChoice::Auto)]
    pub transport: TransportChoice,
    /// Print what was mounted where as JSON (one object per partition or disk).
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct UmountArgs {
    /// The folder given to `vdmount mount`.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// A partition, the whole disk or a logical volume: where a filesystem may be.
struct Target {
    node: String,
    /// Its folder's prefix: p1, disk, vg0-home.
    short: String,
    fs: Option<String>,
    label: Option<String>,
    /// Where it lies in the image (partitions and the whole disk).
    start: u64,
    size: u64,
    /// A logical volume: its name is its folder's, without the label.
    volume: bool,
}

/// One filesystem found, and what became of it.
struct Outcome {
    node: String,
    fs: Option<String>,
    label: Option<String>,
    mountpoint: Option<PathBuf>,
    /// "mounted as FSTYPE with OPTIONS", or why not.
    status: String,
}

pub fn run(args: &MountArgs) -> Result<()> {
    let disk = args.image.open()?;
    let serve_args = ServeArgs {
        image: Some(args.image.clone()),
        cow: args.cow.clone(),
        transport: args.transport,
        quiet: true,
        ..Default::default()
    };
    let dev = serve::attach(&serve_args)?
        .ok_or_else(|| Error::Device("the device did not come up; see vdmount list".into()))?;
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| Error::Device(format!("{}: cannot make the folder: {e}", args.dir.display())))?;
    let read_only = args.cow.is_none();
    // The partitions, or a filesystem on the whole disk.
    let parts = read_table(disk.as_ref()).unwrap_or_default();
    let mut targets: Vec<Target> = if parts.is_empty() {
        let (fs, label) = probe_filesystem(disk.as_ref(), 0);
        vec![Target {
            node: dev.path().display().to_string(),
            short: "disk".into(),
            fs,
            label,
            start: 0,
            size: disk.virtual_size(),
            volume: false,
        }]
    } else {
        parts
            .iter()
            .map(|p| Target {
                node: format!("/dev/{}p{}", dev.name(), p.number),
                short: format!("p{}", p.number),
                fs: p.filesystem.clone(),
                label: p.label.clone(),
                start: p.start,
                size: p.size,
                volume: false,
            })
            .collect()
    };
    // LVM physical volumes: their logical volumes become targets too, mapped by us.
    let places: Vec<PvPlace> = targets
        .iter()
        .filter(|t| t.fs.as_deref() == Some("LVM2_member"))
        .map(|t| PvPlace { node: t.node.clone(), start: t.start, size: t.size })
        .collect();
    let mut lvm_outcomes = Vec::new();
    for v in activate(disk.as_ref(), &dev, &places, read_only) {
        match v {
            Volume::Ready { node, short, fs, label } => {
                targets.push(Target { node, short, fs, label, start: 0, size: 0, volume: true })
            }
            Volume::Failed { what, why } => {
                lvm_outcomes.push(Outcome { node: what, fs: None, label: None, mountpoint: None, status: why })
            }
        }
    }
    let mut outcomes: Vec<Outcome> = targets
        .into_iter()
        .map(|Target { node, short, fs, label, volume, .. }| {
            let mut o = Outcome { node, fs, label, mountpoint: None, status: String::new() };
            match plan(o.fs.as_deref(), &o.node, read_only) {
                Plan::Skip(why) => o.status = why,
                Plan::Mount { fstype, options } => {
                    let suffix = if volume { None } else { o.label.as_deref().or(o.fs.as_deref()) };
                    let name = folder_name(&short, suffix);
                    let point = args.dir.join(name);
                    match mount(&o.node, &point, fstype, options, read_only) {
                        Ok(()) => {
                            o.status = format!("mounted as {fstype} with {options}");
                            o.mountpoint = Some(point);
                        }
                        Err(e) => o.status = format!("not mounted: {e}"),
                    }
                }
            }
            o
        })
        .collect();
    outcomes.extend(lvm_outcomes);
    if args.json {
        println!("{}", json(&dev.path().display().to_string(), &outcomes));
    } else {
        println!("{}: {}", dev.path().display(), args.image.image.display());
        for o in &outcomes {
            let fs = o.fs.as_deref().unwrap_or("-");
            let label = o.label.as_deref().map(|l| format!(" \"{l}\"")).unwrap_or_default();
            match &o.mountpoint {
                Some(p) => println!("  {:<16} {fs}{label} on {} ({})", o.node, p.display(), o.status),
                None => println!("  {:<16} {fs}{label}: {}", o.node, o.status),
            }
        }
        println!("undo: vdmount umount {}", args.dir.display());
    }
    Ok(())
}

/// "p1-root": the partition and its label (or filesystem), in characters safe in a file name.
fn folder_name(short: &str, label: Option<&str>) -> String {
    let label: String = label
        .unwrap_or("")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
        .take(64)
        .collect();
    if label.is_empty() {
        short.to_string()
    } else {
        format!("{short}-{label}")
    }
}

/// Makes `point` and mounts `node` there; nodev and nosuid always (the image is not trusted).
fn mount(node: &str, point: &Path, fstype: &str, options: &str, read_only: bool) -> std::io::Result<()> {
    std::fs::create_dir_all(point)?;
    let c = |s: &[u8]| CString::new(s).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL));
    // "ro" and "rw" are flags, not options the filesystem parses (vfat refuses them).
    let fs_options: Vec<&str> = options.split(',').filter(|o| !matches!(*o, "ro" | "rw")).collect();
    let (src, dst, ty) = (c(node.as_bytes())?, c(point.as_os_str().as_bytes())?, c(fstype.as_bytes())?);
    let data = c(fs_options.join(",").as_bytes())?;
    let mut flags = libc::MS_NODEV | libc::MS_NOSUID;
    if read_only {
        flags |= libc::MS_RDONLY;
    }
    // SAFETY: NUL-terminated strings that live across the call.
    let r = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), ty.as_ptr(), flags, data.as_ptr().cast()) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        let _ = std::fs::remove_dir(point);
        return Err(e);
    }
    Ok(())
}

fn json(device: &str, outcomes: &[Outcome]) -> String {
    let s = |v: Option<&str>| v.map_or("null".to_string(), |v| serde_json::Value::from(v).to_string());
    let items: Vec<String> = outcomes
        .iter()
        .map(|o| {
            format!(
                "{{\"device\":{},\"node\":{},\"filesystem\":{},\"label\":{},\"mountpoint\":{},\"status\":{}}}",
                s(Some(device)),
                s(Some(&o.node)),
                s(o.fs.as_deref()),
                s(o.label.as_deref()),
                s(o.mountpoint.as_ref().map(|p| p.to_string_lossy()).as_deref()),
                s(Some(&o.status))
            )
        })
        .collect();
    format!("[{}]", items.join(",\n "))
}

/// `vdmount umount DIR`.
pub fn umount(args: &UmountArgs) -> Result<()> {
    let dir = std::fs::canonicalize(&args.dir).map_err(|e| Error::Usage(format!("{}: {e}", args.dir.display())))?;
    let mounts = vdmount_mounts_under(&dir);
    if mounts.is_empty() {
        return Err(Error::Usage(format!("{}: nothing vdmount mounted is mounted here", dir.display())));
    }
    let mut devices = Vec::new();
    // Deepest first, so nested mounts come off before their parents.
    let mut sorted = mounts;
    sorted.sort_by_key(|(_, point)| std::cmp::Reverse(point.as_os_str().len()));
    for (source, point) in &sorted {
        let c = CString::new(point.as_os_str().as_bytes()).map_err(|_| Error::Usage("bad mount point".into()))?;
        // SAFETY: a NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(Error::Device(format!(
                "{}: cannot unmount: {e} (see: fuser -vm {})",
                point.display(),
                point.display()
            )));
        }
        println!("unmounted {} ({source})", point.display());
        if point != &dir {
            let _ = std::fs::remove_dir(point);
        }
        if let Some(dev) = super::transport::Dev::parse(source).or_else(|| dev_below(source)) {
            if !devices.contains(&dev) {
                devices.push(dev);
            }
        }
    }
    for dev in devices {
        // Our device-mapper volumes hold the partitions open: they go first.
        for name in deactivate(&dev).map_err(|e| Error::Device(e.to_string()))? {
            println!("removed device-mapper {name}");
        }
        detach::run(&DetachArgs { device: dev.path().display().to_string(), lazy: false })?;
        println!("detached {}", dev.path().display());
    }
    Ok(())
}

/// (source, mount point) of every mount beneath `dir` from an abuse or ublk device, or a
/// device-mapper volume of ours over one.
fn vdmount_mounts_under(dir: &Path) -> Vec<(String, PathBuf)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let source = right.split(' ').nth(1)?;
            let point = PathBuf::from(unescape(left.split(' ').nth(4)?));
            let ours =
                source.starts_with("/dev/abuse") || source.starts_with("/dev/ublkb") || dev_below(source).is_some();
            (ours && point.starts_with(dir)).then(|| (source.to_string(), point))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn folder_names_are_safe() {
        assert_eq!(super::folder_name("p1", Some("root")), "p1-root");
        assert_eq!(super::folder_name("p2", Some("../etc x")), "p2-.._etc_x");
        assert_eq!(super::folder_name("p3", None), "p3");
    }
}
