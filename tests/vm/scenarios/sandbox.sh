#!/bin/sh
# Issue 14: the sandboxed server. Every thread has the seccomp filter, no capability is left,
# a forbidden call (the test-only SIGUSR2 probe: open /etc/hostname) is refused with EPERM and
# logged while the device keeps serving, normal serving (reads, cow writes, stop) trips no
# refusal, and /run/vdmount holds a 0755 folder, 0600 log and a record detach removes.
set -e
fail() { echo "sandbox: $*"; cat /run/vdmount/*.log /tmp/fg.log 2>/dev/null; exit 1; }
insmod /abuse.ko max_part=15
cp /fixtures/e2e.qcow2 /tmp/s.qcow2
# A log left 0644 by an older vdmount becomes 0600.
mkdir -p /run/vdmount && : >/run/vdmount/abuse0.log && chmod 644 /run/vdmount/abuse0.log

# Background server, with the probe armed.
VDMOUNT_TEST_SANDBOX=1 vdmount /tmp/s.qcow2 >/tmp/out || fail "attach"
pid=$(sed -n 's/.*served by pid \([0-9]*\).*/\1/p' /tmp/out)
log=/run/vdmount/abuse0.log
grep -q '^CapEff:[[:space:]]*0000000000000000' /proc/$pid/status || fail "capabilities left: $(grep Cap /proc/$pid/status)"
grep -q '^CapBnd:[[:space:]]*0000000000000000' /proc/$pid/status || fail "bounding set not empty"
grep -q '^NoNewPrivs:[[:space:]]*1' /proc/$pid/status || fail "no_new_privs not set"
for t in /proc/$pid/task/*; do
	# A thread that ended since the listing (the reporting thread exits once done) has no status.
	[ -e $t/status ] || continue
	grep -q '^Seccomp:[[:space:]]*2' $t/status 2>/dev/null || [ ! -e $t/status ] || fail "thread $t has no seccomp filter"
done
[ "$(stat -c %a /run/vdmount)" = 755 ] || fail "/run/vdmount mode $(stat -c %a /run/vdmount)"
[ "$(stat -c %a $log)" = 600 ] || fail "log mode $(stat -c %a $log)"
grep -q '^image=/tmp/s.qcow2$' /run/vdmount/abuse0 || fail "record: $(cat /run/vdmount/abuse0)"
mount -o ro /dev/abuse0p1 /mnt
kill -USR2 $pid
i=0; until grep -q 'sandbox test: open(/etc/hostname) failed with EPERM' $log; do
	i=$((i + 1)); [ $i -lt 100 ] || fail "the probe's result was not logged"; sleep 0.1
done
grep -q 'sandbox: refused system call [0-9]* (openat): EPERM' $log || fail "the refusal was not logged"
grep 'sandbox' $log
kill -0 $pid || fail "the server died"
echo 3 >/proc/sys/vm/drop_caches
(cd /mnt && sha256sum -c /fixtures/e2e.sha256 >/dev/null) || fail "data after the refused call"
umount /mnt
vdmount detach /dev/abuse0 || fail "detach"
[ ! -e /run/vdmount/abuse0 ] || fail "detach left the record"
[ "$(grep -c 'refused system call' $log)" = 1 ] || fail "other calls were refused: $(grep 'refused' $log)"

# Foreground server with --cow and 4 threads: writes, flushes, the report thread, the stop.
vdmount --foreground --threads 4 --cow /tmp/s.qcow2 /dev/abctl0 >/tmp/fg.out 2>/tmp/fg.log &
fg=$!
i=0; until grep -q '^mount:' /tmp/fg.out; do
	i=$((i + 1)); [ $i -lt 100 ] || fail "no report from the foreground server"; kill -0 $fg || fail "foreground server died"; sleep 0.1
done
for t in /proc/$fg/task/*; do
	[ -e $t/status ] || continue
	grep -q '^Seccomp:[[:space:]]*2' $t/status 2>/dev/null || [ ! -e $t/status ] || fail "foreground thread $t has no seccomp filter"
done
mount /dev/abuse0p1 /mnt
/opt/bin/dd if=/dev/urandom of=/mnt/new.bin bs=64k count=16 conv=fsync status=none
rm /mnt/docs/log.txt
sync
umount /mnt
kill -TERM $fg; wait $fg || fail "foreground server exit"
if grep 'refused system call' /tmp/fg.log; then fail "serving tripped the sandbox"; fi
# The stale record of the stopped server goes when list sees the device free.
vdmount list -a >/dev/null
[ ! -e /run/vdmount/abuse0 ] || fail "list left a free device's record"
rmmod abuse
echo "sandbox: ok"
