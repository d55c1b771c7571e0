#!/bin/sh
# Issue 20: `vdmount mount IMAGE DIR` mounts every filesystem of the image under DIR: ext4
# (noload), vfat, XFS (norecovery) and the two ext4 logical volumes of the image's LVM group vg0,
# mapped by vdmount itself under device-mapper names of its own; every file matches the
# checksum taken when the fixture was made; the LUKS partition is reported; lvm (run here as an
# independent reader) sees the same volumes; --json says the same; `vdmount umount DIR` leaves
# nothing mounted, no device-mapper device of ours and no device. Then again with a host volume
# group also named vg0 (with a volume home, so a device-mapper vg0-home) active: the image's
# volumes still mount and the host's are untouched. Then beside a host copy of the image's
# group itself (same names, same UUIDs), active. The image never changes.
set -e
fail() { echo "mount: $*"; cat /tmp/out 2>/dev/null; cat /run/vdmount/*.log 2>/dev/null; exit 1; }
insmod /abuse.ko max_part=15 || fail "insmod"
mkdir -p /run/lock/lvm /run/lvm /etc/lvm
before=$(sha256sum /fixtures/mount.qcow2 | cut -d' ' -f1)
# lvm without udev or a devices file, told that abuse devices may hold PVs (it skips block
# device types it does not know); the filter says which device it may look at.
lvmconf() {
	echo "activation { udev_sync = 0 udev_rules = 0 monitoring = 0 } backup { backup = 0 archive = 0 }"
	echo "devices { types = [ \"abuse\", 16 ] obtain_device_list_from_udev = 0 use_devicesfile = 0 filter = [ \"a|^$1\$|\", \"r|.*|\" ] }"
}
dmnode() { for n in /sys/block/dm-*/dm/name; do [ "$(cat "$n")" = "$1" ] && basename "${n%/dm/name}"; done; }
ours() { for n in /sys/block/dm-*/dm/name; do [ -e "$n" ] && cat "$n"; done | grep '^vdmount-' | sort || true; }

check_mounted() { # DIR
	d=$1
	grep -q "/dev/abuse0p1 .*ext4 \"root\" on $d/p1-root (mounted as ext4 with ro,noload)" /tmp/out || fail "p1 line"
	grep -q "/dev/abuse0p2 .*vfat \"ESP\" on $d/p2-ESP" /tmp/out || fail "p2 line"
	grep -q "/dev/abuse0p3 .*crypto_LUKS: encrypted (LUKS): open it read-only with: cryptsetup open --readonly /dev/abuse0p3" /tmp/out || fail "LUKS line"
	grep -q "/dev/abuse0p4 .*LVM2_member: an LVM physical volume" /tmp/out || fail "LVM line"
	grep -q "/dev/abuse0p5 .*xfs \"xfsdata\" on $d/p5-xfsdata (mounted as xfs with ro,norecovery)" /tmp/out || fail "XFS line"
	grep -q "/dev/dm-[0-9]* .*ext4 \"home\" on $d/vg0-home (mounted as ext4 with ro,noload)" /tmp/out || fail "vg0/home line"
	grep -q "/dev/dm-[0-9]* .*ext4 \"data\" on $d/vg0-data (mounted as ext4 with ro,noload)" /tmp/out || fail "vg0/data line"
	(cd "$d" && sha256sum -c /fixtures/mount.sha256) || fail "checksums"
	[ "$(cd "$d" && find . -type f | wc -l)" = "$(wc -l </fixtures/mount.sha256)" ] || fail "files beyond the list"
	for fs in "p1-root ext4" "p2-ESP vfat" "p5-xfsdata xfs" "vg0-home ext4" "vg0-data ext4"; do
		set -- $fs
		grep -q " $d/$1 $2 ro,nosuid,nodev" /proc/mounts || { cat /proc/mounts; fail "$1 mount flags"; }
	done
	[ "$(ours)" = "vdmount-abuse0-vg0-data
vdmount-abuse0-vg0-home" ] || fail "our device-mapper devices: $(ours)"
	for b in /sys/block/dm-*; do
		case "$(cat "$b/dm/name")" in vdmount-*) [ "$(cat "$b/ro")" = 1 ] || fail "$b is not read-only";; esac
	done
}

check_gone() { # DIR
	grep -q "$1" /proc/mounts && fail "something is still mounted under $1"
	[ -z "$(ours)" ] || fail "device-mapper devices left: $(ours)"
	i=0
	while [ -e /sys/block/abuse0 ]; do i=$((i + 1)); [ $i -le 100 ] || fail "/dev/abuse0 still there"; sleep 0.1; done
	[ ! -e "$1/p1-root" ] && [ ! -e "$1/vg0-home" ] || fail "mount folders were left behind"
}

mount_and_umount() { # DIR WHERE
	timeout 120 vdmount mount /fixtures/mount.qcow2 "$1" >/tmp/out 2>&1 || fail "vdmount mount $2"
	cat /tmp/out
	check_mounted "$1"
	timeout 60 vdmount umount "$1" >/tmp/out 2>&1 || fail "vdmount umount $2"
	check_gone "$1"
}

timeout 120 vdmount mount /fixtures/mount.qcow2 /tmp/m >/tmp/out 2>&1 || fail "vdmount mount"
cat /tmp/out
check_mounted /tmp/m
# lvm, reading the image's physical volume alone, finds the same volumes and segments.
timeout 60 /opt/bin/lvm lvs --readonly --config "$(lvmconf /dev/abuse0p4)" --noheadings --segments \
	-o vg_name,lv_name,seg_start_pe,seg_size_pe,seg_pe_ranges >/tmp/lvs 2>/tmp/lvs.err || { cat /tmp/lvs.err; fail "lvm lvs"; }
cat /tmp/lvs /tmp/lvs.err
[ -s /tmp/lvs ] || { /opt/bin/lvm pvs -a -vvvv --config "$(lvmconf /dev/abuse0p4)" 2>&1 | grep -i -E "abuse|filter|type" | head -40; }
tr -s ' ' </tmp/lvs | sed 's/^ //; s/ $//' >/tmp/lvs.n
printf '%s\n' "vg0 data 0 6 /dev/abuse0p4:12-17" "vg0 data 6 4 /dev/abuse0p4:19-22" "vg0 home 0 12 /dev/abuse0p4:0-11" |
	cmp - /tmp/lvs.n || fail "lvm sees other volumes"
# ... and vdmount's tables put them where lvm says: 1 MiB extents after a 1 MiB header.
/opt/bin/dmsetup table vdmount-abuse0-vg0-data >/tmp/table || fail "dmsetup table"
cat /tmp/table
grep -q "^0 12288 linear [0-9:]* $((2048 + 12 * 2048))$" /tmp/table || fail "data's first segment"
grep -q "^12288 8192 linear [0-9:]* $((2048 + 19 * 2048))$" /tmp/table || fail "data's second segment"
timeout 60 vdmount umount /tmp/m >/tmp/out 2>&1 || fail "vdmount umount"
cat /tmp/out
check_gone /tmp/m

vdmount mount --json /fixtures/mount.qcow2 /tmp/j >/tmp/out 2>&1 || fail "vdmount mount --json"
grep -q '"node":"/dev/abuse0p1","filesystem":"ext4","label":"root","mountpoint":"/tmp/j/p1-root"' /tmp/out || fail "--json p1"
grep -q '"node":"/dev/abuse0p3","filesystem":"crypto_LUKS","label":null,"mountpoint":null' /tmp/out || fail "--json p3"
grep -q '"filesystem":"ext4","label":"home","mountpoint":"/tmp/j/vg0-home"' /tmp/out || fail "--json vg0-home"
[ "$(grep -c '"node"' /tmp/out)" = 7 ] || fail "--json: not seven objects"
vdmount umount /tmp/j >/dev/null || fail "umount (json)"
check_gone /tmp/j

# A host volume group vg0 with a volume home, on a loop device: lvm's device-mapper name for it
# is vg0-home, the plain name vdmount must not take.
dd if=/dev/zero of=/tmp/host.img bs=1M count=16 2>/dev/null
losetup /dev/loop0 /tmp/host.img || fail "losetup"
LVM="$(lvmconf /dev/loop0)"
timeout 60 /opt/bin/lvm pvcreate -q --config "$LVM" /dev/loop0 >/dev/null || fail "pvcreate"
timeout 60 /opt/bin/lvm vgcreate -q --config "$LVM" vg0 /dev/loop0 >/dev/null || fail "vgcreate"
timeout 60 /opt/bin/lvm lvcreate -q --config "$LVM" -Wn -Zy -L 8M -n home vg0 >/dev/null || fail "lvcreate"
host=$(dmnode vg0-home)
[ -n "$host" ] || fail "no device-mapper vg0-home for the host's vg0/home"
hostuuid=$(cat /sys/block/$host/dm/uuid)
head -c 1048576 /dev/urandom >/tmp/host.data
dd if=/tmp/host.data of=/dev/$host bs=1M conv=fsync 2>/dev/null || fail "writing the host's volume"
mount_and_umount /tmp/h "beside the host's vg0"
# The host's group is as it was: same device, same UUID, same data, lvm still sees it.
[ "$(dmnode vg0-home)" = "$host" ] && [ "$(cat /sys/block/$host/dm/uuid)" = "$hostuuid" ] || fail "the host's vg0-home changed"
head -c 1048576 /dev/$host | cmp - /tmp/host.data || fail "the host's volume's data changed"
timeout 60 /opt/bin/lvm lvs --config "$LVM" --noheadings -o lv_name,lv_active vg0 >/tmp/lvs || fail "host lvs"
grep -q "home *active" /tmp/lvs || { cat /tmp/lvs; fail "the host's vg0/home is no longer active"; }
timeout 60 /opt/bin/lvm vgchange -q --config "$LVM" -an vg0 >/dev/null || fail "vgchange -an"
losetup -d /dev/loop0

# A host group with the same UUIDs: a copy of the image's own physical volume, active on the
# host as vg0 (lvm's device-mapper names vg0-home and vg0-data, with UUIDs made of the image's
# group and volume UUIDs). vdmount's devices carry no UUID, so nothing clashes.
vdmount /fixtures/mount.qcow2 >/tmp/attach 2>&1 || fail "attach to copy the physical volume"
dd if=/dev/abuse0p4 of=/tmp/clone.img bs=1M 2>/dev/null || fail "copying the physical volume"
vdmount detach /dev/abuse0 || fail "detach after the copy"
while [ -e /sys/block/abuse0 ]; do sleep 0.1; done
losetup /dev/loop1 /tmp/clone.img || fail "losetup clone"
LVM="$(lvmconf /dev/loop1)"
timeout 60 /opt/bin/lvm vgchange -q --config "$LVM" -ay vg0 >/dev/null || fail "activating the host's copy of vg0"
clone=$(sha256sum /tmp/clone.img | cut -d' ' -f1)
host=$(dmnode vg0-data)
[ -n "$host" ] || fail "no device-mapper vg0-data for the host's copy"
hostuuid=$(cat /sys/block/$host/dm/uuid)
case "$hostuuid" in LVM-*) ;; *) fail "the host's vg0-data has no lvm UUID: $hostuuid" ;; esac
mount_and_umount /tmp/u "beside a same-UUID vg0"
[ "$(dmnode vg0-data)" = "$host" ] && [ "$(cat /sys/block/$host/dm/uuid)" = "$hostuuid" ] || fail "the host's same-UUID vg0-data changed"
timeout 60 /opt/bin/lvm lvs --config "$LVM" --noheadings -o lv_name,lv_active vg0 >/tmp/lvs || fail "host lvs (same UUID)"
[ "$(grep -c 'active' /tmp/lvs)" = 2 ] || { cat /tmp/lvs; fail "the host's same-UUID volumes are no longer active"; }
timeout 60 /opt/bin/lvm vgchange -q --config "$LVM" -an vg0 >/dev/null || fail "vgchange -an (same UUID)"
losetup -d /dev/loop1
[ "$(sha256sum /tmp/clone.img | cut -d' ' -f1)" = "$clone" ] || fail "the host's copy changed"

[ "$(sha256sum /fixtures/mount.qcow2 | cut -d' ' -f1)" = "$before" ] || fail "the image changed"
rmmod abuse || fail "rmmod"
echo "mount: ok"
