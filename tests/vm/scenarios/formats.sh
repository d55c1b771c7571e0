#!/bin/sh
# Issue 18: the e2e disk converted by qemu-img to the newer formats (VDI, QED) and acquired by
# ewfacquire as an EnCase E01 set, and written as an Apple sparse image and sparse bundle by
# make-sparse-fixtures.py, served through abuse.ko,
# its ext4 partition mounted and every file checked.
set -e
fail() { echo "formats: $*"; exit 1; }
insmod /abuse.ko max_part=15 || fail "insmod"
for img in /fixtures/e2e.vdi /fixtures/e2e.qed /fixtures/e2e.E01 /fixtures/e2e.sparseimage /fixtures/e2e.sparsebundle; do
	vdmount "$img" /dev/abctl0 >/tmp/attach.out 2>&1 || { cat /tmp/attach.out; fail "vdmount $img"; }
	grep -q "^/dev/abuse0: $img (" /tmp/attach.out || { cat /tmp/attach.out; fail "$img: attach line"; }
	mount -t ext4 -o ro /dev/abuse0p1 /mnt || { cat /tmp/attach.out; fail "$img: mount"; }
	(cd /mnt && sha256sum -c /fixtures/e2e.sha256 >/dev/null) || fail "$img: checksums"
	umount /mnt
	vdmount detach /dev/abuse0 || fail "$img: detach"
	i=0
	while [ -e /sys/block/abuse0 ]; do
		i=$((i + 1)); [ $i -le 100 ] || fail "$img: /dev/abuse0 still there after detach"
		sleep 0.1
	done
	echo "formats: $img ok"
done
rmmod abuse || fail "rmmod"
echo "formats: ok"
