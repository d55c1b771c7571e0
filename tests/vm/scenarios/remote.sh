#!/bin/sh
# Issue 19: an image on a web server (busybox httpd on the guest's 127.0.0.1) is served by URL
# through abuse.ko, read-only, and its files check. The sandboxed server keeps serving after the
# web server restarts (its pool must open new connections under the filter) and nothing it does
# is refused by the sandbox.
# (No busybox timeout with its working directory in /mnt: its watchdog child lingers there for up
# to a second and makes the umount fail; the host's VM timeout bounds a hang instead.)
set -e
log=/run/vdmount/abuse0.log
fail() { echo "remote: $*"; cat $log 2>/dev/null; exit 1; }
ip link set lo up || fail "ip link set lo up"
mkdir -p /tmp/www
cp /fixtures/e2e-full.qcow2 /tmp/www/e2e.qcow2
httpd -f -p 127.0.0.1:8080 -h /tmp/www &
web=$!
insmod /abuse.ko max_part=15 || fail "insmod"
i=0
until timeout 10 vdmount info http://127.0.0.1:8080/e2e.qcow2 >/tmp/info.txt 2>&1; do
	i=$((i + 1)); [ $i -lt 50 ] || { cat /tmp/info.txt; fail "httpd does not answer"; }; sleep 0.1
done
grep -q '^format: qcow2' /tmp/info.txt || fail "info: $(cat /tmp/info.txt)"
timeout 60 vdmount http://127.0.0.1:8080/e2e.qcow2 /dev/abctl0 || fail "serving the URL"
grep -q '^image=http://127.0.0.1:8080/e2e.qcow2$' /run/vdmount/abuse0 || fail "record: $(cat /run/vdmount/abuse0)"
pid=$(sed -n 's/^pid=//p' /run/vdmount/abuse0)
grep -q '^Seccomp:[[:space:]]*2' /proc/$pid/status || fail "the server has no seccomp filter"
mount -t ext4 -o ro /dev/abuse0p1 /mnt || fail "mount"
(cd /mnt && sha256sum -c /fixtures/e2e.sha256 >/dev/null) || fail "checksums over http"
before=$(timeout 120 sha256sum </dev/abuse0) || fail "reading the whole device"
# The web server goes away and comes back: every pooled connection is dead.
kill $web; wait $web 2>/dev/null || true
httpd -f -p 127.0.0.1:8080 -h /tmp/www &
web=$!
sleep 0.5
echo 3 >/proc/sys/vm/drop_caches
(cd /mnt && sha256sum -c /fixtures/e2e.sha256 >/dev/null) || fail "checksums after the web server restarted"
after=$(timeout 120 sha256sum </dev/abuse0) || fail "reading the whole device again"
[ "$before" = "$after" ] || fail "the device reads differently after the web server restarted"
kill -0 "$pid" || fail "the server died"
umount /mnt
vdmount detach /dev/abuse0 || fail "detach"
if grep 'refused system call' $log; then fail "serving a URL tripped the sandbox"; fi
kill $web; wait $web 2>/dev/null || true
i=0
while [ -e /sys/block/abuse0 ]; do
	i=$((i + 1)); [ $i -le 100 ] || fail "/dev/abuse0 still there 10 s after detach"
	sleep 0.1
done
rmmod abuse || fail "rmmod"
echo "remote: ok"
