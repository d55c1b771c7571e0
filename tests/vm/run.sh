#!/bin/bash
# Runs the VM scenarios on every installed target kernel (or those given), printing one line
# per (kernel, scenario) with its wall time, and a closing "N passed, M failed".
# Usage: tests/vm/run.sh [-s SCENARIO]... [--core] [--kernel NAME|KVER]... [--kernels all|extra] [KVER...]
#   default: every scenario and the power-cut test, on the oldest and newest kernels Debian
#   ships (FULL below: 6.1 and trixie-backports' 7.3); -s powercut for the power-cut test alone.
#   --core: the core scenarios only (CORE below), for the other kernels.
#   --kernel: one kernel, by exact KVER or by NAME (6.1, 6.1-rt, 6.12, 6.12-rt, trixie, sid,
#   trixie-backports: the newest of that kind); fetch-kernel.sh fetches and caches it.
#   --kernels all: every NAME; --kernels extra: all but FULL.
# Env: VM_WORK (default /tmp/vdmount-vm): kernels, build root, initramfs and serial logs.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${VM_WORK:-/tmp/vdmount-vm}
export VM_WORK=$WORK
mkdir -p "$WORK"
# Cheap and covering what differs between kernels: the block device and partitions, every op,
# request ownership across server restarts, the ABI's refusals, and the kernel's ublk driver
# (the second transport; the refusal alone where a kernel has none).
CORE=(e2e ops restart fuzz ublk)
# The whole set runs on the oldest and the newest kernel; the core set on those between.
FULL=(6.1 trixie-backports)
EXTRA=(6.1-rt 6.12 6.12-rt trixie sid)
scenarios=() kvers=() explicit=0 run_powercut=0
while [ $# -gt 0 ]; do
	case "$1" in
	-s) explicit=1; if [ "$2" = powercut ]; then run_powercut=1; else scenarios+=("$2"); fi; shift 2;;
	--core) explicit=1; scenarios+=("${CORE[@]}"); shift;;
	--kernel) kvers+=("$2"); shift 2;;
	--kernels)
		case "$2" in
		all) kvers+=("${FULL[@]}" "${EXTRA[@]}");;
		extra) kvers+=("${EXTRA[@]}");;
		*) echo "--kernels all|extra" >&2; exit 2;;
		esac; shift 2;;
	*) kvers+=("$1"); shift;;
	esac
done
# By default: every scenario, and the power-cut test (which has a host half, powercut.sh).
if [ $explicit = 0 ]; then
	run_powercut=1
	for f in "$HERE"/scenarios/*.sh; do
		case "$(basename "$f")" in demo.sh|bench-*|lib-*|powercut.sh) ;; *) scenarios+=("$(basename "$f" .sh)");; esac
	done
fi
[ ${#kvers[@]} -gt 0 ] || kvers=("${FULL[@]}")

passed=0 failed=0
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
vdmount=$("$HERE/build-vdmount-static.sh") || { echo "static build of vdmount failed" >&2; exit 1; }
for name in "${kvers[@]}"; do
	t0=$(now)
	# Fetched (or found in the cache) first; its .env says where the image is.
	if ! k=$("$HERE/fetch-kernel.sh" "$name" | tail -1) || [ ! -e "$WORK/kernels/$k.env" ]; then
		echo "FAIL vm/$name: fetching the kernel failed"
		failed=$((failed + ${#scenarios[@]} + run_powercut)); continue
	fi
	VMLINUZ=
	# shellcheck disable=SC1090
	. "$WORK/kernels/$k.env"
	echo "  kernel $name: $k ready in $(since "$t0")s"
	t0=$(now)
	if ! "$HERE/extract-vmlinux.sh" "$VMLINUZ" "$WORK/vmlinux-$k" ||
	   ! "$HERE/build-initramfs.sh" "$k" "$vdmount" "$WORK/initramfs-$k.cpio"; then
		echo "FAIL vm/$k: building the kernel or initramfs failed"
		failed=$((failed + ${#scenarios[@]} + run_powercut)); continue
	fi
	echo "  built kernel and initramfs for $k in $(since "$t0")s"
	# The power-cut test has a host half (tests/vm/powercut.sh); it runs with the full set.
	if [ "$run_powercut" = 1 ]; then
		"$HERE/powercut.sh" "$WORK/vmlinux-$k" "$WORK/initramfs-$k.cpio" | tee "$WORK/powercut-$k.out"
		passed=$((passed + $(grep -c '^PASS' "$WORK/powercut-$k.out"))) failed=$((failed + $(grep -c '^FAIL' "$WORK/powercut-$k.out")))
	fi
	for s in "${scenarios[@]}"; do
		t0=$(now)
		log=$WORK/serial-$k-$s.log
		"$HERE/run-vm.sh" "$WORK/vmlinux-$k" "$WORK/initramfs-$k.cpio" "$s" "$log"
		rc=$?
		secs=$(since "$t0")
		if [ $rc = 0 ]; then
			echo "PASS vm/$k/$s (${secs}s)"; passed=$((passed + 1))
			grep -a -o '@@BENCH [^@]*@@' "$log" | sed 's/^/    /' || true
		else
			echo "FAIL vm/$k/$s (${secs}s, rc=$rc): $(grep -a -m1 -o '@@VDM-RESULT: [^@]*@@' "$log" || echo 'no result marker')"
			echo "---- last lines of $log"; tail -40 "$log"; echo "----"
			failed=$((failed + 1))
		fi
	done
done
echo "$passed passed, $failed failed"
[ $failed = 0 ]
