#!/bin/sh
# Issue 17: the same images served through the kernel's ublk driver, abuse.ko not loaded.
# Without ublk_drv (or on 6.1, which has none) vdmount says in one line what to load; with it,
# --transport auto picks ublk, the e2e disk mounts and checks (a stop while mounted is refused),
# list and detach know the device, every op reaches the server under --cow, --cow=FILE keeps
# what the device showed, a server killed with -9 is replaced (--reattach) under a reader that
# sees no error (20 rounds), and with abuse.ko loaded too, auto picks abuse.ko.
set -e
fail() { echo "ublk: $*"; cat /tmp/server.log /tmp/ops.log 2>/dev/null; exit 1; }
wait_for() { # NODE SERVER_PID
	i=0
	while [ ! -b "$1" ]; do
		i=$((i + 1)); [ $i -le 300 ] || fail "no $1 after 30 s"
		kill -0 "$2" 2>/dev/null || fail "the server exited early"
		sleep 0.1
	done
}

# Neither transport: one line naming what to load, exit status 3.
if vdmount --foreground /fixtures/e2e.qcow2 >/tmp/none.out 2>&1; then fail "served with no transport"; else rc=$?; fi
[ "$rc" = 3 ] || fail "exit status $rc with no transport (want 3)"
[ "$(wc -l </tmp/none.out)" = 1 ] || { cat /tmp/none.out; fail "not one line"; }
grep -q "modprobe ublk_drv" /tmp/none.out || { cat /tmp/none.out; fail "does not say what to load"; }
if [ ! -s /mods/extra/order ]; then
	echo "ublk: this kernel has no ublk_drv: the refusal is all there is to check"
	echo "ublk: ok"
	exit 0
fi
while read -r m; do insmod "/mods/extra/$m" || fail "insmod $m"; done </mods/extra/order
[ -c /dev/ublk-control ] || fail "no /dev/ublk-control after loading ublk_drv"

# auto: ublk (no /dev/abuse-control); the e2e disk, read-only.
timeout 300 vdmount --foreground /fixtures/e2e.qcow2 >/tmp/out 2>/tmp/server.log &
server=$!
wait_for /dev/ublkb0p1 $server
head -1 /tmp/out | grep -q "serving through ublk" || { cat /tmp/out; fail "first line does not name ublk"; }
[ "$(cat /sys/block/ublkb0/ro)" = 1 ] || fail "device not read-only"
mount -t ext4 -o ro /dev/ublkb0p1 /mnt || fail "mount"
(cd /mnt && sha256sum -c /fixtures/e2e.sha256 >/dev/null) || fail "checksums"
# A stop while mounted is refused; after the unmount it removes the device.
kill -TERM $server; sleep 1
kill -0 $server || fail "the server stopped with its device mounted"
grep -q "is still mounted" /tmp/server.log || fail "no word on why the server keeps serving"
(cd /mnt && sha256sum -c /fixtures/e2e.sha256 >/dev/null) || fail "checksums after the refused stop"
dmesg | grep -q "shut down requested" && fail "the filesystem was shut down under the mount"
umount /mnt
kill -TERM $server
wait $server || fail "server exit status $? after SIGTERM"
[ ! -e /sys/block/ublkb0 ] || fail "/dev/ublkb0 still there after the server stopped"
echo "ublk: e2e ok ($(tail -1 /tmp/server.log))"

# list and detach know ublk devices; detach refuses while mounted.
vdmount /fixtures/e2e.qcow2 >/tmp/out 2>&1 || { cat /tmp/out; fail "background server"; }
grep -q "^/dev/ublkb0: /fixtures/e2e.qcow2 (" /tmp/out || { cat /tmp/out; fail "attach line"; }
vdmount list >/tmp/list || fail "list"
grep -q "^/dev/ublkb0 .*serving .*read-only .*/fixtures/e2e.qcow2" /tmp/list || { cat /tmp/list; fail "list line"; }
mount -t ext4 -o ro /dev/ublkb0p1 /mnt || fail "mount (background server)"
if vdmount detach /dev/ublkb0 2>/tmp/detach.err; then fail "detach while mounted"; fi
grep -q "mounted on /mnt" /tmp/detach.err || { cat /tmp/detach.err; fail "detach refusal"; }
umount /mnt
vdmount detach /dev/ublkb0 || fail "detach"
[ ! -e /sys/block/ublkb0 ] || fail "/dev/ublkb0 still there after detach"
vdmount list >/tmp/list || fail "list after detach"
grep -q ublkb0 /tmp/list && { cat /tmp/list; fail "listed after detach"; }
echo "ublk: list and detach ok"

# --cow: every op reaches the server and is answered (as ops.sh checks for abuse.ko); the image
# is unchanged.
/opt/bin/dd if=/dev/urandom of=/tmp/img.raw bs=1M count=16 status=none
before=$(sha256sum /tmp/img.raw | cut -d' ' -f1)
vdmount --foreground --cow /tmp/img.raw >/tmp/out 2>/tmp/ops.log &
server=$!
wait_for /dev/ublkb0 $server
while [ "$(cat /sys/block/ublkb0/size 2>/dev/null)" = 0 ]; do sleep 0.1; done
[ "$(cat /sys/block/ublkb0/ro)" = 0 ] || fail "cow device is read-only"
[ "$(cat /sys/block/ublkb0/queue/write_cache)" = "write back" ] || fail "no write cache advertised"
[ "$(cat /sys/block/ublkb0/queue/fua)" = 1 ] || fail "no FUA advertised"
/opt/bin/dd if=/dev/urandom of=/tmp/pattern bs=64k count=16 status=none
/opt/bin/dd if=/tmp/pattern of=/dev/ublkb0 bs=64k seek=3 oflag=direct status=none || fail "O_DIRECT write"
/opt/bin/dd if=/dev/ublkb0 of=/tmp/back bs=64k skip=3 count=16 iflag=direct status=none || fail "read back"
cmp /tmp/pattern /tmp/back || fail "--cow: read back differs"
/opt/bin/dd if=/tmp/pattern of=/dev/ublkb0 bs=4k count=4 seek=1000 oflag=direct,dsync status=none || fail "O_DSYNC write"
/opt/bin/dd if=/tmp/pattern of=/dev/ublkb0 bs=4k count=1 seek=2000 conv=fsync status=none || fail "fsync"
/opt/bin/blkdiscard -o 196608 -l 524288 /dev/ublkb0 || fail "blkdiscard"
/opt/bin/dd if=/dev/ublkb0 bs=64k skip=3 count=8 iflag=direct status=none | tr -d '\0' | wc -c | grep -qx 0 || fail "discarded range not zero"
/opt/bin/blkdiscard -z -o 4194304 -l 65536 /dev/ublkb0 || fail "blkdiscard -z"
/opt/bin/dd if=/dev/ublkb0 bs=64k skip=64 count=1 iflag=direct status=none | tr -d '\0' | wc -c | grep -qx 0 || fail "zeroed range not zero"
kill -TERM $server; wait $server || fail "cow server exit"
stats=$(grep 'requests (' /tmp/ops.log)
for op in read write fua flush discard write-zeroes; do
	n=$(echo "$stats" | sed -n "s/.*[ (]$op \([0-9]*\).*/\1/p")
	[ -n "$n" ] && [ "$n" -gt 0 ] || fail "no $op request reached the server: $stats"
done
[ "$(sha256sum /tmp/img.raw | cut -d' ' -f1)" = "$before" ] || fail "the image changed"
echo "ublk: every op ok ($stats)"

# --cow=FILE: what the device showed is what FILE holds afterwards, and a second session sees it.
cp /fixtures/e2e.qcow2 /tmp/base.qcow2
before=$(sha256sum /tmp/base.qcow2 | cut -d' ' -f1)
vdmount --cow=/tmp/ovl.qcow2 /tmp/base.qcow2 >/tmp/out 2>&1 || { cat /tmp/out; fail "attach with --cow=FILE"; }
mount /dev/ublkb0p1 /mnt || fail "rw mount"
echo "kept in the overlay" >/mnt/note.txt
rm /mnt/docs/log.txt
umount /mnt
shown=$(sha256sum /dev/ublkb0 | cut -d' ' -f1)
vdmount detach /dev/ublkb0 || fail "detach (--cow=FILE)"
[ "$(sha256sum /tmp/base.qcow2 | cut -d' ' -f1)" = "$before" ] || fail "the image changed (--cow=FILE)"
[ "$(vdmount cat /tmp/ovl.qcow2 | sha256sum | cut -d' ' -f1)" = "$shown" ] || fail "the overlay differs from what the device showed"
vdmount --cow=/tmp/ovl.qcow2 /tmp/base.qcow2 >/dev/null 2>&1 || fail "second session on the overlay"
mount /dev/ublkb0p1 /mnt || fail "mount (second session)"
[ "$(cat /mnt/note.txt)" = "kept in the overlay" ] || fail "note.txt lost"
[ ! -e /mnt/docs/log.txt ] || fail "a deleted file came back"
umount /mnt
vdmount detach /dev/ublkb0 || fail "detach (second session)"
echo "ublk: cowfile ok"

# kill -9 under a reader, then --reattach: the reader sees no error. 20 rounds.
mkdir -p /tmp/src
/opt/bin/dd if=/dev/urandom of=/tmp/src/big bs=1M count=24 status=none
want=$(sha256sum /tmp/src/big | cut -d' ' -f1)
/opt/bin/mke2fs -q -t ext4 -d /tmp/src /tmp/fs.raw 40M || fail "mkfs"
vdmount --foreground /tmp/fs.raw 2>>/tmp/server.log >/dev/null &
server=$!
wait_for /dev/ublkb0 $server
while [ "$(cat /sys/block/ublkb0/size 2>/dev/null)" = 0 ]; do sleep 0.1; done
mount -o ro /dev/ublkb0 /mnt || fail "mount fs.raw"
for i in $(seq 1 20); do
	echo 3 >/proc/sys/vm/drop_caches
	(sha256sum /mnt/big >/tmp/sum 2>/tmp/sum.err; echo $? >/tmp/sum.rc) &
	reader=$!
	sleep 0.$((i % 4 + 1))
	kill -9 $server
	wait $server 2>/dev/null || true
	if [ $((i % 2)) = 1 ]; then
		vdmount --foreground --reattach /tmp/fs.raw /dev/ublkc0 2>>/tmp/server.log >/dev/null &
	else
		vdmount --foreground --reattach /dev/ublkb0 2>>/tmp/server.log >/dev/null &
	fi
	server=$!
	wait $reader
	[ "$(cat /tmp/sum.rc)" = 0 ] || fail "round $i: reader failed: $(cat /tmp/sum.err)"
	[ "$(cut -d' ' -f1 /tmp/sum)" = "$want" ] || fail "round $i: wrong checksum"
done
echo "ublk: 20 kill -9 / reattach rounds, the reader never saw an error"
umount /mnt
kill -TERM $server; wait $server || fail "final server exit"
dmesg | grep -q 'I/O error' && fail "the kernel logged I/O errors"
if grep 'refused system call' /tmp/server.log /tmp/ops.log /run/vdmount/*.log; then fail "the server tripped its sandbox"; fi

# With abuse.ko loaded as well, auto picks abuse.ko.
insmod /abuse.ko max_part=15 || fail "insmod abuse"
vdmount /fixtures/e2e.qcow2 >/tmp/out 2>&1 || { cat /tmp/out; fail "auto with both"; }
head -1 /tmp/out | grep -q "serving through abuse.ko" || { cat /tmp/out; fail "auto did not pick abuse.ko"; }
[ -b /dev/abuse0p1 ] || fail "no /dev/abuse0p1"
vdmount detach /dev/abuse0 || fail "detach abuse0"
while [ -e /sys/block/abuse0 ]; do sleep 0.1; done
rmmod abuse
echo "ublk: ok"
