#!/bin/bash
# Runs the VM scenarios on every installed target kernel (or those given), printing one line
# per (kernel, scenario) with its wall time, and a closing "N passed, M failed".
# Usage: tests/vm/run.sh [-s SCENARIO]... [KVER...]   (default: every scenario, every kernel;
#        -s powercut for the power-cut test)
# Env: VM_WORK (default /tmp/vdmount-vm): kernels, initramfs and serial logs.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${VM_WORK:-/tmp/vdmount-vm}
mkdir -p "$WORK"
scenarios=() kvers=() explicit=0 run_powercut=0
while [ $# -gt 0 ]; do
	case "$1" in
	-s) explicit=1; if [ "$2" = powercut ]; then run_powercut=1; else scenarios+=("$2"); fi; shift 2;;
	*) kvers+=("$1"); shift;;
	esac
done
# By default: every scenario, and the power-cut test (which has a host half, powercut.sh).
if [ $explicit = 0 ]; then
	run_powercut=1
	for f in "$HERE"/scenarios/*.sh; do
		case "$(basename "$f")" in demo.sh|bench-*|powercut.sh) ;; *) scenarios+=("$(basename "$f" .sh)");; esac
	done
fi
[ ${#kvers[@]} -gt 0 ] || for d in /lib/modules/*/build; do kvers+=("$(basename "$(dirname "$d")")"); done
[ ${#kvers[@]} -gt 0 ] || { echo "no kernels with headers under /lib/modules: run tests/vm/setup-host.sh" >&2; exit 1; }

passed=0 failed=0
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
vdmount=$("$HERE/build-vdmount-static.sh") || { echo "static build of vdmount failed" >&2; exit 1; }
for k in "${kvers[@]}"; do
	t0=$(now)
	if ! "$HERE/extract-vmlinux.sh" "/boot/vmlinuz-$k" "$WORK/vmlinux-$k" ||
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
