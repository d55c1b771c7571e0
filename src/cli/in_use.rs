//! Whether a device is in use (its mounts, from the device numbers in sysfs) and whether a
//! server process is gone: what `detach` checks for both transports.

use super::transport::Dev;
use std::path::PathBuf;

/// "major:minor" of the device and each of its partitions, from sysfs.
fn device_numbers(dev: Dev) -> Vec<(String, String)> {
    let disk = dev.name();
    let base = PathBuf::from(format!("/sys/block/{disk}"));
    let mut out = Vec::new();
    if let Ok(d) = std::fs::read_to_string(base.join("dev")) {
        out.push((d.trim().to_string(), format!("/dev/{disk}")));
    }
    for e in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(&format!("{disk}p")) {
            if let Ok(d) = std::fs::read_to_string(e.path().join("dev")) {
                out.push((d.trim().to_string(), format!("/dev/{name}")));
            }
        }
    }
    out
}

/// The device's (and its partitions') mounts in this namespace, named, if any.
pub fn mounts(dev: Dev) -> Option<String> {
    let numbers = device_numbers(dev);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let (devno, point) = (f.get(2)?, f.get(4)?);
            let (_, name) = numbers.iter().find(|(d, _)| d == devno)?;
            Some(format!("{name} is mounted on {point}"))
        })
        .collect();
    (!mounts.is_empty()).then(|| mounts.join(", "))
}

/// True once `pid` has exited (a zombie counts as exited).
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}
