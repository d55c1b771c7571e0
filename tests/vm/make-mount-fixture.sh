#!/bin/bash
# The disk of the mount scenario (issue 20), as a qcow2, GPT:
#   p1 ext4 "root", p2 vfat "ESP", p3 a LUKS header (reported, not mounted),
#   p4 an LVM physical volume of group vg0 with two ext4 volumes, home (linear) and data (two
#      segments with a hole between), written by make-lvm-pv.py as no loop device or
#      device-mapper is usable here,
#   p5 XFS "xfsdata" (populated from a protofile: mkfs.xfs -p).
# OUT.sha256 lists every file's checksum by its path under the mount folder (p1-root/etc/motd,
# vg0-home/...): the oracle is the files themselves, not anything vdmount reads.
# Usage: make-mount-fixture.sh OUT.qcow2 OUT.sha256
# (needs sfdisk, mkfs.ext4, mkfs.vfat, mcopy, mkfs.xfs, python3, qemu-img).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$1 SUMS=$2
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
# One tree per filesystem, named as vdmount names its folder.
mk() { mkdir -p "$W/tree/$1/$(dirname "$2")"; if [ "$3" = random ]; then head -c "$4" /dev/urandom; else echo "$3"; fi >"$W/tree/$1/$2"; }
mk p1-root etc/motd "inside the root filesystem"
mk p1-root home/user/data.bin random 300000
mk p2-ESP EFI/BOOT/NOTE.TXT "on the ESP"
mk p2-ESP BLOB.BIN random 70000
mk vg0-home user/notes.txt "in the home logical volume"
mk vg0-home user/big.bin random 2000000
mk vg0-data log/app.log "in the data logical volume"
mk vg0-data spread.bin random 7000000
mk p5-xfsdata readme "on XFS"
mk p5-xfsdata sub/dir/blob random 500000
(cd "$W/tree" && find . -type f | sed 's#^\./##' | sort | xargs sha256sum) >"$SUMS"

mkfs.ext4 -q -F -L root -d "$W/tree/p1-root" "$W/root.img" 24M >/dev/null
mkfs.vfat -C -n ESP "$W/esp.img" 8192 >/dev/null
(cd "$W/tree/p2-ESP" && mcopy -s -i "$W/esp.img" ./* ::/)
# The two logical volumes; data spreads past its first segment (6 of 10 extents).
mkfs.ext4 -q -F -L home -d "$W/tree/vg0-home" "$W/home.img" 12M >/dev/null
mkfs.ext4 -q -F -L data -d "$W/tree/vg0-data" "$W/data.img" 10M >/dev/null
# mkfs.xfs makes filesystems under 300 MB only for fstests, which it recognises by these.
{
	echo /dev/null; echo 0 0; echo 'd--755 0 0'
	proto() { # dir depth
		local e n
		for e in "$1"/*; do
			n=$(basename "$e")
			if [ -d "$e" ]; then echo "$n d--755 0 0"; proto "$e"; echo '$'
			else echo "$n ---644 0 0 $e"; fi
		done
	}
	proto "$W/tree/p5-xfsdata"; echo '$'
} >"$W/xfs.proto"
truncate -s 64M "$W/xfs.img"
TEST_DIR=1 TEST_DEV=1 QA_CHECK_FS=1 mkfs.xfs -q -f -L xfsdata -p "$W/xfs.proto" "$W/xfs.img"

truncate -s 160M "$W/disk.raw"
sfdisk -q "$W/disk.raw" <<'T'
label: gpt
start=2048, size=49152, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root
start=51200, size=16384, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp
start=67584, size=8192, type=CA7D7CCB-63ED-4C53-861C-1742536059CC, name=secret
start=75776, size=81920, type=E6D6D379-F507-44C2-A23C-238F2A3DF928, name=pv
start=157696, size=131072, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=xfs
T
dd if="$W/root.img" of="$W/disk.raw" bs=512 seek=2048 conv=notrunc status=none
dd if="$W/esp.img" of="$W/disk.raw" bs=512 seek=51200 conv=notrunc status=none
dd if="$W/xfs.img" of="$W/disk.raw" bs=512 seek=157696 conv=notrunc status=none
# A LUKS2 magic: what vdmount must report, not mount.
printf 'LUKS\272\276\000\002' | dd of="$W/disk.raw" bs=512 seek=67584 conv=notrunc status=none
python3 "$HERE/make-lvm-pv.py" "$W/disk.raw" $((75776 * 512)) $((81920 * 512)) vg0 \
	home="$W/home.img" data="$W/data.img",6
qemu-img convert -q -f raw -O qcow2 "$W/disk.raw" "$OUT"
