#!/bin/sh
# Issue 8: attach without CTLDEV picks abuse0 then abuse1, and returns only when the partition
# nodes exist (no sleep here); list names the images; detach refuses while mounted and names
# the mount point; --lazy detaches on release; --cow writes never reach the image.
set -e
fail() { echo "attach: $*"; cat /run/vdmount/*.log 2>/dev/null; exit 1; }
insmod /abuse.ko max_part=15
cp /fixtures/e2e.qcow2 /tmp/a.qcow2
before=$(sha256sum /tmp/a.qcow2 | cut -d' ' -f1)

vdmount /tmp/a.qcow2 >/tmp/out0 || fail "first attach"
cat /tmp/out0
[ -b /dev/abuse0p1 ] || fail "no /dev/abuse0p1 when vdmount returned"
grep -q '^/dev/abuse0: /tmp/a.qcow2 (qcow2' /tmp/out0 || fail "first attach did not pick abuse0"
grep -q 'abuse0p1 .*ext4 "vdm-e2e"' /tmp/out0 || fail "partition line lacks ext4 label"
grep -q 'mount -o ro /dev/abuse0p1 /mnt' /tmp/out0 || fail "no mount line"
# The background server is sandboxed: seccomp filter on, its own mount namespace.
pid=$(sed -n 's/.*served by pid \([0-9]*\).*/\1/p' /tmp/out0)
grep -q '^Seccomp:.*2' /proc/$pid/status || fail "server $pid has no seccomp filter"
[ "$(readlink /proc/$pid/ns/mnt)" != "$(readlink /proc/self/ns/mnt)" ] || fail "server shares our mount namespace"
vdmount /fixtures/e2e.qcow2 >/tmp/out1 || fail "second attach"
[ -b /dev/abuse1p1 ] || fail "no /dev/abuse1p1 when vdmount returned"
grep -q '^/dev/abuse1:' /tmp/out1 || fail "second attach did not pick abuse1"
vdmount list | tee /tmp/list
grep -q '/dev/abuse0 .*serving.*read-only.*/tmp/a.qcow2' /tmp/list || fail "list line for abuse0"
grep -q '/dev/abuse1 .*serving.*/fixtures/e2e.qcow2' /tmp/list || fail "list line for abuse1"
vdmount list --json | grep -q '"server_alive":true' || fail "list --json"

mount -o ro /dev/abuse0p1 /mnt
if vdmount detach /dev/abuse0 2>/tmp/err; then fail "detach while mounted succeeded"; fi
cat /tmp/err
grep -q 'abuse0p1 is mounted on /mnt' /tmp/err || fail "detach refusal does not name the mount point"
(cd /mnt && sha256sum -c /fixtures/e2e.sha256 >/dev/null) || fail "data after refused detach"
umount /mnt
vdmount detach /dev/abuse0 || fail "detach after umount"
[ ! -e /sys/block/abuse0 ] || fail "abuse0 still there after detach"

mount -o ro /dev/abuse1p1 /mnt
vdmount detach --lazy /dev/abuse1 || fail "detach --lazy"
[ -e /sys/block/abuse1 ] || fail "lazy detach removed a mounted device"
umount /mnt
i=0; while [ -e /sys/block/abuse1 ]; do i=$((i + 1)); [ $i -lt 100 ] || fail "lazy detach did not happen"; sleep 0.1; done

# --cow: the filesystem is writable, the image is not touched.
vdmount --cow /tmp/a.qcow2 >/tmp/out2 || fail "cow attach"
grep -q '^/dev/abuse0: .*copy-on-write' /tmp/out2 || fail "cow attach line"
mount /dev/abuse0p1 /mnt || fail "rw mount of the cow device"
echo "written through the overlay" >/mnt/new.txt
/opt/bin/dd if=/dev/urandom of=/mnt/data/random-1M.bin bs=64k count=4 conv=notrunc status=none
sync
[ "$(cat /mnt/new.txt)" = "written through the overlay" ] || fail "cow read-back"
umount /mnt
mount /dev/abuse0p1 /mnt
[ "$(cat /mnt/new.txt)" = "written through the overlay" ] || fail "cow data after remount"
umount /mnt
vdmount detach /dev/abuse0 || fail "cow detach"
[ "$(sha256sum /tmp/a.qcow2 | cut -d' ' -f1)" = "$before" ] || fail "the image changed under --cow"
# A fresh attach sees the original disk: the ephemeral overlay is gone.
vdmount /tmp/a.qcow2 >/dev/null
mount -o ro /dev/abuse0p1 /mnt
[ ! -e /mnt/new.txt ] || fail "ephemeral overlay survived detach"
(cd /mnt && sha256sum -c /fixtures/e2e.sha256 >/dev/null) || fail "original data after cow session"
umount /mnt
vdmount detach /dev/abuse0
rmmod abuse || fail "rmmod"
echo "attach: ok"
