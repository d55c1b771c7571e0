#!/bin/bash
# Packs the test initramfs for kernel KVER: busybox, the kernel's own ext4/vfat modules,
# abuse.ko built for KVER, a static vdmount, the fixtures and the scenarios.
# Usage: build-initramfs.sh KVER VDMOUNT_BIN OUT.cpio
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
KVER=$1 VDMOUNT=$2 OUT=$3
MODDIR=/lib/modules/$KVER
[ -d "$MODDIR/kernel" ] || { echo "no $MODDIR/kernel: run tests/vm/setup-host.sh" >&2; exit 1; }
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
"$HERE/build-kmod.sh" "$KVER" "$W"

R=$W/root
mkdir -p "$R"/{bin,dev,proc,sys,tmp,mnt,mods,etc,fixtures,scenarios}
cp /bin/busybox "$R/bin/busybox"
for a in $(/bin/busybox --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
cp "$HERE/init" "$R/init"
cp "$HERE"/scenarios/*.sh "$R/scenarios/"
cp "$W/abuse.ko" "$R/abuse.ko"
strip --strip-debug "$R/abuse.ko"
cp "$VDMOUNT" "$R/bin/vdmount"
cp "$REPO"/fixtures/e2e.qcow2 "$REPO"/fixtures/e2e.sha256 "$R/fixtures/"

# The kernel's own modules, in dependency order (modules built in print no insmod line).
: >"$R/mods/order"
for m in ext4 vfat nls_cp437 nls_ascii nls_utf8 loop virtio_pci virtio_blk; do
	modprobe -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
	base=$(basename "$ko")
	case "$ko" in
	*.ko.xz)  base=${base%.xz};  xz -dc "$ko" >"$R/mods/$base";;
	*.ko.zst) base=${base%.zst}; zstd -qdc "$ko" >"$R/mods/$base";;
	*)        cp "$ko" "$R/mods/$base";;
	esac
	echo "$base" >>"$R/mods/order"
done
( cd "$R" && find . -print0 | cpio --null -o -H newc --quiet -R 0:0 ) >"$OUT"
