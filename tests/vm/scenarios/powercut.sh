#!/bin/sh
# Issue 8, guest half of the power-cut test (tests/vm/powercut.sh is the host half): writes and
# fsyncs files through a --cow=FILE device whose FILE is on the scratch disk, starts more writes
# that are never flushed, then powers the machine off at once (sysrq o: nothing is synced).
set -e
fail() { echo "powercut: $*"; exit 1; }
insmod /abuse.ko max_part=15
dev=
for d in /sys/block/vd*; do [ "$(cat "$d/serial" 2>/dev/null)" = scratch ] && dev=/dev/${d##*/}; done
[ -n "$dev" ] || fail "no scratch disk"
mkdir -p /scratch && mount -t ext4 "$dev" /scratch || fail "mount scratch"
vdmount --cow=/scratch/ovl.qcow2 /fixtures/e2e.qcow2 >/dev/null || fail "attach"
mount /dev/abuse0p1 /mnt || fail "mount"
for i in 1 2 3 4 5 6 7 8; do
	/opt/bin/dd if=/dev/urandom of=/mnt/f$i bs=64k count=$((i * 3)) conv=fsync status=none
	# Recorded only once f$i is durable; the record itself is made durable too.
	(cd /mnt && sha256sum f$i) | /opt/bin/dd of=/scratch/manifest oflag=append conv=notrunc,fsync status=none
done
/opt/bin/dd if=/dev/urandom of=/mnt/unflushed bs=64k count=400 status=none &
sleep 1
echo "@@VDM-RESULT: CUT@@"
echo o >/proc/sysrq-trigger
