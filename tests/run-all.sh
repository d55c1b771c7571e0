#!/bin/bash
# The whole test suite, from a fresh Debian 12 machine: installs what is missing (root), runs
# the Rust tests (format readers against qemu-img and the other oracles, hostile images, the
# uapi layout), then all VM scenarios on Debian's 6.1 and trixie-backports' 7.3 kernels, and the
# core ones on the other kernels Debian ships (6.1-rt, 6.12, 6.12-rt, trixie, sid; all but 6.1
# fetched and cached by tests/vm/fetch-kernel.sh; SKIP_EXTRA_KERNELS=1 leaves these out), then the Debian
# packages in clean Debian 12 and 13 roots (tests/package.sh; SKIP_PACKAGE=1). Ends with a line
# "N passed, M failed"; exit status 0 only if nothing failed.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
passed=0 failed=0
t_start=$(date +%s)

if ! "$REPO/tests/vm/setup-host.sh" --check 2>/dev/null; then
	echo "== installing test dependencies (tests/vm/setup-host.sh) (at $(( $(date +%s) - t_start )) s)"
	if [ "$(id -u)" = 0 ]; then "$REPO/tests/vm/setup-host.sh"; else sudo "$REPO/tests/vm/setup-host.sh"; fi ||
		{ echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }
fi

echo "== cargo test (at $(( $(date +%s) - t_start )) s)"
log=$(mktemp)
cargo test --release --locked --no-fail-fast 2>&1 | tee "$log"
cargo_rc=${PIPESTATUS[0]}
p=$(sed -nE 's/^test result: .* ([0-9]+) passed; ([0-9]+) failed.*/\1/p' "$log" | awk '{s += $1} END {print s + 0}')
f=$(sed -nE 's/^test result: .* ([0-9]+) passed; ([0-9]+) failed.*/\2/p' "$log" | awk '{s += $1} END {print s + 0}')
passed=$((passed + p)) failed=$((failed + f))
if [ "$cargo_rc" != 0 ] && [ "$f" = 0 ]; then
	echo "FAIL cargo test exited with $cargo_rc (build failure?)"; failed=$((failed + 1))
fi

echo "== cargo fmt --check, cargo clippy -D warnings (at $(( $(date +%s) - t_start )) s)"
{ cargo fmt --version && cargo clippy --version; } >/dev/null 2>&1 || rustup component add rustfmt clippy >/dev/null 2>&1
if cargo fmt --check >"$log" 2>&1; then echo "PASS cargo fmt --check"; passed=$((passed + 1))
else echo "FAIL cargo fmt --check (run cargo fmt):"; head -40 "$log"; failed=$((failed + 1)); fi
if cargo clippy --release --locked --all-targets -- -D warnings >"$log" 2>&1; then echo "PASS cargo clippy"; passed=$((passed + 1))
else echo "FAIL cargo clippy --all-targets -- -D warnings:"; grep -A8 -E '^(warning|error)' "$log" | head -60; failed=$((failed + 1)); fi

if [ -x "$REPO/tests/fuzz-smoke.sh" ] && [ "${SKIP_FUZZ:-0}" != 1 ]; then
	echo "== fuzz targets (short runs from the committed corpus) (at $(( $(date +%s) - t_start )) s)"
	"$REPO/tests/fuzz-smoke.sh" | tee "$log"
	passed=$((passed + $(grep -c '^PASS' "$log"))) failed=$((failed + $(grep -c '^FAIL' "$log")))
fi

echo "== VM scenarios, all of them, on 6.1 and 7.3 (abuse.ko on each kernel) (at $(( $(date +%s) - t_start )) s)"
full=(--kernel 6.1); [ "${SKIP_EXTRA_KERNELS:-0}" = 1 ] || full+=(--kernel trixie-backports)
"$REPO/tests/vm/run.sh" "${full[@]}" | tee "$log"
passed=$((passed + $(grep -c '^PASS' "$log"))) failed=$((failed + $(grep -c '^FAIL' "$log")))
grep -q 'passed, .* failed' "$log" || { echo "FAIL VM run did not finish"; failed=$((failed + 1)); }

if [ "${SKIP_EXTRA_KERNELS:-0}" != 1 ]; then
	echo "== VM core scenarios on the other kernels Debian ships (at $(( $(date +%s) - t_start )) s)"
	if [ "$(id -u)" = 0 ]; then
		"$REPO/tests/vm/run.sh" --core --kernels extra | tee "$log"
		passed=$((passed + $(grep -c '^PASS' "$log"))) failed=$((failed + $(grep -c '^FAIL' "$log")))
		grep -q 'passed, .* failed' "$log" || { echo "FAIL extra-kernel VM run did not finish"; failed=$((failed + 1)); }
	else
		# debootstrap, chroot and apt-get download need root (CI runs as root).
		echo "FAIL vm/extra-kernels: fetching and building for these kernels needs root (or set SKIP_EXTRA_KERNELS=1)"
		failed=$((failed + 1))
	fi
fi
if [ "${SKIP_PACKAGE:-0}" != 1 ]; then
	echo "== Debian packages installed and purged in clean Debian 12 and 13 roots (tests/package.sh) (at $(( $(date +%s) - t_start )) s)"
	if [ "$(id -u)" = 0 ]; then
		"$REPO/tests/package.sh" | tee "$log"
		passed=$((passed + $(grep -c '^PASS' "$log"))) failed=$((failed + $(grep -c '^FAIL' "$log")))
		grep -q 'passed, .* failed' "$log" || { echo "FAIL package test did not finish"; failed=$((failed + 1)); }
	else
		echo "FAIL pkg: debootstrap and chroot need root (or set SKIP_PACKAGE=1)"; failed=$((failed + 1))
	fi
fi
rm -f "$log"

echo "== whole suite took $(( $(date +%s) - t_start )) s"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
