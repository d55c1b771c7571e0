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

# What both transports must do, over ublk: every op under --cow (ops.sh), --cow=FILE keeps
# what the device showed (cowfile.sh), 20 kill -9 / --reattach rounds under a reader that sees
# no error (restart.sh).
for s in ops cowfile restart; do
	VDM_TRANSPORT=ublk sh /scenarios/$s.sh || fail "$s.sh over ublk"
done

# With abuse.ko loaded as well, auto picks abuse.ko.
insmod /abuse.ko max_part=15 || fail "insmod abuse"
vdmount /fixtures/e2e.qcow2 >/tmp/out 2>&1 || { cat /tmp/out; fail "auto with both"; }
head -1 /tmp/out | grep -q "serving through abuse.ko" || { cat /tmp/out; fail "auto did not pick abuse.ko"; }
[ -b /dev/abuse0p1 ] || fail "no /dev/abuse0p1"
vdmount detach /dev/abuse0 || fail "detach abuse0"
while [ -e /sys/block/abuse0 ]; do sleep 0.1; done
rmmod abuse
echo "ublk: ok"
