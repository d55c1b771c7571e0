#!/bin/sh
# Issue 17: the same images served through the kernel's ublk driver, abuse.ko not loaded.
# Without ublk_drv (or on 6.1, which has none) vdmount says in one line what to load; with it,
# --transport auto picks ublk, the e2e disk mounts and checks, --cow writes land in the
# overlay, and a server killed with -9 is replaced (--reattach) under a reader that sees no error.
set -e
fail() { echo "ublk: $*"; cat /tmp/server.log 2>/dev/null; exit 1; }
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

# --cow: writes land in the ephemeral overlay and read back; the image is unchanged.
before=$(sha256sum /fixtures/e2e.qcow2 | cut -d' ' -f1)
vdmount --foreground --cow /fixtures/e2e.qcow2 >/tmp/out 2>>/tmp/server.log &
server=$!
wait_for /dev/ublkb0p1 $server
/opt/bin/dd if=/dev/urandom of=/tmp/pattern bs=64k count=16 status=none
/opt/bin/dd if=/tmp/pattern of=/dev/ublkb0 bs=64k seek=3 oflag=direct status=none || fail "write"
/opt/bin/dd if=/dev/ublkb0 of=/tmp/back bs=64k skip=3 count=16 iflag=direct status=none || fail "read back"
cmp /tmp/pattern /tmp/back || fail "--cow: read back differs"
kill -TERM $server; wait $server || fail "cow server exit"
[ "$(sha256sum /fixtures/e2e.qcow2 | cut -d' ' -f1)" = "$before" ] || fail "the image changed"
echo "ublk: cow ok"

# kill -9 under a reader, then --reattach: the reader sees no error. 10 rounds.
mkdir -p /tmp/src
/opt/bin/dd if=/dev/urandom of=/tmp/src/big bs=1M count=24 status=none
want=$(sha256sum /tmp/src/big | cut -d' ' -f1)
/opt/bin/mke2fs -q -t ext4 -d /tmp/src /tmp/fs.raw 40M || fail "mkfs"
vdmount --foreground /tmp/fs.raw 2>>/tmp/server.log >/dev/null &
server=$!
wait_for /dev/ublkb0 $server
while [ "$(cat /sys/block/ublkb0/size 2>/dev/null)" = 0 ]; do sleep 0.1; done
mount -o ro /dev/ublkb0 /mnt || fail "mount fs.raw"
for i in $(seq 1 10); do
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
echo "ublk: 10 kill -9 / reattach rounds, the reader never saw an error"
umount /mnt
kill -TERM $server; wait $server || fail "final server exit"
dmesg | grep -q 'I/O error' && fail "the kernel logged I/O errors"
if grep 'refused system call' /tmp/server.log; then fail "the server tripped its sandbox"; fi
echo "ublk: ok"
