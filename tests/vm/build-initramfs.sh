#!/bin/bash
# Packs the test initramfs for kernel KVER: busybox, the kernel's own ext4/vfat modules,
# abuse.ko built for KVER, a static vdmount, the fixtures and the scenarios.
# Usage: build-initramfs.sh KVER VDMOUNT_BIN OUT.cpio
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
KVER=$1 VDMOUNT=$2 OUT=$3
# A kernel fetched by fetch-kernel.sh has its modules under its own root.
MODROOT=/
# shellcheck disable=SC1090
[ -e "${VM_WORK:-/tmp/vdmount-vm}/kernels/$KVER.env" ] && . "${VM_WORK:-/tmp/vdmount-vm}/kernels/$KVER.env"
MODDIR=$MODROOT/lib/modules/$KVER
[ -d "$MODDIR/kernel" ] || { echo "no $MODDIR/kernel: run tests/vm/setup-host.sh or fetch-kernel.sh" >&2; exit 1; }
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
gcc -static -O2 -Wall -Werror -I "$REPO/kmod/include/uapi" -o "$R/bin/abuse-ioctl-fuzz" \
	"$HERE/tools/abuse-ioctl-fuzz.c"
# Host tools the scenarios need beyond busybox (O_DIRECT/O_DSYNC dd, blkdiscard -z, mkfs -d),
# with their shared libraries (same glibc as the host). They go to /opt/bin and are called by
# full path: Debian's busybox shell runs its own applet of the same name otherwise.
mkdir -p "$R/opt/bin"
copy_bin() {
	cp -L "$1" "$R/opt/bin/$(basename "$1")"
	ldd "$1" | grep -o '/[^ ]*' | while read -r lib; do
		[ -e "$R$lib" ] || cp -L --parents "$lib" "$R"
	done
}
for t in /bin/dd /sbin/blkdiscard /sbin/mke2fs; do copy_bin "$t"; done
# The mount scenario: lvm and dmsetup make a host volume group named as the image's, and lvm
# reads the image's as an independent check of vdmount's own LVM reader.
for t in /sbin/lvm /sbin/dmsetup; do copy_bin "$t"; done
"$HERE/make-4kn-vhdx.sh" "$R/fixtures/4kn.vhdx" 2>/dev/null
cp "$REPO"/fixtures/e2e.qcow2 "$REPO"/fixtures/e2e.sha256 "$R/fixtures/"
# For the confine scenario: an overlay whose backing file lies outside its own folder.
mkdir -p "$R/fixtures/confine"
qemu-img create -q -f qcow2 -b ../e2e.qcow2 -F qcow2 "$R/fixtures/confine/child.qcow2"
# For the formats scenario: the same disk in the other formats vdmount reads.
for fmt in vdi qed; do
	qemu-img convert -q -f qcow2 -O "$fmt" "$REPO/fixtures/e2e.qcow2" "$R/fixtures/e2e.$fmt"
done
# ...and as an EnCase set (ewf-tools), deflate-compressed, in 1 MiB segments: e2e.E01, e2e.E02...
qemu-img convert -q -f qcow2 -O raw "$REPO/fixtures/e2e.qcow2" "$W/e2e.raw"
ewfacquire -u -q -f encase6 -c deflate:fast -S 1MiB -t "$R/fixtures/e2e" "$W/e2e.raw" >/dev/null
# ...and as an Apple sparse image and sparse bundle (written by our own script: no tool does).
"$HERE/make-sparse-fixtures.py" "$W/e2e.raw" "$R/fixtures" e2e
rm "$W/e2e.raw"
# For the remote scenario: the e2e disk as a fully allocated qcow2 (12 MiB), larger than the
# server's read-ahead, so reading it after the web server restarts needs new connections.
qemu-img convert -q -f qcow2 -O qcow2 -o preallocation=full "$REPO/fixtures/e2e.qcow2" "$R/fixtures/e2e-full.qcow2"
# For the mount scenario: partitions to mount and to report.
"$HERE/make-mount-fixture.sh" "$R/fixtures/mount.qcow2" "$R/fixtures/mount.sha256"

# For the scale scenario: four small distinct disks (1 MiB of random data each, qcow2), each
# attached 16 times at once, with the SHA-256 of the raw data they hold.
mkdir -p "$R/fixtures/scale"
for i in 0 1 2 3; do
	head -c 1M /dev/urandom >"$W/scale$i.raw"
	qemu-img convert -q -f raw -O qcow2 "$W/scale$i.raw" "$R/fixtures/scale/img$i.qcow2"
	echo "$(sha256sum <"$W/scale$i.raw" | cut -d' ' -f1) img$i" >>"$R/fixtures/scale/sums"
done

# Copies module KO (decompressed) into DIR and prints its name there.
copy_module() {
	local ko=$1 dir=$2 base
	base=$(basename "$ko")
	case "$ko" in
	*.ko.xz)  base=${base%.xz};  xz -dc "$ko" >"$dir/$base";;
	*.ko.zst) base=${base%.zst}; zstd -qdc "$ko" >"$dir/$base";;
	*)        cp "$ko" "$dir/$base";;
	esac
	echo "$base"
}

# The kernel's own modules, in dependency order (modules built in print no insmod line).
: >"$R/mods/order"
for m in ext4 vfat nls_cp437 nls_ascii nls_utf8 loop virtio_pci virtio_blk dm_mod xfs; do
	modprobe -d "$MODROOT" -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
	copy_module "$ko" "$R/mods" >>"$R/mods/order"
done
# Modules a scenario loads itself, in dependency order: ublk_drv for the ublk transport (the
# other scenarios run without it; 6.1 does not build it).
mkdir -p "$R/mods/extra"
: >"$R/mods/extra/order"
for m in ublk_drv; do
	# A kernel without the module (6.1 has no ublk_drv) lists nothing.
	{ modprobe -d "$MODROOT" -S "$KVER" --show-depends "$m" 2>/dev/null || true; } | awk '$1 == "insmod" {print $2}'
done | while read -r ko; do
	copy_module "$ko" "$R/mods/extra" >>"$R/mods/extra/order"
done
( cd "$R" && find . -print0 | cpio --null -o -H newc --quiet -R 0:0 ) >"$OUT"
