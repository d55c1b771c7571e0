#!/bin/bash
# In-VM comparison (issue 10): /dev/abuse0 (vdmount) against qemu-nbd + nbd.ko on the same
# image, and loop on the raw copy, inside one QEMU VM (scenario tests/vm/scenarios/bench-vm.sh).
#   bench/vm.sh DIR SIZE [KVER]     (called by bench/run.sh with BENCH_VM=1)
# Env: BENCH_VM_FORMATS (every bench format), BENCH_VM_SECS (5: seconds per random test),
# BENCH_VM_ONLY=writes (the write bench alone; it needs qcow2 in the formats), BENCH_VDMOUNT
# (a static vdmount to measure instead of this tree's, e.g. an older one for before/after).
# Under TCG (no usable KVM here) absolute figures are 1-2 orders of magnitude below native:
# only the ratios between paths in the same VM mean anything.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=$1 SIZE=$2
KVER=${3:-$(ls -d /lib/modules/*/build 2>/dev/null | sort -V | tail -1 | xargs dirname | xargs basename)}
FORMATS=${BENCH_VM_FORMATS:-"qcow2 qcow2-zlib qcow2-zstd vmdk-sparse vmdk-stream vhd vhdx"}
SECS=${BENCH_VM_SECS:-5}
W=$DIR/vm
mkdir -p "$W"
log() { echo "$*" >&2; }

log "VM bench on $KVER: building a static vdmount, the initramfs and vmbench"
vdmount=${BENCH_VDMOUNT:-$(CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/static "$ROOT/tests/vm/build-vdmount-static.sh")}
# A kernel fetched by tests/vm/fetch-kernel.sh (7.x, trixie's 6.12) says in its .env where it is.
env=${VM_WORK:-/tmp/vdmount-vm}/kernels/$KVER.env
VMLINUZ=/boot/vmlinuz-$KVER MODROOT=/
if [ -e "$env" ]; then
	# In a subshell: the .env also sets ROOT, which is this script's repository root.
	# shellcheck disable=SC1090
	VMLINUZ=$(. "$env" && echo "$VMLINUZ") MODROOT=$(. "$env" && echo "${MODROOT:-/}")
fi
"$ROOT/tests/vm/extract-vmlinux.sh" "$VMLINUZ" "$W/vmlinux-$KVER" >&2
"$ROOT/tests/vm/build-initramfs.sh" "$KVER" "$vdmount" "$W/base.cpio" >&2

# A second archive, appended (the kernel unpacks concatenated archives): qemu-nbd with its
# libraries, nbd.ko, vmbench.
X=$W/extra
rm -rf "$X" && mkdir -p "$X/opt/bin" "$X/mods"
gcc -static -O2 -Wall -Werror -pthread -o "$X/opt/bin/vmbench" "$ROOT/bench/vmbench.c"
cp -L /usr/bin/qemu-nbd "$X/opt/bin/"
ldd /usr/bin/qemu-nbd | grep -o '/[^ ]*' | while read -r lib; do cp -L --parents "$lib" "$X"; done
ko=$(modprobe -d "$MODROOT" -S "$KVER" --show-depends nbd | awk '$1 == "insmod" { print $2 }' | tail -1)
case "$ko" in
*.xz) xz -dc "$ko" >"$X/mods/nbd.ko";;
*.zst) zstd -qdc "$ko" >"$X/mods/nbd.ko";;
*) cp "$ko" "$X/mods/nbd.ko";;
esac
# The empty 2 TiB qcow2 of bench/big.sh (1 MiB), for the attach time and the server's memory.
[ -s "$DIR/big-empty.qcow2" ] || qemu-img create -q -f qcow2 "$DIR/big-empty.qcow2" 2T
cp "$DIR/big-empty.qcow2" "$X/opt/"
# The write bench's qemu peer with a backing chain: an empty qcow2 overlay whose backing file
# is "qcow2" (the qcow2 image, copied to /tmp/qcow2 beside it in the guest; -u: not checked
# here, where that name means nothing).
qemu-img create -q -f qcow2 -u -b qcow2 -F qcow2 "$X/opt/ovl-qemu.qcow2" "$(stat -c %s "$DIR/disk-$SIZE.raw")"
(cd "$X" && find . -print0 | cpio --null -o -H newc --quiet -R 0:0) >"$W/extra.cpio"
cat "$W/base.cpio" "$W/extra.cpio" >"$W/bench.cpio"

drives=() spec="" total=0
add() {
	local file=$1 name=$2 size
	size=$(stat -c %s "$file")
	total=$((total + size))
	drives+=(-drive "file=$file,format=raw,if=none,readonly=on,id=$name" -device "virtio-blk-pci,drive=$name")
	spec="$spec${spec:+,}$name:$size"
}
add "$DIR/disk-$SIZE.raw" raw
for f in $FORMATS; do add "$DIR/disk-$SIZE.$f" "$f"; done
# Guest RAM: the images in tmpfs, plus 1 GiB to work in, plus the write bench's scratch
# (an overlay or a raw copy as big as the disk, one at a time).
mem=$(((total >> 20) * 11 / 10 + 1024 + $(stat -c %s "$DIR/disk-$SIZE.raw") * 2 / 1048576))

accel=tcg cpu=max
if [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then
	accel=kvm cpu=host
fi
serial=$W/serial.log
log "booting ($accel, 2 vCPUs, $mem MiB); serial log in $serial"
timeout -k 5 1800 qemu-system-x86_64 -nodefaults -no-user-config -machine pc \
	-accel "$accel" -cpu "$cpu" -smp 2 -m "$mem" -display none -no-reboot -serial stdio \
	-kernel "$W/vmlinux-$KVER" -initrd "$W/bench.cpio" "${drives[@]}" \
	-append "console=ttyS0 panic=-1 quiet vdm_test=bench-vm vdm_bench=$spec vdm_bench_secs=$SECS vdm_bench_only=${BENCH_VM_ONLY:-all}" \
	</dev/null >"$serial" 2>&1 || true
grep -aq '@@VDM-RESULT: PASS@@' "$serial" || { log "the VM bench failed:"; tail -30 "$serial" >&2; exit 1; }

val() { grep -a -o "@@BENCH $1 [^@]*@@" "$serial" | awk '{ print $3 }' | sed 's/@@//' | head -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf (b > 0) ? "%.2f" : "-", a / b }'; }
if [ "${BENCH_VM_ONLY:-}" != writes ]; then
	echo
	echo "In a VM ($accel, $KVER, 2 vCPUs; images in guest tmpfs; O_DIRECT reads by bench/vmbench.c, ${SECS} s per random test). Under TCG only the ratios within this VM mean anything."
	echo
	echo "| image | test | /dev/abuse0 | qemu-nbd + nbd.ko | ratio (target) | loop on raw copy | vs loop (target) |"
	echo "|---|---|---|---|---|---|---|"
	for f in raw $FORMATS; do
		for t in seq qd1 qd32 qd128; do
			a=$(val "$f.abuse.$t") n=$(val "$f.nbd.$t") l=$(val "loop.$t")
			case $t in seq) unit="1M seq MB/s" target=" (≥0.8)" nt="";; qd1) unit="4K QD1 IOPS" target="" nt=" (≥3)";; qd32) unit="4K QD32 IOPS" target="" nt="";; qd128) unit="4K QD128 IOPS" target="" nt="";; esac
			echo "| $f | $unit | $a | $n | $(ratio "$a" "$n")$nt | $l | $(ratio "$a" "$l")$target |"
		done
		echo "| $f | attach s | $(val "$f.abuse.attach_s") | | | | |"
	done
	if [ -n "$(val "raw.ublk.seq")" ]; then
		echo
		echo "The two transports (issue 17), same VM, same images: abuse.ko against the kernel's ublk driver (both served by vdmount), and ublk against qemu-nbd + nbd.ko."
		echo
		echo "| image | test | /dev/abuse0 | /dev/ublkb0 | abuse / ublk (target ≥1.0) | qemu-nbd + nbd.ko | ublk / nbd (target ≥2) |"
		echo "|---|---|---|---|---|---|---|"
		for f in raw $FORMATS; do
			for t in seq qd1 qd32 qd128; do
				a=$(val "$f.abuse.$t") u=$(val "$f.ublk.$t") n=$(val "$f.nbd.$t")
				case $t in seq) unit="1M seq MB/s";; qd1) unit="4K QD1 IOPS";; qd32) unit="4K QD32 IOPS";; qd128) unit="4K QD128 IOPS";; esac
				echo "| $f | $unit | $a | $u | $(ratio "$a" "$u") | $n | $(ratio "$u" "$n") |"
			done
		done
	fi
	echo
	echo "2 TiB empty qcow2 in the same VM: \`vdmount IMAGE\` returns once /dev/abuse0 is up in $(val big.attach_ms) ms (target < 100; TCG); the server's peak RSS after 4K random reads for ${SECS} s: $(val big.rss_mib) MiB (default cache 256 MiB)."
fi
if [ -n "$(val cow.wqd1)" ]; then
	echo
	echo "Writes (issue 21), in a VM ($accel, $KVER, 2 vCPUs; images in guest tmpfs), into scratch only: /dev/abuse0 with \`--cow\` (ephemeral) and \`--cow=FILE\` (a new qcow2 overlay) over the qcow2 image, against qemu-nbd + nbd.ko with \`-s\` (its own throwaway overlay) and on a qcow2 overlay with the image as backing file, and loop on a raw copy. O_DIRECT writes of a non-zero pattern by bench/vmbench.c, fsync at the end; in this order: 4K QD1, 4K QD32 (${SECS} s each), then the whole disk in 1 MiB writes."
	echo
	echo "| test | --cow | --cow=FILE | qemu-nbd -s | qemu-nbd, backing chain | --cow / nbd -s (target ≥2 at QD1) | --cow=FILE / nbd chain (target ≥2 at QD1) | loop on raw copy | --cow / loop | --cow=FILE / loop (target ≥0.7 seq) |"
	echo "|---|---|---|---|---|---|---|---|---|---|"
	for t in wqd1 wqd32 wseq; do
		c=$(val "cow.$t") q=$(val "cowfile.$t") s=$(val "nbd-s.$t") b=$(val "nbd-chain.$t") l=$(val "loopw.$t")
		case $t in wseq) unit="1M seq write MB/s";; wqd1) unit="4K QD1 write IOPS";; wqd32) unit="4K QD32 write IOPS";; esac
		echo "| $unit | $c | $q | $s | $b | $(ratio "$c" "$s") | $(ratio "$q" "$b") | $l | $(ratio "$c" "$l") | $(ratio "$q" "$l") |"
	done
fi
