//! Once a device is set up: wait until /dev/abuseN (or /dev/ublkbN) and each of its partitions exist, then tell the
//! user what appeared and how to mount it. Partitions are read from the image itself, so we
//! know which nodes to wait for instead of sleeping and hoping.

use super::human;
use super::transport::Dev;
use crate::formats::DiskImage;
use crate::inspect::mount_options::{plan, Plan};
use crate::inspect::partitions::{self, Partition};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long the kernel gets to create the device and partition nodes.
const NODE_WAIT: Duration = Duration::from_secs(10);

/// Waits for the nodes; false if they did not all appear in time (or `alive` said the server died).
pub fn wait_for_nodes(dev: Dev, parts: &[Partition], alive: &mut dyn FnMut() -> bool) -> bool {
    let start = Instant::now();
    let name = dev.name();
    loop {
        let disk_ok = dev.path().exists();
        let parts_ok = parts.iter().all(|p| {
            Path::new(&format!("/dev/{name}p{}", p.number)).exists()
                && Path::new(&format!("/sys/block/{name}/{name}p{}", p.number)).exists()
        });
        if disk_ok && parts_ok {
            return true;
        }
        if start.elapsed() > NODE_WAIT || !alive() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn read_partitions(disk: &dyn DiskImage) -> Vec<Partition> {
    partitions::read_table(disk).unwrap_or_default()
}

/// The lines printed when a device is up: the device, each partition, the mount line.
pub fn describe(dev: Dev, image: &Path, disk: &dyn DiskImage, writable: bool, pid: u32, parts: &[Partition]) -> String {
    let info = disk.info();
    let mode = if writable { "copy-on-write" } else { "read-only" };
    let name = dev.name();
    let mut out = format!(
        "/dev/{name}: {} ({}, {}, {mode}), served by pid {pid}\n",
        image.display(),
        info.format,
        human(disk.virtual_size())
    );
    for p in parts {
        let fs = match (&p.filesystem, &p.label) {
            (Some(fs), Some(l)) => format!("{fs} \"{l}\""),
            (Some(fs), None) => fs.clone(),
            _ => "-".into(),
        };
        out += &format!(
            "  /dev/{name}p{:<3} start {:>12}  size {:>10}  {:<28} {fs}\n",
            p.number,
            p.start,
            human(p.size),
            p.kind
        );
    }
    let ro = if writable { "" } else { "-o ro " };
    let mountable = |p: &&Partition| matches!(plan(p.filesystem.as_deref(), "", !writable), Plan::Mount { .. });
    let target = parts.iter().find(mountable);
    match target {
        Some(p) => out += &format!("mount:  mount {ro}/dev/{name}p{} /mnt\n", p.number),
        None if parts.is_empty() => out += &format!("mount:  mount {ro}/dev/{name} /mnt\n"),
        None => {}
    }
    out += &format!("detach: vdmount detach /dev/{name}\n");
    out
}
