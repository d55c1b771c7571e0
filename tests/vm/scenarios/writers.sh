#!/bin/sh
# Issue 21: 8 writers and 2 readers at once on a --cow and a --cow=FILE device, checked against
# a model (the raw base file with the same writes applied by dd, one after another). Writer i
# writes the 4 KiB blocks i, i+8, i+16, ... of the first 512 KiB (so all eight share every 64 KiB
# cluster there) and one stretch of its own at a 512-byte offset from cluster boundaries (so
# neighbours share the clusters at the edges), with O_DIRECT, then reads its blocks back while
# the others are still writing. Two readers read the whole device meanwhile. At the end the
# device, and for --cow=FILE the overlay read by a second session, equal the model.
set -e
fail() { echo "writers: $*"; cat /tmp/server.log 2>/dev/null; exit 1; }
dd=/opt/bin/dd
insmod /abuse.ko max_part=15
$dd if=/dev/urandom of=/tmp/base.raw bs=1M count=32 status=none
before=$(sha256sum /tmp/base.raw | cut -d' ' -f1)
for i in 0 1 2 3 4 5 6 7; do
	$dd if=/dev/urandom of=/tmp/pat$i bs=4096 count=16 status=none
	$dd if=/dev/urandom of=/tmp/big$i bs=4096 count=255 status=none
done

# stretch I: the byte offset of writer I's own stretch (8 MiB + I MiB + I * 512).
stretch() { echo $(((8 + $1) * 1048576 + $1 * 512)); }

# writer I DEST [FLAGS]: writer I's writes to DEST (the device with oflag=direct, or the model).
writer() {
	i=$1 dest=$2 flags=$3
	k=0
	while [ $k -lt 16 ]; do
		$dd if=/tmp/pat$i of="$dest" bs=4096 count=1 skip=$k seek=$((k * 8 + i)) conv=notrunc $flags status=none ||
			return 1
		k=$((k + 1))
	done
	$dd if=/tmp/big$i of="$dest" bs=4096 seek="$(stretch "$i")" conv=notrunc oflag=seek_bytes${flags:+,direct} status=none
}

# check I DEV: what writer I wrote reads back from DEV.
check() {
	i=$1 dev=$2
	k=0
	while [ $k -lt 16 ]; do
		$dd if="$dev" of=/tmp/got$i bs=4096 count=1 skip=$((k * 8 + i)) iflag=direct status=none
		$dd if=/tmp/pat$i of=/tmp/want$i bs=4096 count=1 skip=$k status=none
		cmp -s /tmp/got$i /tmp/want$i || { echo "writer $i: block $((k * 8 + i)) differs"; return 1; }
		k=$((k + 1))
	done
	$dd if="$dev" of=/tmp/got$i bs=4096 count=255 skip="$(stretch "$i")" iflag=skip_bytes,direct status=none
	cmp -s /tmp/got$i /tmp/big$i || { echo "writer $i: its stretch differs"; return 1; }
}

cp /tmp/base.raw /tmp/model
for i in 0 1 2 3 4 5 6 7; do writer $i /tmp/model "" || fail "writing the model"; done
want=$(sha256sum /tmp/model | cut -d' ' -f1)

for mode in --cow --cow=/tmp/ovl.qcow2; do
	echo "writers: $mode at $(cut -d' ' -f1 /proc/uptime) s"
	vdmount "$mode" /tmp/base.raw >/tmp/server.log 2>&1 || fail "attach with $mode"
	pids=""
	for i in 0 1 2 3 4 5 6 7; do
		(writer $i /dev/abuse0 oflag=direct && check $i /dev/abuse0) >/tmp/writer$i.log 2>&1 &
		pids="$pids $!"
	done
	readers=""
	for r in 1 2; do
		(while [ ! -e /tmp/writers-done ]; do $dd if=/dev/abuse0 of=/dev/null bs=64k iflag=direct status=none || exit 1; done) &
		readers="$readers $!"
	done
	for p in $pids; do wait "$p" || { cat /tmp/writer*.log; fail "$mode: a writer failed"; }; done
	echo "writers: $mode: writers done at $(cut -d' ' -f1 /proc/uptime) s"
	touch /tmp/writers-done
	for p in $readers; do wait "$p" || fail "$mode: a reader failed"; done
	rm -f /tmp/writers-done
	got=$(sha256sum /dev/abuse0 | cut -d' ' -f1)
	[ "$got" = "$want" ] || fail "$mode: the device differs from the model"
	vdmount detach /dev/abuse0 || fail "$mode: detach"
	echo "writers: $mode matches the model"
done
# The overlay file holds the same disk: a second session shows it.
[ "$(vdmount cat /tmp/ovl.qcow2 | sha256sum | cut -d' ' -f1)" = "$want" ] || fail "the overlay file differs from the model"
[ "$(sha256sum /tmp/base.raw | cut -d' ' -f1)" = "$before" ] || fail "the base changed"
rmmod abuse
echo "writers: ok"
