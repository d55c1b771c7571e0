#!/bin/bash
# Boots KERNEL (an ELF vmlinux: PVH boot) with INITRD under QEMU (TCG; KVM only with real
# VT-x/SVM), runs scenario TEST, and turns its marker into the exit code:
# 0 PASS, 1 FAIL, 2 no marker (panic, crash), 124 timeout. The serial log goes to LOG.
# Usage: run-vm.sh KERNEL INITRD TEST LOG [TIMEOUT_S]
set -uo pipefail
KERNEL=$1 INITRD=$2 TEST=$3 LOG=$4 TIMEOUT=${5:-300}
accel=tcg cpu=max
if [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then
	accel=kvm cpu=host   # a PVM-only /dev/kvm (kvm_pvm) hangs Debian kernels: not used
fi
extra=()
# SCRATCH=FILE: a raw file attached as a writable virtio disk with serial "scratch", for data
# that must survive the VM (the power-cut test).
[ -n "${SCRATCH:-}" ] && extra+=(-drive "file=$SCRATCH,format=raw,if=none,id=scratch,cache=unsafe"
	-device virtio-blk-pci,drive=scratch,serial=scratch)
timeout -k 5 "$TIMEOUT" qemu-system-x86_64 -nodefaults -no-user-config -machine pc \
	-accel "$accel" -cpu "$cpu" -smp 2 -m 1024 -display none -no-reboot -serial stdio \
	-kernel "$KERNEL" -initrd "$INITRD" "${extra[@]}" \
	-append "console=ttyS0 panic=-1 quiet hung_task_timeout_secs=60 vdm_test=$TEST" \
	</dev/null >"$LOG" 2>&1
rc=$?
result=$(grep -a -m1 -o '@@VDM-RESULT: [^@]*@@' "$LOG")
case "$result" in
*"RESULT: PASS@@") exit 0;;
*"RESULT: FAIL"*) exit 1;;
esac
[ $rc = 124 ] || [ $rc = 137 ] && exit 124
exit 2
