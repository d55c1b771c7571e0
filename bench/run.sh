#!/bin/bash
# vdmount against qemu on the same images, side by side, in one run (issue 10).
#
#   bench/run.sh                     1 GiB disk; prints a Markdown table
#   BENCH_SIZE=256M bench/run.sh     a quicker run on a smaller disk
#
# Env: BENCH_SIZE (1G), BENCH_DIR (/tmp/vdmount-bench: images, kept between runs),
#      BENCH_REPS (3: each timing is the best of this many runs), BENCH_READS (20000 random
#      4 KiB reads), BENCH_FORMATS (all), BENCH_BIG (1: also the 2 TiB sparse qcow2 checks),
#      BENCH_VM (0: 1 also runs the in-VM comparison, see bench/vm.sh).
#
# Every figure is taken with the image in the page cache. Sequential: `vdmount cat IMG` to
# /dev/null against `qemu-img convert` of IMG to qemu's null-co driver, and `cat` of the raw
# copy (the ceiling). Random: 4 KiB reads at queue depth 1 at the same fixed-seed offsets,
# through examples/randread.rs against qemu-io reading them from stdin; both timed as whole
# processes (open included). Peak RSS from /usr/bin/time.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIZE=${BENCH_SIZE:-1G}
DIR=${BENCH_DIR:-/tmp/vdmount-bench}
REPS=${BENCH_REPS:-3}
READS=${BENCH_READS:-20000}
FORMATS=${BENCH_FORMATS:-"qcow2 qcow2-zlib qcow2-zstd vmdk-sparse vmdk-stream vhd vhdx"}
BYTES=$(numfmt --from=iec "$SIZE")
mkdir -p "$DIR"

log() { echo "$*" >&2; }

# --- build -------------------------------------------------------------------------------
log "building vdmount and examples/randread (release)"
(cd "$ROOT" && cargo build --release --quiet --bin vdmount --example randread) >&2
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
VDMOUNT=$BIN/vdmount
RANDREAD=$BIN/examples/randread

# --- the source disk: GPT, one ext4 partition filled with mixed data, free space after -----
RAW=$DIR/disk-$SIZE.raw
if [ ! -s "$RAW" ]; then
	log "making the $SIZE source disk in $DIR"
	part_bytes=$((BYTES * 9 / 10 / 1048576 * 1048576))
	rm -rf "$DIR/tree" && "$ROOT/bench/make-disk.py" "$DIR/tree" $((part_bytes * 3 / 4))
	rm -f "$DIR/part.img"
	mkfs.ext4 -q -F -L bench -d "$DIR/tree" "$DIR/part.img" $((part_bytes / 1024))k
	truncate -s "$BYTES" "$RAW.tmp"
	echo "label: gpt
start=2048, size=$((part_bytes / 512)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=data" |
		sfdisk -q "$RAW.tmp"
	dd if="$DIR/part.img" of="$RAW.tmp" bs=1M seek=1 conv=notrunc status=none
	rm -rf "$DIR/tree" "$DIR/part.img"
	mv "$RAW.tmp" "$RAW"
fi

# Image name, qemu format name and qemu-img convert options for each bench format.
image_of() { echo "$DIR/disk-$SIZE.$1"; }
qemu_fmt() {
	case $1 in qcow2*) echo qcow2;; vmdk*) echo vmdk;; vhd) echo vpc;; vhdx) echo vhdx;; esac
}
convert_opts() {
	case $1 in
	qcow2) echo "-O qcow2";;
	qcow2-zlib) echo "-O qcow2 -c -o compression_type=zlib";;
	qcow2-zstd) echo "-O qcow2 -c -o compression_type=zstd";;
	vmdk-sparse) echo "-O vmdk -o subformat=monolithicSparse";;
	vmdk-stream) echo "-O vmdk -o subformat=streamOptimized";;
	vhd) echo "-O vpc -o subformat=dynamic";;
	vhdx) echo "-O vhdx -o subformat=dynamic";;
	esac
}
compressed() { case $1 in qcow2-zlib|qcow2-zstd|vmdk-stream) return 0;; *) return 1;; esac; }
for f in $FORMATS; do
	img=$(image_of "$f")
	if [ ! -s "$img" ] || [ "$img" -ot "$RAW" ]; then
		log "converting to $f"
		# Converted under its final name (a VMDK records its own file name as its extent),
		# in a scratch folder, then moved: an interrupted run leaves no half image behind.
		rm -rf "$DIR/converting" && mkdir "$DIR/converting"
		# shellcheck disable=SC2046
		qemu-img convert -f raw $(convert_opts "$f") "$RAW" "$DIR/converting/$(basename "$img")" &&
			mv "$DIR/converting/$(basename "$img")" "$img"
	fi
done

# --- measuring -----------------------------------------------------------------------------
now() { date +%s.%N; }
# measure OUT CMD...: runs CMD (stdout to OUT) BENCH_REPS times; prints "best_seconds peak_rss_kib".
measure() {
	local out=$1; shift
	local best="" rss=0 t0 t1 secs kib
	for _ in $(seq "$REPS"); do
		t0=$(now)
		/usr/bin/time -f %M -o "$DIR/time.out" "$@" >"$out"
		t1=$(now)
		secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", b - a }')
		kib=$(tail -1 "$DIR/time.out")
		best=$(awk -v a="$best" -v b="$secs" 'BEGIN { print (a == "" || b < a) ? b : a }')
		[ "$kib" -gt "$rss" ] && rss=$kib
	done
	echo "$best $rss"
}
# measure_stdin IN CMD...: the same with stdin from IN and stdout discarded.
measure_stdin() {
	local in=$1; shift
	measure /dev/null sh -c '"$@" <"$0"' "$in" "$@"
}
warm() { cat "$@" >/dev/null; }
gbps() { awk -v b="${2:-$BYTES}" -v s="$1" 'BEGIN { printf "%.2f", b / s / 1e9 }'; }
# Virtual size of an image as qemu sees it (a dynamic VHD rounds the size up to its geometry).
vsize() { qemu-img info --output=json "$1" | /usr/bin/python3 -c "import json, sys; print(json.load(sys.stdin)[\"virtual-size\"])"; }
iops() { awk -v n="$READS" -v s="$1" 'BEGIN { printf "%.0f", n / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r >= t) ? "met" : "NOT met" }'; }

warm "$RAW"
read -r raw_s raw_kib < <(measure /dev/null cat "$RAW")
log "cat of the raw copy: $(gbps "$raw_s") GB/s"

"$RANDREAD" "$RAW" --count "$READS" --print-offsets | sed 's/.*/read -q & 4k/' >"$DIR/qemu-io.cmds"

machine="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r), $(qemu-img --version | head -1)"
echo
echo "Machine: $machine. Disk: $SIZE (GPT, ext4: incompressible, text, zeros, small files, free space); image in page cache; best of $REPS; $READS random reads."
echo "\`cat\` of the raw copy: $(gbps "$raw_s") GB/s (the ceiling)."
echo
echo "| format | file MiB | seq vdmount GB/s | seq qemu-img GB/s | ratio (target) | vs cat raw (target) | 4K QD1 vdmount IOPS | qemu-io IOPS | ratio (target) | peak RSS MiB: cat / qemu-img / randread / qemu-io |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for f in $FORMATS; do
	img=$(image_of "$f")
	fmt=$(qemu_fmt "$f")
	size=$(vsize "$img")
	warm "$img"
	read -r our_s our_kib < <(measure /dev/null "$VDMOUNT" cat "$img")
	read -r qemu_s qemu_kib < <(measure /dev/null qemu-img convert -n -f "$fmt" --target-image-opts "$img" "driver=null-co,size=$size")
	read -r rr_s rr_kib < <(measure /dev/null "$RANDREAD" "$img" --count "$READS")
	read -r qio_s qio_kib < <(measure_stdin "$DIR/qemu-io.cmds" qemu-io -r -f "$fmt" "$img")
	seq_ratio=$(ratio "$qemu_s" "$our_s")
	ceil_ratio=$(ratio "$raw_s" "$our_s")
	rand_ratio=$(ratio "$qio_s" "$rr_s")
	if compressed "$f"; then
		seq_target=1.8 ceil_cell="—" rand_target=1.5
	else
		seq_target=1.0 rand_target=1.0
		ceil_cell="$ceil_ratio (0.8, $(verdict "$ceil_ratio" 0.8))"
	fi
	echo "| $f | $(mib $(($(stat -c %s "$img") / 1024))) | $(gbps "$our_s" "$size") | $(gbps "$qemu_s" "$size") | $seq_ratio ($seq_target, $(verdict "$seq_ratio" $seq_target)) | $ceil_cell | $(iops "$rr_s") | $(iops "$qio_s") | $rand_ratio ($rand_target, $(verdict "$rand_ratio" $rand_target)) | $(mib "$our_kib") / $(mib "$qemu_kib") / $(mib "$rr_kib") / $(mib "$qio_kib") |"
done

# streamOptimized random reads against libvmdk (python3-libvmdk), whose small grain cache is
# what vmdkmount users get: same offsets, same checksum of the bytes read, or the run fails.
# Two patterns: spread over the whole disk (nearly every read lands in a grain not read
# before), and inside one 64 MiB stretch of the filesystem (a registry hive or a log read at
# random: the grains are read again and again).
img=$(image_of vmdk-stream)
if case " $FORMATS " in *" vmdk-stream "*) true;; *) false;; esac && /usr/bin/python3 -c 'import pyvmdk' 2>/dev/null; then
	warm "$img"
	echo
	echo "| streamOptimized, $READS random 4K reads at QD1 | vdmount IOPS | libvmdk $(dpkg-query -W -f='${Version}' python3-libvmdk 2>/dev/null) IOPS | ratio (target) | peak RSS MiB: vdmount / libvmdk |"
	echo "|---|---|---|---|---|"
	for pattern in "whole disk:" "64 MiB stretch:--base $((BYTES / 4)) --span 67108864"; do
		name=${pattern%%:*} range=${pattern#*:}
		# shellcheck disable=SC2086
		"$RANDREAD" "$img" --count "$READS" $range --print-offsets >"$DIR/offsets.txt"
		read -r lv_s lv_kib < <(measure_stdin "$DIR/offsets.txt" /usr/bin/python3 "$ROOT/bench/libvmdk-randread.py" "$img")
		# shellcheck disable=SC2086
		read -r rr_s rr_kib < <(measure /dev/null "$RANDREAD" "$img" --count "$READS" $range)
		# shellcheck disable=SC2086
		ours=$("$RANDREAD" "$img" --count "$READS" $range | awk '{ print $4 }')
		theirs=$(/usr/bin/python3 "$ROOT/bench/libvmdk-randread.py" "$img" <"$DIR/offsets.txt" | awk '{ print $4 }')
		[ "$ours" = "$theirs" ] || { log "libvmdk and vdmount read different bytes ($theirs, $ours)"; exit 1; }
		r=$(ratio "$lv_s" "$rr_s")
		echo "| $name | $(iops "$rr_s") | $(iops "$lv_s") | $r (5, $(verdict "$r" 5)) | $(mib "$rr_kib") / $(mib "$lv_kib") |"
	done
fi

if [ "${BENCH_BIG:-1}" = 1 ]; then
	"$ROOT/bench/big.sh" "$DIR" "$VDMOUNT" "$RANDREAD"
fi
if [ "${BENCH_VM:-0}" = 1 ]; then
	"$ROOT/bench/vm.sh" "$DIR" "$SIZE"
fi
