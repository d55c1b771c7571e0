#!/bin/sh
# Issue 4: kill -9 the server while a reader streams a file from the mounted filesystem, start
# a new server with --reattach: the reader finishes with no I/O error and the right checksum.
# 20 rounds.
# Either transport: abuse.ko by default, the kernel's ublk with VDM_TRANSPORT=ublk (lib-transport.sh).
set -e
fail() { echo "restart: $*"; cat /tmp/server.log 2>/dev/null; exit 1; }
. /scenarios/lib-transport.sh
transport_load
mkdir -p /tmp/src
/opt/bin/dd if=/dev/urandom of=/tmp/src/big bs=1M count=24 status=none
want=$(sha256sum /tmp/src/big | cut -d' ' -f1)
/opt/bin/mke2fs -q -t ext4 -d /tmp/src /tmp/fs.raw 40M || fail "mkfs"
rm /tmp/src/big
vdmount --foreground --transport $T /tmp/fs.raw $CTL 2>>/tmp/server.log &
server=$!
wait_dev $server
mount -o ro /dev/$DEV /mnt || fail "mount"
rounds=0
for i in $(seq 1 20); do
	echo 3 >/proc/sys/vm/drop_caches
	(sha256sum /mnt/big >/tmp/sum 2>/tmp/sum.err; echo $? >/tmp/sum.rc) &
	reader=$!
	sleep 0.$((i % 4 + 1))
	kill -9 $server
	wait $server 2>/dev/null || true
	# Odd rounds name the image; even rounds let vdmount find it in /run/vdmount.
	if [ $((i % 2)) = 1 ]; then
		vdmount --foreground --transport $T --reattach /tmp/fs.raw $RCTL 2>>/tmp/server.log &
	else
		vdmount --foreground --transport $T --reattach /dev/$DEV 2>>/tmp/server.log &
	fi
	server=$!
	# A reader still waiting after 90 s fails the round with the server's log, rather than the
	# whole VM running into its time limit with nothing said.
	n=0
	while kill -0 $reader 2>/dev/null; do
		n=$((n + 1)); [ $n -le 900 ] || { ps; fail "round $i: the reader is still waiting 90 s after the reattach"; }
		sleep 0.1
	done
	wait $reader
	[ "$(cat /tmp/sum.rc)" = 0 ] || fail "round $i: reader failed: $(cat /tmp/sum.err)"
	[ "$(cut -d' ' -f1 /tmp/sum)" = "$want" ] || fail "round $i: wrong checksum"
	rounds=$i
done
echo "restart: $rounds kill -9 / reattach rounds, reader never saw an error"
umount /mnt
kill -TERM $server; wait $server || fail "final server exit"
dmesg | grep -q 'I/O error' && fail "the kernel logged I/O errors"
# The sandbox refused nothing the server does (issue 14).
if grep 'refused system call' /tmp/server.log; then fail "the server tripped its sandbox"; fi
transport_unload
echo "restart: ok"
