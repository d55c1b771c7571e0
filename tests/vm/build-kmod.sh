#!/bin/bash
# Builds kmod/ (abuse.ko) for kernel KVER in a scratch copy with W=1; any compiler warning fails.
# Usage: build-kmod.sh KVER OUTDIR   (writes OUTDIR/abuse.ko)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
KVER=$1 OUT=$2
B=$OUT/kmod-build
rm -rf "$B"; mkdir -p "$OUT"; cp -r "$REPO/kmod" "$B"
make -C "$B" KVER="$KVER" W=1 >"$B/build.log" 2>&1 || { cat "$B/build.log" >&2; exit 1; }
if grep -E 'warning:|error:' "$B/build.log" >&2; then
	echo "build-kmod: warnings building abuse.ko for $KVER" >&2; exit 1
fi
cp "$B/abuse.ko" "$OUT/abuse.ko"
