#!/bin/sh
# Issue 3, end to end: fixtures/e2e.qcow2 served by vdmount through abuse.ko, its ext4
# partition mounted read-only, every file checked, then a clean shutdown and rmmod.
set -e
fail() { echo "e2e: $*"; exit 1; }
insmod /abuse.ko max_part=15 || fail "insmod"
[ -c /dev/abctl0 ] || fail "no /dev/abctl0"
timeout 120 vdmount --foreground /fixtures/e2e.qcow2 /dev/abctl0 2>/tmp/vdmount.err &
server=$!
i=0
while [ ! -b /dev/abuse0p1 ]; do
	i=$((i + 1)); [ $i -le 300 ] || fail "no /dev/abuse0p1 after 30 s"
	kill -0 $server 2>/dev/null || { cat /tmp/vdmount.err; fail "vdmount exited early"; }
	sleep 0.1
done
echo "e2e: /dev/abuse0p1 after $i polls; size $(cat /sys/block/abuse0/size) sectors, ro=$(cat /sys/block/abuse0/ro)"
[ "$(cat /sys/block/abuse0/ro)" = 1 ] || fail "device not read-only"
mount -t ext4 -o ro /dev/abuse0p1 /mnt || fail "mount"
(cd /mnt && sha256sum -c /fixtures/e2e.sha256) || fail "checksums"
[ "$(cat /mnt/README.txt)" = "Hello from inside a qcow2 image." ] || fail "README.txt content"
if rmmod abuse 2>/dev/null; then fail "rmmod succeeded with a mounted device"; fi
umount /mnt
kill -TERM $server
wait $server || { cat /tmp/vdmount.err; fail "vdmount exited with status $? after SIGTERM"; }
cat /tmp/vdmount.err
# An uncompressed qcow2: the kernel read the data itself (ABUSE_CPL_EXTENTS), so the
# checksums above checked that path.
grep -q "of which [1-9][0-9]* as extents" /tmp/vdmount.err || fail "no read was answered with extents"
[ ! -e /sys/block/abuse0 ] || fail "/dev/abuse0 still exists after the server stopped"
rmmod abuse || fail "rmmod"
echo "e2e: ok"
