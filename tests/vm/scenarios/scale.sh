#!/bin/sh
# Issue 21: devices on demand. Loaded with max_abuse=2, 64 images are attached at once (62
# devices made by ABUSE_CTL_GET_FREE when none was free), each read whole and checked against
# the SHA-256 of the raw data made on the host, then detached: the devices made on demand go
# away with them, the two from load stay. Then 6 attach/read/detach loops race each other and
# 2 control fuzzers (random ADD, REMOVE, GET_FREE); rmmod succeeds afterwards.
# bench/scale.sh boots it with vdm_scale_n=N (attachments instead of 64) and vdm_scale_races=0.
set -e
fail() {
	echo "scale: $*"; ls /dev | grep -c abctl; free
	for f in /run/vdmount/*.log; do tail -3 "$f"; done 2>/dev/null | tail -30; exit 1
}
ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }
want() { sed -n "s/ img$1\$//p" /fixtures/scale/sums; }
n=$(sed -n 's/.*vdm_scale_n=\([0-9]*\).*/\1/p' /proc/cmdline)
n=${n:-64}
races=$(sed -n 's/.*vdm_scale_races=\([0-9]*\).*/\1/p' /proc/cmdline)
insmod /abuse.ko max_abuse=2 max_part=15
[ -c /dev/abctl1 ] && [ ! -e /dev/abctl2 ] || fail "max_abuse=2 did not make exactly abctl0 and abctl1"

# n attachments at once, each timed; i % 4 picks the image.
i=0 total=0 worst=0
while [ $i -lt "$n" ]; do
	t0=$(ms)
	vdmount "/fixtures/scale/img$((i % 4)).qcow2" >/tmp/att$i 2>&1 || { cat /tmp/att$i; fail "attach $i"; }
	t=$(($(ms) - t0)) total=$((total + t))
	[ $t -le $worst ] || worst=$t
	i=$((i + 1))
done
[ -c /dev/abctl$((n - 1)) ] || fail "no /dev/abctl$((n - 1)) after $n attachments"
rss=0
i=0
while [ $i -lt "$n" ]; do
	dev=$(sed -n 's#^\(/dev/abuse[0-9]*\): .*#\1#p' /tmp/att$i)
	[ -b "$dev" ] || fail "attach $i: no device in: $(cat /tmp/att$i)"
	echo "$dev" >>/tmp/devs
	got=$(sha256sum <"$dev" | cut -d' ' -f1)
	[ "$got" = "$(want $((i % 4)))" ] || fail "attach $i: $dev does not read as img$((i % 4))"
	pid=$(sed -n 's/.*served by pid \([0-9]*\).*/\1/p' /tmp/att$i)
	rss=$((rss + $(awk '/^VmRSS:/ { print $2 }' /proc/$pid/status)))
	i=$((i + 1))
done
[ "$(sort -u /tmp/devs | wc -l)" = "$n" ] || fail "$n attachments did not get $n devices"
[ "$(vdmount list | grep -c serving)" = "$n" ] || fail "list does not show $n serving devices"
echo "@@BENCH scale: $n attaches: mean $((total / n)) ms, slowest $worst ms; servers' RSS $((rss / 1024)) MiB@@"
while read -r dev; do vdmount detach "$dev" || fail "detach $dev"; done </tmp/devs
left=$(ls /dev | grep abctl | sort | tr '\n' ' ')
[ "$left" = "abctl0 abctl1 " ] || fail "after detaching all, control devices left: $left"
[ "$races" != 0 ] || { rmmod abuse || fail "rmmod"; echo "scale: ok"; exit 0; }

# Races: attach/read/detach loops against each other and against the control fuzzers.
race() {
	l=$1 k=$2 round=0
	while [ $round -lt 8 ]; do
		vdmount "/fixtures/scale/img$k.qcow2" >/tmp/race$l 2>&1 || { echo "loop $l: attach: $(cat /tmp/race$l)"; return 1; }
		dev=$(sed -n 's#^\(/dev/abuse[0-9]*\): .*#\1#p' /tmp/race$l)
		[ "$(sha256sum <"$dev" | cut -d' ' -f1)" = "$(want "$k")" ] || { echo "loop $l: $dev misread"; return 1; }
		vdmount detach "$dev" || { echo "loop $l: detach $dev"; return 1; }
		round=$((round + 1))
	done
}
pids=
for l in 0 1 2 3 4 5; do (set +e; race $l $((l % 4)) >/tmp/loop$l 2>&1; echo $? >/tmp/loop$l.rc) & pids="$pids $!"; done
for s in 1 2; do (set +e; abuse-ioctl-fuzz --control 3000 $s >/tmp/fz$s 2>&1; echo $? >/tmp/fz$s.rc) & pids="$pids $!"; done
for p in $pids; do wait "$p" || true; done
for l in 0 1 2 3 4 5; do [ "$(cat /tmp/loop$l.rc)" = 0 ] || fail "race loop $l: $(cat /tmp/loop$l)"; done
for s in 1 2; do cat /tmp/fz$s; [ "$(cat /tmp/fz$s.rc)" = 0 ] || fail "control fuzzer $s"; done
[ "$(vdmount list 2>/dev/null | grep -c serving)" = 0 ] || fail "a device is still served after the races"
rmmod abuse || fail "rmmod"
[ ! -e /sys/module/abuse ] || fail "abuse.ko still loaded"
echo "scale: ok"
