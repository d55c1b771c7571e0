//! How `vdmount mount` mounts each filesystem it finds. Read-only means more than `ro`: ext3/4
//! and XFS replay their journal on mount and btrfs its log tree, which writes to the device (and
//! fails on a read-only one), so those are told not to (`noload`, `norecovery`,
//! `rescue=nologreplay`). What cannot be mounted says why, and what to do instead.

/// How to mount a filesystem found on a partition, or why not.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// `mount -t fstype -o options`.
    Mount { fstype: &'static str, options: &'static str },
    /// Not mounted: why, and what the user can run instead.
    Skip(String),
}

/// The plan for filesystem `fs` (as `partitions::probe_filesystem` names it) on `node`.
pub fn plan(fs: Option<&str>, node: &str, read_only: bool) -> Plan {
    let mount = |fstype, ro_options, rw_options| Plan::Mount {
        fstype,
        options: if read_only { ro_options } else { rw_options },
    };
    match fs {
        Some("ext2" | "ext3" | "ext4") => mount("ext4", "ro,noload", "rw"),
        Some("xfs") => mount("xfs", "ro,norecovery", "rw"),
        Some("btrfs") => mount("btrfs", "ro,rescue=nologreplay", "rw"),
        Some("ntfs") => mount("ntfs3", "ro", "rw"),
        Some("vfat") => mount("vfat", "ro", "rw"),
        Some("exfat") => mount("exfat", "ro", "rw"),
        Some("crypto_LUKS") => Plan::Skip(format!(
            "encrypted (LUKS): open it read-only with: cryptsetup open --readonly {node} NAME, then mount /dev/mapper/NAME"
        )),
        Some("BitLocker") => Plan::Skip(format!(
            "encrypted (BitLocker): open it read-only with: cryptsetup open --type bitlk --readonly {node} NAME, then mount /dev/mapper/NAME"
        )),
        Some("LVM2_member") => Plan::Skip("an LVM physical volume: its logical volumes are mapped and listed apart".into()),
        Some("swap") => Plan::Skip("swap space: nothing to mount".into()),
        Some(other) => Plan::Skip(format!("{other}: not a filesystem vdmount mounts")),
        None => Plan::Skip("no filesystem vdmount recognises".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_mounts_never_replay_a_journal() {
        assert_eq!(plan(Some("ext3"), "/dev/x", true), Plan::Mount { fstype: "ext4", options: "ro,noload" });
        assert_eq!(plan(Some("xfs"), "/dev/x", true), Plan::Mount { fstype: "xfs", options: "ro,norecovery" });
        assert_eq!(
            plan(Some("btrfs"), "/dev/x", true),
            Plan::Mount { fstype: "btrfs", options: "ro,rescue=nologreplay" }
        );
        assert_eq!(plan(Some("ext4"), "/dev/x", false), Plan::Mount { fstype: "ext4", options: "rw" });
        let Plan::Skip(why) = plan(Some("crypto_LUKS"), "/dev/abuse0p3", true) else { panic!("LUKS mounted") };
        assert!(why.contains("cryptsetup open --readonly /dev/abuse0p3"), "{why}");
        assert!(matches!(plan(None, "/dev/x", true), Plan::Skip(_)));
    }
}
