#!/bin/sh
# Issue 8: --cow=FILE keeps writes in a qcow2 overlay: what the device showed is what FILE holds
# afterwards (read back by vdmount's qcow2 reader, which follows FILE's backing file), a second
# session on FILE sees the writes, and the image itself never changes.
# Either transport: abuse.ko by default, the kernel's ublk with VDM_TRANSPORT=ublk (lib-transport.sh).
set -e
fail() { echo "cowfile: $*"; cat /run/vdmount/*.log 2>/dev/null; exit 1; }
. /scenarios/lib-transport.sh
transport_load
cp /fixtures/e2e.qcow2 /tmp/base.qcow2
before=$(sha256sum /tmp/base.qcow2 | cut -d' ' -f1)
vdmount --transport $T --cow=/tmp/ovl.qcow2 /tmp/base.qcow2 >/tmp/out || fail "attach with --cow=FILE"
cat /tmp/out
mount /dev/${DEV}p1 /mnt || fail "rw mount"
/opt/bin/dd if=/dev/urandom of=/mnt/new.bin bs=64k count=20 conv=fsync status=none
echo "kept in the overlay" >/mnt/note.txt
rm /mnt/docs/log.txt
want=$(sha256sum /mnt/new.bin | cut -d' ' -f1)
umount /mnt
shown=$(sha256sum /dev/$DEV | cut -d' ' -f1)
vdmount detach /dev/$DEV || fail "detach"
[ "$(sha256sum /tmp/base.qcow2 | cut -d' ' -f1)" = "$before" ] || fail "the image changed"
vdmount info /tmp/ovl.qcow2 | grep -q 'backing file' || fail "overlay has no backing file"
[ "$(vdmount cat /tmp/ovl.qcow2 | sha256sum | cut -d' ' -f1)" = "$shown" ] || fail "overlay content differs from what the device showed"
# A second session continues the same overlay.
vdmount --transport $T --cow=/tmp/ovl.qcow2 /tmp/base.qcow2 >/dev/null || fail "reattach the overlay"
mount /dev/${DEV}p1 /mnt
[ "$(cat /mnt/note.txt)" = "kept in the overlay" ] || fail "note.txt lost"
[ "$(sha256sum /mnt/new.bin | cut -d' ' -f1)" = "$want" ] || fail "new.bin differs"
[ ! -e /mnt/docs/log.txt ] || fail "deleted file came back"
umount /mnt
vdmount detach /dev/$DEV
# abuse.ko: reads were answered as extents of the overlay and the image (the checksums above
# checked them). ublk has no extents.
[ "$T" = ublk ] || grep -q "of which [1-9][0-9]* as extents" $LOG || fail "no read was answered with extents"
# An overlay of another image is refused.
cp /fixtures/e2e.qcow2 /tmp/other.qcow2
if vdmount --cow=/tmp/ovl.qcow2 /tmp/other.qcow2 2>/tmp/err; then fail "overlay of another image accepted"; fi
grep -q 'is an overlay of' /tmp/err || fail "refusal message: $(cat /tmp/err)"
transport_unload
echo "cowfile: ok"
