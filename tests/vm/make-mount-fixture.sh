#!/bin/bash
# The disk of the mount scenario (issue 20), as a qcow2: GPT with an ext4 partition labelled
# "root" holding files, a vfat one labelled "ESP", a LUKS header and an LVM physical volume
# label (both only detected and reported), and a list of the files' checksums.
# Usage: make-mount-fixture.sh OUT.qcow2 OUT.sha256 (needs sfdisk, mkfs.ext4, mkfs.vfat).
set -euo pipefail
OUT=$1 SUMS=$2
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
mkdir -p "$W/tree/etc" "$W/tree/home/user"
echo "inside the root filesystem" >"$W/tree/etc/motd"
head -c 300000 /dev/urandom >"$W/tree/home/user/data.bin"
(cd "$W/tree" && find . -type f | sort | xargs sha256sum) >"$SUMS"
mkfs.ext4 -q -F -L root -d "$W/tree" "$W/root.img" 24M >/dev/null
mkfs.vfat -C -n ESP "$W/esp.img" 8192 >/dev/null
truncate -s 64M "$W/disk.raw"
sfdisk -q "$W/disk.raw" <<'T'
label: gpt
start=2048, size=49152, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root
start=51200, size=16384, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp
start=67584, size=8192, type=CA7D7CCB-63ED-4C53-861C-1742536059CC, name=secret
start=75776, size=8192, type=E6D6D379-F507-44C2-A23C-238F2A3DF928, name=pv
T
dd if="$W/root.img" of="$W/disk.raw" bs=512 seek=2048 conv=notrunc status=none
dd if="$W/esp.img" of="$W/disk.raw" bs=512 seek=51200 conv=notrunc status=none
# A LUKS2 magic and an LVM2 label: what vdmount must report, not mount.
printf 'LUKS\272\276\000\002' | dd of="$W/disk.raw" bs=512 seek=67584 conv=notrunc status=none
printf 'LABELONE' | dd of="$W/disk.raw" bs=512 seek=$((75776 + 1)) conv=notrunc status=none
qemu-img convert -q -f raw -O qcow2 "$W/disk.raw" "$OUT"
