#!/bin/sh
# Issue 7: a VHDX with 4096-byte logical sectors becomes a 4096-byte-sector block device, so the
# GPT written for 4 KiB sectors is found and its ext4 partition mounts.
set -e
fail() { echo "4kn: $*"; cat /tmp/server.log 2>/dev/null; exit 1; }
insmod /abuse.ko max_part=15
vdmount /fixtures/4kn.vhdx >/tmp/out 2>/tmp/server.log || fail "attach"
cat /tmp/out
[ "$(cat /sys/block/abuse0/queue/logical_block_size)" = 4096 ] || fail "logical block size $(cat /sys/block/abuse0/queue/logical_block_size)"
[ -b /dev/abuse0p1 ] || fail "no partition: the GPT was not found"
mount -o ro /dev/abuse0p1 /mnt || fail "mount"
[ "$(cat /mnt/hello.txt)" = "hello from a 4Kn disk" ] || fail "file content"
umount /mnt
vdmount detach /dev/abuse0 || fail "detach"
rmmod abuse
echo "4kn: ok"
