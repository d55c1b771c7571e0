#!/bin/bash
# Compressed images read sequentially (issue 21, part 4): a 1 GiB disk, half log-like text and
# half random data in alternating 4 MiB runs, as a zlib and a zstd qcow2 (qemu-img convert -c),
# a streamOptimized VMDK and an E01 (ewfacquire -c deflate:best). With each image in the page
# cache, one run prints, per image:
#   - `vdmount cat IMG > /dev/null` against the peer reading the whole disk: `qemu-img convert`
#     to qemu's null-co driver (qcow2, VMDK), `ewfexport -t -` (E01);
#   - one sequential reader on one thread in 512 KiB requests (as a server queue answers dd of
#     the device: examples/seqread.rs) with the read-ahead (src/readahead/) and without it:
#     the gain of decoding ahead on several threads;
#   - with VD_BEFORE=/path/to/an/older/vdmount, `cat` by that binary too (before/after).
# Each figure is the median wall time of RUNS runs (default 3), whole processes, taken in turn.
# Ratios: the other's time / ours (above 1: vdmount faster).
#
#   bench/compressed.sh [RUNS]      env: BENCH_DIR (/tmp/vdmount-bench-compressed, images kept)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${1:-3}
DIR=${BENCH_DIR:-/tmp/vdmount-bench-compressed}
SIZE=$((1 << 30))
mkdir -p "$DIR"
(cd "$ROOT" && cargo build --release --quiet --bin vdmount --example seqread) >&2
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
VD=$BIN/vdmount
SEQ=$BIN/examples/seqread

if [ ! -s "$DIR/src.raw" ]; then
	echo "making the 1 GiB source disk and its images in $DIR (about 2 minutes)" >&2
	python3 - "$DIR/src.raw" <<'PY'
import os, random, sys
rng = random.Random(7)
words = b"kernel usb device eth0 link up down error warning session opened closed user root systemd started stopped service cron daemon sshd accepted password for from port".split()
lines, n = [], 0
while n < (16 << 20):
    l = b"Dec  3 %02d:%02d:%02d host " % (rng.randrange(24), rng.randrange(60), rng.randrange(60))
    l += b" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) + b" %d\n" % rng.randrange(1 << 20)
    lines.append(l)
    n += len(l)
text = b"".join(lines)
B = 4 << 20
with open(sys.argv[1], "wb") as f:
    for i in range((1 << 30) // B):
        if i % 2 == 0:
            off = (i * 12345) % (len(text) - B)
            f.write(text[off:off + B])
        else:
            f.write(rng.randbytes(B))
PY
	qemu-img convert -c -f raw -O qcow2 "$DIR/src.raw" "$DIR/zlib.qcow2"
	qemu-img convert -c -f raw -O qcow2 -o compression_type=zstd "$DIR/src.raw" "$DIR/zstd.qcow2"
	qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$DIR/src.raw" "$DIR/stream.vmdk"
	rm -f "$DIR"/ev.E*
	ewfacquire -u -q -c deflate:best -S 4GiB -t "$DIR/ev" "$DIR/src.raw" >/dev/null
fi
want=$(sha256sum <"$DIR/src.raw" | cut -c1-64)

# Median wall seconds of RUNS runs of a shell command, its output thrown away.
median() {
	local i t0 t1 times=()
	for ((i = 0; i < RUNS; i++)); do
		t0=$(date +%s%N)
		sh -c "$1" >/dev/null 2>&1 || { echo "failed: $1" >&2; exit 1; }
		t1=$(date +%s%N)
		times+=($(((t1 - t0) / 1000000)))
	done
	printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { printf "%.3f", a[int((NR + 1) / 2)] / 1000 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; }

echo "Machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%d GiB", $2 / 1048576 }' /proc/meminfo); $(qemu-img --version | head -1); 1 GiB disk, page cache warm; median of $RUNS runs (s)."
echo
echo "| image | file MiB | vdmount cat s | peer | peer s | peer/cat | one stream: no read-ahead s | with read-ahead s | gain | decoded ahead |${VD_BEFORE:+ cat before s | before/after |}"
echo "|---|---|---|---|---|---|---|---|---|---|${VD_BEFORE:+---|---|}"
for img in zlib.qcow2 zstd.qcow2 stream.vmdk ev.E01; do
	f=$DIR/$img
	got=$("$VD" cat "$f" | sha256sum | cut -c1-64)
	[ "$got" = "$want" ] || { echo "$img: vdmount cat differs from the source disk" >&2; exit 1; }
	cat "$f" >/dev/null # into the page cache
	case $img in
	*.E01) peer="ewfexport" peer_cmd="ewfexport -u -q -f raw -t - $f" ;;
	*) peer="qemu-img convert" peer_cmd="qemu-img convert -n -f ${img##*.} $f --target-image-opts driver=null-co,size=$SIZE" ;;
	esac
	ours=$(median "$VD cat $f")
	theirs=$(median "$peer_cmd")
	plain=$(median "$SEQ $f --no-readahead")
	ahead=$(median "$SEQ $f")
	# How much of the disk the read-ahead's threads decoded for the reader (the rest is stored
	# as is, or was read before the stream was found sequential).
	share=$("$SEQ" "$f" | awk -v s=$SIZE '{ printf "%d%%", 100 * $6 / s }')
	row="| $img | $(($(stat -c %s "$f") >> 20)) | $ours | $peer | $theirs | $(ratio "$ours" "$theirs") | $plain | $ahead | $(ratio "$ahead" "$plain") | $share |"
	if [ -n "${VD_BEFORE:-}" ]; then
		before=$(median "$VD_BEFORE cat $f")
		row="$row $before | $(ratio "$ours" "$before") |"
	fi
	echo "$row"
done
