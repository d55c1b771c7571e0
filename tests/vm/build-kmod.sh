#!/bin/bash
# Builds kmod/ (abuse.ko) for kernel KVER in a scratch copy with W=1; any compiler warning fails.
# A kernel fetched by fetch-kernel.sh builds against its headers, in its build root if it has
# one (newer kernels need trixie's or sid's compiler); otherwise /lib/modules/KVER/build.
# Usage: build-kmod.sh KVER OUTDIR   (writes OUTDIR/abuse.ko)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${VM_WORK:-/tmp/vdmount-vm}
KVER=$1 OUT=$2
KDIR=/lib/modules/$KVER/build ROOT= PAHOLE=
# shellcheck disable=SC1090
[ -e "$WORK/kernels/$KVER.env" ] && . "$WORK/kernels/$KVER.env"
mkdir -p "$OUT"
if [ -z "$ROOT" ]; then
	B=$OUT/kmod-build
	rm -rf "$B"; cp -r "$REPO/kmod" "$B"
	make -C "$B" KVER="$KVER" KDIR="$KDIR" W=1 >"$B/build.log" 2>&1 || { cat "$B/build.log" >&2; exit 1; }
else
	# In the build root; objtool reads /proc.
	rel=/tmp/abuse-kmod-$KVER B=$ROOT$rel
	rm -rf "$B"; cp -r "$REPO/kmod" "$B"
	mounted=0
	mountpoint -q "$ROOT/proc" || { mount -t proc proc "$ROOT/proc"; mounted=1; }
	rc=0
	chroot "$ROOT" make -C "$rel" KVER="$KVER" KDIR="$KDIR" ${PAHOLE:+PAHOLE="$PAHOLE"} W=1 >"$B/build.log" 2>&1 || rc=$?
	[ $mounted = 0 ] || umount "$ROOT/proc"
	[ $rc = 0 ] || { cat "$B/build.log" >&2; exit 1; }
fi
if grep -E 'warning:|error:' "$B/build.log" >&2; then
	echo "build-kmod: warnings building abuse.ko for $KVER" >&2; exit 1
fi
cp "$B/abuse.ko" "$OUT/abuse.ko"
