#!/bin/bash
# In-VM comparison (issue 10): /dev/abuse0 (vdmount) against qemu-nbd + nbd.ko on the same
# image, and loop on the raw copy, inside one QEMU VM (scenario tests/vm/scenarios/bench-vm.sh).
#   bench/vm.sh DIR SIZE [KVER]     (called by bench/run.sh with BENCH_VM=1)
# Env: BENCH_VM_FORMATS (every bench format), BENCH_VM_SECS (5: seconds per random test).
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
vdmount=$(CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/static "$ROOT/tests/vm/build-vdmount-static.sh")
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
# Guest RAM: the images in tmpfs, plus 1 GiB to work in.
mem=$(((total >> 20) * 11 / 10 + 1024))

accel=tcg cpu=max
if [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then
	accel=kvm cpu=host
fi
serial=$W/serial.log
log "booting ($accel, 2 vCPUs, $mem MiB); serial log in $serial"
timeout -k 5 1800 qemu-system-x86_64 -nodefaults -no-user-config -machine pc \
	-accel "$accel" -cpu "$cpu" -smp 2 -m "$mem" -display none -no-reboot -serial stdio \
	-kernel "$W/vmlinux-$KVER" -initrd "$W/bench.cpio" "${drives[@]}" \
	-append "console=ttyS0 panic=-1 quiet vdm_test=bench-vm vdm_bench=$spec vdm_bench_secs=$SECS" \
	</dev/null >"$serial" 2>&1 || true
grep -aq '@@VDM-RESULT: PASS@@' "$serial" || { log "the VM bench failed:"; tail -30 "$serial" >&2; exit 1; }

val() { grep -a -o "@@BENCH $1 [^@]*@@" "$serial" | awk '{ print $3 }' | sed 's/@@//' | head -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf (b > 0) ? "%.2f" : "-", a / b }'; }
echo
echo "In a VM ($accel, $KVER, 2 vCPUs; images in guest tmpfs; O_DIRECT reads by bench/vmbench.c, ${SECS} s per random test). Under TCG only the ratios within this VM mean anything."
echo
echo "| image | test | /dev/abuse0 | qemu-nbd + nbd.ko | ratio (target) | loop on raw copy | vs loop (target) |"
echo "|---|---|---|---|---|---|---|"
for f in raw $FORMATS; do
	for t in seq qd1 qd32; do
		a=$(val "$f.abuse.$t") n=$(val "$f.nbd.$t") l=$(val "loop.$t")
		case $t in seq) unit="1M seq MB/s" target=" (≥0.8)" nt="";; qd1) unit="4K QD1 IOPS" target="" nt=" (≥3)";; qd32) unit="4K QD32 IOPS" target="" nt="";; esac
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
		for t in seq qd1 qd32; do
			a=$(val "$f.abuse.$t") u=$(val "$f.ublk.$t") n=$(val "$f.nbd.$t")
			case $t in seq) unit="1M seq MB/s";; qd1) unit="4K QD1 IOPS";; qd32) unit="4K QD32 IOPS";; esac
			echo "| $f | $unit | $a | $u | $(ratio "$a" "$u") | $n | $(ratio "$u" "$n") |"
		done
	done
fi
echo
echo "2 TiB empty qcow2 in the same VM: \`vdmount IMAGE\` returns once /dev/abuse0 is up in $(val big.attach_ms) ms (target < 100; TCG); the server's peak RSS after 4K random reads for ${SECS} s: $(val big.rss_mib) MiB (default cache 256 MiB)."

