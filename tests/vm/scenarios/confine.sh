#!/bin/sh
# Issue 14: serving an image whose backing file lies outside its folder is refused (one line
# naming the image, the name and the option), and served with --allow-dir.
set -e
fail() { echo "confine: $*"; exit 1; }
insmod /abuse.ko max_part=15 || fail "insmod"
if vdmount /fixtures/confine/child.qcow2 /dev/abctl0 2>/tmp/refused.err; then
	fail "an image whose backing file is outside its folder was served"
fi
cat /tmp/refused.err
[ "$(wc -l </tmp/refused.err)" = 1 ] || fail "the refusal is not one line"
grep -q 'child.qcow2: names its backing file "../e2e.qcow2", which resolves to /fixtures/e2e.qcow2, outside /fixtures/confine' /tmp/refused.err ||
	fail "the refusal does not say what was named and where it leads"
grep -q -- "--allow-dir /fixtures" /tmp/refused.err || fail "the refusal does not name the option"
[ ! -e /sys/block/abuse0 ] || fail "/dev/abuse0 exists after a refusal"

vdmount --allow-dir /fixtures /fixtures/confine/child.qcow2 /dev/abctl0 || fail "vdmount --allow-dir"
mount -t ext4 -o ro /dev/abuse0p1 /mnt || fail "mount"
(cd /mnt && sha256sum -c /fixtures/e2e.sha256 >/dev/null) || fail "checksums through the overlay"
# The record keeps --allow-dir: a reattach from it alone opens the chain the same way.
grep -q '^allow_dir=/fixtures$' /run/vdmount/abuse0 || { cat /run/vdmount/abuse0; fail "the record lacks allow_dir"; }
pid=$(sed -n 's/^pid=//p' /run/vdmount/abuse0)
kill -9 "$pid"
vdmount --reattach /dev/abuse0 || fail "reattach from the record"
(cd /mnt && sha256sum -c /fixtures/e2e.sha256 >/dev/null) || fail "checksums after the reattach"
umount /mnt
vdmount detach /dev/abuse0 || fail "detach"
i=0
while [ -e /sys/block/abuse0 ]; do
	i=$((i + 1)); [ $i -le 100 ] || fail "/dev/abuse0 still there 10 s after detach"
	sleep 0.1
done
rmmod abuse || fail "rmmod"
echo "confine: ok"
