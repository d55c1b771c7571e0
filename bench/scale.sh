#!/bin/bash
# Attach time and server memory of N images attached at once (issue 21), in a VM: abuse.ko
# loaded with max_abuse=2, so all but two devices are made on demand. Runs the VM scenario
# tests/vm/scenarios/scale.sh without its races and prints its figures: mean and slowest
# `vdmount IMAGE` (each a background server; 1 MiB qcow2 images), and the servers' total RSS.
#   bench/scale.sh [N [KVER]]     (N: 256; KVER: the newest installed kernel)
# Under TCG (no usable KVM here) times are 10-50x those on hardware: compare runs, not targets.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-256}
KVER=${2:-$(ls -d /lib/modules/*/build 2>/dev/null | sort -V | tail -1 | xargs dirname | xargs basename)}
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
vdmount=$("$ROOT/tests/vm/build-vdmount-static.sh")
env=${VM_WORK:-/tmp/vdmount-vm}/kernels/$KVER.env
VMLINUZ=/boot/vmlinuz-$KVER
# shellcheck disable=SC1090
[ -e "$env" ] && VMLINUZ=$(. "$env" && echo "$VMLINUZ")
"$ROOT/tests/vm/extract-vmlinux.sh" "$VMLINUZ" "$W/vmlinux" >&2
"$ROOT/tests/vm/build-initramfs.sh" "$KVER" "$vdmount" "$W/initramfs.cpio" >&2
accel=tcg cpu=max
if [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then
	accel=kvm cpu=host
fi
# Guest RAM: 1 GiB, and 8 MiB for each server.
mem=$((1024 + N * 8))
timeout -k 5 1800 qemu-system-x86_64 -nodefaults -no-user-config -machine pc \
	-accel "$accel" -cpu "$cpu" -smp 2 -m "$mem" -display none -no-reboot -serial stdio \
	-kernel "$W/vmlinux" -initrd "$W/initramfs.cpio" \
	-append "console=ttyS0 panic=-1 quiet vdm_test=scale vdm_scale_n=$N vdm_scale_races=0" \
	</dev/null >"$W/serial.log" 2>&1 || true
grep -aq '@@VDM-RESULT: PASS@@' "$W/serial.log" || { tail -30 "$W/serial.log" >&2; exit 1; }
echo "In a VM ($accel, $KVER, 2 vCPUs, $mem MiB):"
grep -a -o '@@BENCH [^@]*@@' "$W/serial.log" | sed 's/^@@BENCH //; s/@@$//'
