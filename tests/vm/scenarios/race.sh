#!/bin/sh
# Issue 16: two `vdmount IMAGE` without CTLDEV started at the same moment both get a device,
# and different ones: ABUSE_CTL_GET_FREE reserves the device it names for the asking control
# file until it is closed (after ABUSE_SETUP), so the second asker is given the next one.
set -e
fail() { echo "race: $*"; cat /tmp/r0 /tmp/r1 /run/vdmount/*.log 2>/dev/null; exit 1; }
insmod /abuse.ko max_part=15
round=1
while [ $round -le 6 ]; do
	vdmount /fixtures/e2e.qcow2 >/tmp/r0 2>&1 & p0=$!
	vdmount /fixtures/e2e.qcow2 >/tmp/r1 2>&1 & p1=$!
	wait $p0 || fail "round $round: first vdmount failed"
	wait $p1 || fail "round $round: second vdmount failed"
	d0=$(sed -n 's#^\(/dev/abuse[0-9]*\): .*#\1#p' /tmp/r0)
	d1=$(sed -n 's#^\(/dev/abuse[0-9]*\): .*#\1#p' /tmp/r1)
	[ -n "$d0" ] && [ -n "$d1" ] || fail "round $round: a device line is missing"
	[ "$d0" != "$d1" ] || fail "round $round: both report $d0"
	for d in $d0 $d1; do
		[ -b "${d}p1" ] || fail "round $round: no ${d}p1"
		# The ext4 label (superblock at 1024, label at +120), read through the device.
		dd if="${d}p1" bs=8 skip=143 count=1 2>/dev/null | grep -q vdm-e2e ||
			fail "round $round: ${d}p1 does not read as the image"
	done
	echo "race: round $round: $d0 and $d1"
	vdmount detach "$d0" || fail "round $round: detach $d0"
	vdmount detach "$d1" || fail "round $round: detach $d1"
	round=$((round + 1))
done
# Nothing is left reserved: the next attach gets abuse0 again.
vdmount /fixtures/e2e.qcow2 >/tmp/r0 || fail "attach after the races"
grep -q '^/dev/abuse0:' /tmp/r0 || fail "after the races, attach did not get abuse0"
vdmount detach /dev/abuse0
rmmod abuse || fail "rmmod"
echo "race: ok"
