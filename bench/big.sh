#!/bin/bash
# Memory and open time on a 2 TiB sparse qcow2 (issue 10, part 3), called by bench/run.sh.
#   bench/big.sh DIR VDMOUNT RANDREAD
# Two images: an empty 2 TiB qcow2, and one with 64 KiB written in every 512 MiB (so each of
# its 4096 L1 entries has an L2 table: 256 MiB of tables, more than the cache allowed here).
# Peak RSS of `info`, of random reads and of `cat` (first 4 GiB) with --cache-size 64 must
# stay near 64 MiB plus a fixed overhead.
set -euo pipefail
DIR=$1 VDMOUNT=$2 RANDREAD=$3
CACHE_MIB=64
EMPTY=$DIR/big-empty.qcow2 FILLED=$DIR/big-filled.qcow2
[ -s "$EMPTY" ] || qemu-img create -q -f qcow2 "$EMPTY" 2T
if [ ! -s "$FILLED" ]; then
	echo "writing 4096 clusters across a 2 TiB qcow2" >&2
	qemu-img create -q -f qcow2 "$FILLED.tmp" 2T
	seq 0 4095 | awk '{ printf "write -q -P %d %.0f 64k\n", $1 % 250 + 1, $1 * 536870912 }' |
		qemu-io -f qcow2 "$FILLED.tmp" >/dev/null
	mv "$FILLED.tmp" "$FILLED"
fi
cat "$EMPTY" "$FILLED" >/dev/null

# best_ms CMD...: the fastest of 5 runs of CMD, in milliseconds, and its peak RSS in MiB.
best_ms() {
	local best="" rss=0 t0 t1 ms kib
	for _ in 1 2 3 4 5; do
		t0=$(date +%s%N)
		/usr/bin/time -f %M -o "$DIR/time.out" "$@" >/dev/null
		t1=$(date +%s%N)
		ms=$(((t1 - t0) / 1000000))
		kib=$(tail -1 "$DIR/time.out")
		{ [ -z "$best" ] || [ "$ms" -lt "$best" ]; } && best=$ms
		[ "$kib" -gt "$rss" ] && rss=$kib
	done
	echo "$best $((rss / 1024))"
}
# rss_mib CMD...: peak RSS of one run, in MiB.
rss_mib() {
	/usr/bin/time -f %M -o "$DIR/time.out" "$@" >/dev/null
	echo $(($(tail -1 "$DIR/time.out") / 1024))
}

echo
echo "2 TiB sparse qcow2, --cache-size $CACHE_MIB (MiB):"
echo
echo "| image | \`vdmount info\` ms (target < 100) | info RSS MiB | 20000 random 4K reads: RSS MiB | \`cat\`, first 4 GiB: RSS MiB |"
echo "|---|---|---|---|---|"
for img in "$EMPTY" "$FILLED"; do
	read -r ms info_rss < <(best_ms "$VDMOUNT" info --cache-size $CACHE_MIB "$img")
	rr=$(rss_mib "$RANDREAD" "$img" --count 20000 --cache-size $CACHE_MIB)
	cat_rss=$(rss_mib sh -c '"$0" cat --cache-size "$1" "$2" | head -c 4G' "$VDMOUNT" $CACHE_MIB "$img")
	echo "| $(basename "$img") ($(du -m "$img" | cut -f1) MiB on disk) | $ms | $info_rss | $rr | $cat_rss |"
done
