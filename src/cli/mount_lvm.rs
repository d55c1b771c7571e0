//! The LVM part of `vdmount mount`: the physical volumes among the image's partitions, their
//! volume groups read by `inspect::lvm`, and each logical volume made a device-mapper device
//! of ours (`vdmount-abuse0-VG-LV`, read-only unless --cow) over the attached partitions. lvm
//! itself never runs, so the image is not written and a host group of the same name or UUID is
//! neither touched nor confused with the image's.

use super::dm;
use super::transport::Dev;
use crate::formats::DiskImage;
use crate::inspect::lvm::{dm_table, parse_vg, read_pv, VolumeGroup};
use crate::inspect::partitions::probe_filesystem;

/// A physical volume candidate: its node (/dev/abuse0p4), start and size in the image.
pub struct PvPlace {
    pub node: String,
    pub start: u64,
    pub size: u64,
}

/// What became of one logical volume.
pub enum Volume {
    /// Mapped at `node`; `short` names its folder (vg0-home).
    Ready { node: String, short: String, fs: Option<String>, label: Option<String> },
    /// Not mapped (or a PV whose metadata is unreadable): what it is, and why.
    Failed { what: String, why: String },
}

/// The prefix of the device-mapper names we give to the volumes of device `dev`.
pub fn dm_prefix(dev: &Dev) -> String {
    format!("vdmount-{}-", dev.name())
}

/// lvm's escaping: a dash inside a name is doubled, so "VG-LV" splits one way only.
fn escape(name: &str) -> String {
    name.replace('-', "--")
}

/// Maps every visible logical volume of every volume group on `places`.
pub fn activate(disk: &dyn DiskImage, dev: &Dev, places: &[PvPlace], read_only: bool) -> Vec<Volume> {
    let mut out = Vec::new();
    // (PV UUID, index into places) and the groups, newest metadata of each.
    let mut found: Vec<(String, usize)> = Vec::new();
    let mut groups: Vec<VolumeGroup> = Vec::new();
    for (i, p) in places.iter().enumerate() {
        let pv = match read_pv(disk, p.start, p.size) {
            Ok(pv) => pv,
            Err(why) => {
                out.push(Volume::Failed { what: p.node.clone(), why });
                continue;
            }
        };
        found.push((pv.uuid.clone(), i));
        match pv.metadata.and_then(|text| parse_vg(&text)) {
            Ok(vg) => match groups.iter_mut().find(|g| g.id == vg.id && g.name == vg.name) {
                Some(g) if g.seqno < vg.seqno => *g = vg,
                Some(_) => {}
                None => groups.push(vg),
            },
            // Another PV of the group may carry it; say so only if no group comes of it.
            Err(why) => out.push(Volume::Failed { what: p.node.clone(), why }),
        }
    }
    for vg in &groups {
        let device = |i: usize| {
            let uuid = &vg.pvs[i].uuid;
            let &(_, at) = found.iter().find(|(u, _)| u == uuid)?;
            Some((places[at].node.clone(), places[at].size / 512))
        };
        for lv in &vg.lvs {
            let short = format!("{}-{}", vg.name, lv.name);
            let what = format!("{}/{}", vg.name, lv.name);
            let table = match dm_table(vg, lv, &device) {
                Ok(t) => t,
                Err(why) => {
                    out.push(Volume::Failed { what, why: format!("not mapped: {why}") });
                    continue;
                }
            };
            let name = format!("{}{}-{}", dm_prefix(dev), escape(&vg.name), escape(&lv.name));
            match dm::create(&name, &table, read_only) {
                Ok(node) => {
                    // The filesystem is probed where the volume starts (its first stripe).
                    let first = lv.segments.as_ref().ok().and_then(|s| s.first()).map(|s| s.stripes[0]);
                    let (fs, label) = match first.and_then(|(pv, sector)| Some((device(pv)?, sector))) {
                        Some(((node, _), sector)) => {
                            let place = places.iter().find(|p| p.node == node).map_or(0, |p| p.start);
                            probe_filesystem(disk, place + sector * 512)
                        }
                        None => (None, None),
                    };
                    out.push(Volume::Ready { node: node.display().to_string(), short, fs, label });
                }
                Err(e) => out.push(Volume::Failed { what, why: format!("device-mapper {name}: {e}") }),
            }
        }
    }
    out
}

/// Removes every device-mapper device of ours over `dev`; returns what it removed.
pub fn deactivate(dev: &Dev) -> std::io::Result<Vec<String>> {
    let prefix = dm_prefix(dev);
    let mut removed = Vec::new();
    for (name, _) in dm::list().into_iter().filter(|(n, _)| n.starts_with(&prefix)) {
        dm::remove(&name).map_err(|e| std::io::Error::new(e.kind(), format!("device-mapper {name}: {e}")))?;
        removed.push(name);
    }
    Ok(removed)
}

/// The vdmount device beneath a device-mapper node of ours (/dev/dm-3 named vdmount-abuse0-...).
pub fn dev_below(node: &str) -> Option<Dev> {
    let block = node.strip_prefix("/dev/")?;
    let name = std::fs::read_to_string(format!("/sys/block/{block}/dm/name")).ok()?;
    let rest = name.trim_end().strip_prefix("vdmount-")?;
    Dev::parse(rest.split('-').next()?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_split_one_way() {
        assert_eq!(super::escape("my-vg"), "my--vg");
        assert_eq!(super::dm_prefix(&super::Dev::abuse(3)), "vdmount-abuse3-");
    }
}
