#!/bin/bash
# Issue 8: power cut under --cow=FILE. Boots KVER with a scratch disk, lets the guest
# (scenarios/powercut.sh) write and fsync files through the overlay and cut the power mid-write,
# then checks on the host: qemu-img check finds no corruption (leaks are allowed), and every
# file fsynced before the cut is in the overlay's filesystem with the right checksum.
# Usage: powercut.sh VMLINUX INITRD   (prints PASS or FAIL lines)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
KERNEL=$1 INITRD=$2
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL powercut: $*"; exit 1; }
name=powercut/$(basename "$KERNEL" | sed 's/^vmlinux-//')

truncate -s 64M "$T/scratch.img"
mkfs.ext4 -q -F "$T/scratch.img"
SCRATCH=$T/scratch.img "$HERE/run-vm.sh" "$KERNEL" "$INITRD" powercut "$T/serial.log" 300
grep -aq '@@VDM-RESULT: CUT@@' "$T/serial.log" || { tail -30 "$T/serial.log"; fail "$name: the guest did not reach the cut"; }

# The scratch filesystem as the guest left it: replay its journal, then take the files out.
e2fsck -fy "$T/scratch.img" >/dev/null 2>&1; [ $? -lt 4 ] || fail "$name: scratch filesystem unrecoverable"
debugfs -R "dump /ovl.qcow2 $T/ovl.qcow2" "$T/scratch.img" 2>/dev/null
debugfs -R "dump /manifest $T/manifest" "$T/scratch.img" 2>/dev/null
[ -s "$T/ovl.qcow2" ] || fail "$name: no overlay on the scratch disk"
[ -s "$T/manifest" ] || fail "$name: no fsynced file recorded before the cut"
# The overlay names its base by the guest's path; point it at the same file here (header only).
qemu-img rebase -u -f qcow2 -b "$REPO/fixtures/e2e.qcow2" -F qcow2 "$T/ovl.qcow2"
qemu-img check "$T/ovl.qcow2" >"$T/check" 2>&1; rc=$?
[ $rc = 0 ] || [ $rc = 3 ] || { cat "$T/check"; fail "$name: qemu-img check exit $rc (corruption)"; }
leaks=$(grep -o '[0-9]* leaked clusters' "$T/check" || echo "no leaked clusters")

# The guest filesystem inside the overlay: partition 1 (1 MiB .. 11 MiB), journal replayed.
qemu-img convert -O raw "$T/ovl.qcow2" "$T/disk.raw"
dd if="$T/disk.raw" of="$T/part.img" bs=1M skip=1 count=10 status=none
e2fsck -fy "$T/part.img" >/dev/null 2>&1; [ $? -lt 4 ] || fail "$name: the guest filesystem is unrecoverable"
n=0
while read -r sum file; do
	debugfs -R "dump /$file $T/$file" "$T/part.img" 2>/dev/null
	[ "$(sha256sum <"$T/$file" | cut -d' ' -f1)" = "$sum" ] || fail "$name: fsynced $file lost or wrong after the cut"
	n=$((n + 1))
done <"$T/manifest"
echo "PASS $name ($n fsynced files intact; qemu-img check: $leaks)"
