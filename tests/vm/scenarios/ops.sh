#!/bin/sh
# Issue 4: every op reaches the server and is answered (O_DIRECT read/write, flush, FUA,
# discard, write-zeroes), on a --cow device; the image file is unchanged afterwards; a
# read-only device refuses discard before userspace.
# Either transport: abuse.ko by default, the kernel's ublk with VDM_TRANSPORT=ublk (lib-transport.sh).
set -e
fail() { echo "ops: $*"; [ -f /tmp/server.log ] && cat /tmp/server.log; exit 1; }
wait_readers() { for p in $(jobs -p); do [ "$p" = "$server" ] || wait "$p"; done; }
. /scenarios/lib-transport.sh
transport_load
/opt/bin/dd if=/dev/urandom of=/tmp/img.raw bs=1M count=16 status=none
before=$(sha256sum /tmp/img.raw | cut -d' ' -f1)
vdmount --foreground --transport $T --cow /tmp/img.raw $CTL 2>/tmp/server.log &
server=$!
wait_dev $server
[ "$(cat /sys/block/$DEV/ro)" = 0 ] || fail "cow device is read-only"
[ "$(cat /sys/block/$DEV/queue/write_cache)" = "write back" ] || fail "no write cache advertised"
[ "$(cat /sys/block/$DEV/queue/fua)" = 1 ] || fail "no FUA advertised"

/opt/bin/dd if=/dev/urandom of=/tmp/pat bs=64k count=8 status=none
/opt/bin/dd if=/tmp/pat of=/dev/$DEV bs=64k seek=16 oflag=direct status=none || fail "O_DIRECT write"
/opt/bin/dd if=/dev/$DEV of=/tmp/back bs=64k skip=16 count=8 iflag=direct status=none || fail "O_DIRECT read"
cmp /tmp/pat /tmp/back || fail "read back differs from what was written"
/opt/bin/dd if=/tmp/pat of=/dev/$DEV bs=4k count=4 seek=1000 oflag=direct,dsync status=none || fail "O_DSYNC write"
/opt/bin/dd if=/tmp/pat of=/dev/$DEV bs=4k count=1 seek=2000 conv=fsync status=none || fail "fsync"
sync
/opt/bin/blkdiscard -o 1048576 -l 524288 /dev/$DEV || fail "blkdiscard"
/opt/bin/dd if=/dev/$DEV bs=64k skip=16 count=8 iflag=direct status=none | tr -d '\0' | wc -c | grep -qx 0 || fail "discarded range not zero"
/opt/bin/blkdiscard -z -o 4194304 -l 65536 /dev/$DEV || fail "/opt/bin/blkdiscard -z"
/opt/bin/dd if=/dev/$DEV bs=64k skip=64 count=1 iflag=direct status=none | tr -d '\0' | wc -c | grep -qx 0 || fail "zeroed range not zero"
# a write of 512 bytes (partial 4 KiB overlay block) lands exactly
printf 'sector-sized write' >/tmp/s
/opt/bin/dd if=/tmp/s of=/tmp/s512 bs=512 conv=sync status=none
/opt/bin/dd if=/tmp/s512 of=/dev/$DEV bs=512 seek=7 oflag=direct status=none || fail "512-byte write"
/opt/bin/dd if=/dev/$DEV bs=512 skip=7 count=1 iflag=direct status=none | head -c 18 | grep -q 'sector-sized write' || fail "512-byte write"
/opt/bin/dd if=/dev/$DEV bs=512 skip=6 count=1 iflag=direct status=none | cmp -n 512 - /tmp/img.raw 0 3072 || fail "neighbour sector of the 512-byte write changed"
# A journalled filesystem with 1 KiB blocks writes journal blocks from jbd2's slab caches: those
# pages must reach the server too (hardened usercopy refuses slab objects; abuse.ko bounces them).
/opt/bin/mke2fs -q -t ext4 -b 1024 -F /dev/$DEV || fail "mkfs on the device"
mount /dev/$DEV /mnt || fail "mount"
# Writers that modify the same metadata blocks while the journal commits them make jbd2 copy
# ("freeze") those blocks into slab memory.
for w in 1 2 3; do
	(for i in $(seq 1 120); do echo "w$w $i" >/mnt/w$w-$((i % 9)); rm -f /mnt/w$w-$(((i + 4) % 9)); done) &
done
for i in $(seq 1 150); do echo "entry $i" >/mnt/f$((i % 7)); /opt/bin/dd if=/mnt/f$((i % 7)) of=/mnt/g$((i % 5)) conv=fsync status=none; done
wait_readers
umount /mnt
mount -o ro /dev/$DEV /mnt && [ "$(cat /mnt/f3)" = "entry 150" ] || fail "journalled writes"
umount /mnt
kill -TERM $server; wait $server || fail "server exit status"
cat /tmp/server.log
stats=$(grep 'requests (' /tmp/server.log)
for op in read write fua flush discard write-zeroes; do
	n=$(echo "$stats" | sed -n "s/.*[ (]$op \([0-9]*\).*/\1/p")
	[ -n "$n" ] && [ "$n" -gt 0 ] || fail "no $op request reached the server: $stats"
done
[ "$(sha256sum /tmp/img.raw | cut -d' ' -f1)" = "$before" ] || fail "the image file changed"

# Read-only: the block layer refuses discard and writes before they reach the server.
vdmount --foreground --transport $T /tmp/img.raw $CTL 2>/tmp/server.log &
server=$!
wait_dev $server
[ "$(cat /sys/block/$DEV/ro)" = 1 ] || fail "read-only device not marked ro"
if /opt/bin/blkdiscard /dev/$DEV 2>/dev/null; then fail "discard on a read-only device succeeded"; fi
if /opt/bin/dd if=/tmp/pat of=/dev/$DEV bs=4k count=1 oflag=direct status=none 2>/dev/null; then fail "write on a read-only device succeeded"; fi
# Batching: 8 readers at once (queue depth 8) over a file in RAM, close to a null backend; the
# server's summary gives ABUSE_XFER calls per request (printed for the record, not asserted).
for r in 1 2 3 4 5 6 7 8; do
	/opt/bin/dd if=/dev/$DEV of=/dev/null bs=4k skip=$((r * 512)) count=512 iflag=direct status=none &
done
wait_readers
kill -TERM $server; wait $server
echo "@@BENCH queue depth 8, 4 KiB O_DIRECT reads: $(grep -o '[0-9.]* per request' /tmp/server.log)@@"
grep -q 'write 0 .*discard 0' /tmp/server.log || fail "refused ops reached the server: $(cat /tmp/server.log)"
# The sandbox refused nothing the server does (issue 14).
if grep 'refused system call' /tmp/server.log; then fail "the server tripped its sandbox"; fi
transport_unload
echo "ops: ok"
