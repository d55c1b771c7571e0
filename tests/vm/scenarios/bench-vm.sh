#!/bin/sh
# Issue 10, in-VM part (driven by bench/vm.sh, never by tests/vm/run.sh): the same image served
# by vdmount (/dev/abuse0, and /dev/ublkb0 through the kernel's ublk driver where the kernel has
# it: issue 17) and by qemu-nbd + nbd.ko (/dev/nbd0), and its raw copy on loop,
# read with O_DIRECT by vmbench: 1 MiB sequential, 4 KiB random at QD1 and QD32.
# Virtio disks: vda = the raw copy, then one per image; names and byte sizes come from the
# kernel command line (vdm_bench=raw:SIZE,qcow2:SIZE,...). Results: "@@BENCH key value@@".
set -e
fail() { echo "bench: $*"; exit 1; }
spec=$(sed -n 's/.*vdm_bench=\([^ ]*\).*/\1/p' /proc/cmdline)
secs=$(sed -n 's/.*vdm_bench_secs=\([^ ]*\).*/\1/p' /proc/cmdline)
only=$(sed -n 's/.*vdm_bench_only=\([^ ]*\).*/\1/p' /proc/cmdline)
[ -n "$spec" ] || fail "no vdm_bench= on the kernel command line"
insmod /abuse.ko max_part=15 || fail "insmod abuse"
insmod /mods/nbd.ko nbds_max=3 || fail "insmod nbd"
mkdir -p /var/lock
mount -o remount,size=90% /tmp
ublk=0
if [ -s /mods/extra/order ]; then
	while read -r m; do insmod "/mods/extra/$m" || fail "insmod $m"; done </mods/extra/order
	ublk=1
fi

# Copy every image into RAM (tmpfs) so that no path pays for virtio.
i=0
for item in $(echo "$spec" | tr , ' '); do
	name=${item%%:*} size=${item#*:}
	dev=/dev/vd$(echo abcdefgh | cut -c$((i + 1)))
	/opt/bin/dd if="$dev" of="/tmp/$name" bs=1M count="$size" iflag=count_bytes status=none ||
		fail "copying $dev"
	i=$((i + 1))
done
ls -l /tmp

# run DEV LABEL: the three measurements on DEV.
run() {
	echo "@@BENCH $2.seq $(/opt/bin/vmbench seq "$1")@@"
	echo "@@BENCH $2.qd1 $(/opt/bin/vmbench rand "$1" 1 "$secs")@@"
	echo "@@BENCH $2.qd32 $(/opt/bin/vmbench rand "$1" 32 "$secs")@@"
	echo "@@BENCH $2.qd128 $(/opt/bin/vmbench rand "$1" 128 "$secs")@@"
}

# vdm_bench_only=writes (BENCH_VM_ONLY in bench/vm.sh): the write bench alone.
if [ "$only" != writes ]; then
	losetup -r /dev/loop0 /tmp/raw || fail "losetup"
	run /dev/loop0 loop
	losetup -d /dev/loop0

	# The raw copy too: vdmount serving it against loop shows the cost of the protocol alone.
	for item in $(echo "$spec" | tr , ' '); do
		name=${item%%:*}
		fmt=${name%%-*}
		t0=$(cut -d' ' -f1 /proc/uptime)
		vdmount --foreground "/tmp/$name" /dev/abctl0 >/tmp/vdm.log 2>&1 &
		server=$!
		n=0
		while [ ! -b /dev/abuse0p1 ]; do
			n=$((n + 1)); [ $n -le 600 ] || fail "no /dev/abuse0p1 for $name"
			kill -0 $server 2>/dev/null || { cat /tmp/vdm.log; fail "vdmount exited early"; }
			sleep 0.05
		done
		echo "@@BENCH $name.abuse.attach_s $(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { print b - a }')@@"
		run /dev/abuse0 "$name.abuse"
		kill -TERM $server
		wait $server || fail "vdmount exit status $?"

		if [ $ublk = 1 ]; then
			vdmount --foreground --transport ublk "/tmp/$name" >/tmp/vdm.log 2>&1 &
			server=$!
			n=0
			while [ ! -b /dev/ublkb0p1 ]; do
				n=$((n + 1)); [ $n -le 600 ] || fail "no /dev/ublkb0p1 for $name"
				kill -0 $server 2>/dev/null || { cat /tmp/vdm.log; fail "vdmount (ublk) exited early"; }
				sleep 0.05
			done
			run /dev/ublkb0 "$name.ublk"
			kill -TERM $server
			wait $server || fail "vdmount (ublk) exit status $?"
		fi

		case $fmt in raw) qfmt=raw;; vmdk) qfmt=vmdk;; vhd) qfmt=vpc;; vhdx) qfmt=vhdx;; *) qfmt=qcow2;; esac
		/opt/bin/qemu-nbd -r -f $qfmt -c /dev/nbd0 "/tmp/$name" || fail "qemu-nbd $name"
		# The size is set asynchronously after qemu-nbd -c returns.
		n=0
		while [ "$(cat /sys/block/nbd0/size)" = 0 ]; do
			n=$((n + 1)); [ $n -le 200 ] || fail "/dev/nbd0 has no size"
			sleep 0.05
		done
		run /dev/nbd0 "$name.nbd"
		/opt/bin/qemu-nbd -d /dev/nbd0 >/dev/null
		sleep 0.5
	done
	# Attaching the empty 2 TiB qcow2: `vdmount IMAGE CTLDEV` returns once the device is up.
	t0=$(cut -d' ' -f1 /proc/uptime)
	vdmount /opt/big-empty.qcow2 /dev/abctl0 >/dev/null || fail "attaching the 2 TiB image"
	echo "@@BENCH big.attach_ms $(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { print (b - a) * 1000 }')@@"
	/opt/bin/vmbench rand /dev/abuse0 1 "$secs" >/dev/null || fail "reading the 2 TiB image"
	pid=$(sed -n 's/^pid=//p' /run/vdmount/abuse0)
	[ -n "$pid" ] || fail "no record of the server in /run/vdmount"
	echo "@@BENCH big.rss_mib $(awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status")@@"
	vdmount detach /dev/abuse0 || fail "detaching the 2 TiB image"
	while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
fi

# Issue 21: writes, only ever into scratch: an overlay of the qcow2 image or a copy of the raw
# one in tmpfs. vdmount --cow and --cow=FILE against qemu-nbd -s (its own throwaway overlay),
# qemu-nbd on a qcow2 overlay whose backing file is the image (/opt/ovl-qemu.qcow2, made by
# bench/vm.sh), and loop on a raw copy.
wrun() {
	echo "@@BENCH $2.wqd1 $(/opt/bin/vmbench wrand "$1" 1 "$secs")@@"
	echo "@@BENCH $2.wqd32 $(/opt/bin/vmbench wrand "$1" 32 "$secs")@@"
	echo "@@BENCH $2.wseq $(/opt/bin/vmbench wseq "$1")@@"
}
# wabuse LABEL ARGS...: vdmount with ARGS on /dev/abuse0, written, then stopped.
wabuse() {
	label=$1
	shift
	vdmount --foreground "$@" /dev/abctl0 >/tmp/vdm.log 2>&1 &
	server=$!
	n=0
	while [ ! -b /dev/abuse0p1 ]; do
		n=$((n + 1)); [ $n -le 600 ] || fail "no /dev/abuse0p1 for $label"
		kill -0 $server 2>/dev/null || { cat /tmp/vdm.log; fail "vdmount ($label) exited early"; }
		sleep 0.05
	done
	wrun /dev/abuse0 "$label"
	kill -TERM $server
	wait $server || fail "vdmount ($label) exit status $?"
}
# wnbd LABEL DEV ARGS...: qemu-nbd with ARGS on DEV, written, then disconnected. Each run has
# its own nbd device: a server that is still exiting removes its socket, which is named after
# the device, and would take the next server's with it.
wnbd() {
	label=$1 dev=$2
	shift 2
	/opt/bin/qemu-nbd "$@" -c "$dev" || fail "qemu-nbd $label"
	n=0
	while [ "$(cat "/sys/block/${dev#/dev/}/size")" = 0 ]; do
		n=$((n + 1)); [ $n -le 200 ] || fail "$dev has no size"
		sleep 0.05
	done
	wrun "$dev" "$label"
	/opt/bin/qemu-nbd -d "$dev" >/dev/null
}
if [ -s /tmp/qcow2 ] && [ -s /opt/ovl-qemu.qcow2 ]; then
	export TMPDIR=/tmp
	# qemu-nbd -s puts its overlay in /var/tmp, whatever TMPDIR says.
	mkdir -p /var/tmp
	wabuse cow --cow /tmp/qcow2
	wabuse cowfile --cow=/tmp/ovl-vdm.qcow2 /tmp/qcow2
	rm -f /tmp/ovl-vdm.qcow2
	wnbd nbd-s /dev/nbd1 -s -f qcow2 /tmp/qcow2
	# Its backing file name is "qcow2", beside it.
	cp /opt/ovl-qemu.qcow2 /tmp/ovl-qemu.qcow2
	wnbd nbd-chain /dev/nbd2 -f qcow2 /tmp/ovl-qemu.qcow2
	rm -f /tmp/ovl-qemu.qcow2
	cp /tmp/raw /tmp/raw-w
	losetup /dev/loop1 /tmp/raw-w || fail "losetup (writable)"
	wrun /dev/loop1 loopw
	losetup -d /dev/loop1
	rm -f /tmp/raw-w
fi
rmmod abuse
echo "bench: ok"
