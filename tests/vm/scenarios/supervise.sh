#!/bin/sh
# Issue 20: `vdmount --supervise` restarts its server after a crash. 10 rounds of kill -9 of the
# server (never the supervisor) while a reader streams a file from the mounted filesystem: the
# reader finishes with no I/O error and the right checksum, each restart is logged, and a
# detach ends the supervisor cleanly.
set -e
fail() { echo "supervise: $*"; cat /tmp/sup.log 2>/dev/null; exit 1; }
insmod /abuse.ko max_part=15
mkdir -p /tmp/src
/opt/bin/dd if=/dev/urandom of=/tmp/src/big bs=1M count=16 status=none
want=$(sha256sum /tmp/src/big | cut -d' ' -f1)
/opt/bin/mke2fs -q -t ext4 -d /tmp/src /tmp/fs.raw 32M || fail "mkfs"
rm /tmp/src/big
vdmount --supervise /tmp/fs.raw >/dev/null 2>>/tmp/sup.log &
sup=$!
# The server is the supervisor's child (busybox has no pgrep; Debian's kernels list children).
server_pid() { cut -d' ' -f1 "/proc/$sup/task/$sup/children" 2>/dev/null; }
i=0
while [ ! -b /dev/abuse0 ] || [ "$(cat /sys/block/abuse0/size 2>/dev/null)" = 0 ]; do
	kill -0 $sup || fail "supervisor died"; i=$((i + 1)); [ $i -lt 300 ] || fail "no device"; sleep 0.1
done
mount -o ro /dev/abuse0 /mnt || fail "mount"
for r in $(seq 1 10); do
	echo 3 >/proc/sys/vm/drop_caches
	(sha256sum /mnt/big >/tmp/sum 2>/tmp/sum.err; echo $? >/tmp/sum.rc) &
	reader=$!
	sleep 0.$((r % 4 + 1))
	pid=$(server_pid)
	[ -n "$pid" ] || fail "round $r: no server"
	kill -9 "$pid"
	wait $reader
	[ "$(cat /tmp/sum.rc)" = 0 ] || fail "round $r: reader failed: $(cat /tmp/sum.err)"
	[ "$(cut -d' ' -f1 /tmp/sum)" = "$want" ] || fail "round $r: wrong checksum"
	kill -0 $sup || fail "round $r: the supervisor died"
	# The next round kills the new server, once it serves.
	i=0
	while new=$(server_pid); [ -z "$new" ] || [ "$new" = "$pid" ] || ! grep -qx "pid=$new" /run/vdmount/abuse0 2>/dev/null; do
		i=$((i + 1)); [ $i -lt 200 ] || break; sleep 0.05
	done
done
cat /tmp/sup.log
[ "$(grep -c 'was killed by signal 9; restarting' /tmp/sup.log)" = 10 ] || fail "not 10 restarts logged"
umount /mnt
vdmount detach /dev/abuse0 || fail "detach"
wait $sup || fail "the supervisor did not end cleanly after the detach"
dmesg | grep -q 'I/O error' && fail "the kernel logged I/O errors"
rmmod abuse
echo "supervise: ok"
