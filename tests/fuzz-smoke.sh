#!/bin/bash
# Short fuzz runs for CI: every cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 60) each,
# from a copy of the committed seed corpus (so CI never grows the repository). Prints one line per
# target, "PASS fuzz/<target> (<execs> execs)" or "FAIL fuzz/<target>: <crash file>", which
# tests/run-all.sh counts. Exit status 0 only if every target passed.
#   FUZZ_SECONDS=N   seconds per target (default 60)
#   FUZZ_JOBS=N      targets run at once (default: the number of cores)
#   FUZZ_TARGETS="a b"  only these targets
#   FUZZ_KEEP=DIR    keep crash files and logs in DIR (default: a temp folder, printed on failure)
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_JOBS=${FUZZ_JOBS:-$(nproc)}
export PATH="$HOME/.cargo/bin:$PATH"
# cargo-fuzz needs nightly-only flags (sanitizer coverage); this lets the stable toolchain take them.
export RUSTC_BOOTSTRAP=1
# Its own build folder (the fuzz build uses different flags from the main one), outside the
# clone so that the next CI run on this machine builds incrementally.
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/vdmount/fuzz-target}

if ! cargo fuzz --version >/dev/null 2>&1; then
	echo "== installing cargo-fuzz (about 3 minutes on 2 cores; kept in ~/.cargo/bin afterwards)"
	cargo install cargo-fuzz --locked >/dev/null 2>&1 || { echo "FAIL fuzz/install: cargo install cargo-fuzz failed"; exit 1; }
fi

cd "$REPO/fuzz"
targets=${FUZZ_TARGETS:-$(cargo fuzz list)}
echo "== building fuzz targets: $(echo $targets)"
if ! cargo fuzz build >build.log 2>&1; then
	tail -n 30 build.log
	for t in $targets; do echo "FAIL fuzz/$t: build failed (see above)"; done
	rm -f build.log
	exit 1
fi
rm -f build.log
bin_dir=$CARGO_TARGET_DIR/$(rustc -vV | sed -n 's/^host: //p')/release

work=${FUZZ_KEEP:-$(mktemp -d /tmp/vdmount-fuzz-smoke.XXXXXX)}
mkdir -p "$work"

run_one() { # target: runs it, leaves log-<target> and crash files in $work
	local t=$1 corpus=$work/corpus-$t
	mkdir -p "$corpus" "$work/crash-$t"
	[ -d "$REPO/fuzz/corpus/$t" ] && cp -L "$REPO/fuzz/corpus/$t"/* "$corpus"/ 2>/dev/null
	# -close_fd_mask=2: the request target logs failed requests to stderr by design.
	local quiet=""
	[ "$t" = serve_batch ] && quiet=-close_fd_mask=2
	(cd "$work" && "$bin_dir/$t" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 $quiet -artifact_prefix="$work/crash-$t/" "$corpus" >"$work/log-$t" 2>&1)
}

report() { # target
	local t=$1 crash execs
	crash=$(ls "$work/crash-$t" 2>/dev/null | head -n 1)
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log-$t" | tail -n 1)
	if [ -n "$crash" ] || [ -z "$execs" ]; then
		echo "FAIL fuzz/$t: ${crash:+$work/crash-$t/$crash}${crash:-no stats, see $work/log-$t}"
		grep -m 3 -E 'panicked|ERROR: libFuzzer|SUMMARY' "$work/log-$t" | sed 's/^/    /'
		return 1
	fi
	echo "PASS fuzz/$t ($execs execs)"
}

start=$(date +%s)
running=0
for t in $targets; do
	run_one "$t" &
	running=$((running + 1))
	if [ "$running" -ge "$FUZZ_JOBS" ]; then
		wait -n
		running=$((running - 1))
	fi
done
wait

failed=0
for t in $targets; do report "$t" || failed=1; done
echo "== fuzz smoke took $(($(date +%s) - start)) s (plus the build)"
[ -z "${FUZZ_KEEP:-}" ] && [ "$failed" = 0 ] && rm -rf "$work"
exit $failed
