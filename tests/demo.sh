#!/bin/bash
# The main job on a shipped fixture: installs what is missing (root), builds abuse.ko and a
# static vdmount, boots Debian's 6.1 kernel under QEMU, serves fixtures/e2e.qcow2 on
# /dev/abuse0, mounts /dev/abuse0p1 and shows its files. KVER=... picks another kernel.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
"$REPO/tests/vm/setup-host.sh" --check 2>/dev/null || {
	if [ "$(id -u)" = 0 ]; then "$REPO/tests/vm/setup-host.sh"; else sudo "$REPO/tests/vm/setup-host.sh"; fi; }
KVER=${KVER:-$(basename "$(dirname "$(ls -d /lib/modules/6.1.*/build | head -1)")")}
WORK=${VM_WORK:-/tmp/vdmount-vm}; mkdir -p "$WORK"
vdmount=$("$REPO/tests/vm/build-vdmount-static.sh")
"$REPO/tests/vm/extract-vmlinux.sh" "/boot/vmlinuz-$KVER" "$WORK/vmlinux-$KVER"
"$REPO/tests/vm/build-initramfs.sh" "$KVER" "$vdmount" "$WORK/initramfs-$KVER.cpio"
echo "booting $KVER under QEMU..."
rc=0
"$REPO/tests/vm/run-vm.sh" "$WORK/vmlinux-$KVER" "$WORK/initramfs-$KVER.cpio" demo "$WORK/demo.log" || rc=$?
sed -n '/@@INIT-START/,/@@VDM-RESULT/p' "$WORK/demo.log" | grep -av '^@@INIT'
exit $rc
