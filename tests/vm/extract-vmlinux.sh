#!/bin/bash
# Unpacks the ELF vmlinux inside a Debian bzImage so QEMU boots it through its PVH entry
# point: under TCG this skips the in-guest decompressor (5-8 s per boot).
# Usage: extract-vmlinux.sh /boot/vmlinuz-KVER OUT
set -euo pipefail
in=$1 out=$2
unpack() {  # unpack <magic as grep -P regex> <decompressor...>
	local magic=$1 off; shift
	for off in $(LC_ALL=C grep -aboP "$magic" "$in" | cut -d: -f1); do
		tail -c +$((off + 1)) "$in" | "$@" >"$out.tmp" 2>/dev/null || true
		if [ "$(head -c4 "$out.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
			mv "$out.tmp" "$out"; return 0
		fi
	done
	rm -f "$out.tmp"; return 1
}
unpack '\xFD7zXZ\x00' xz -dc || unpack '\x28\xB5\x2F\xFD' zstd -dc || unpack '\x1F\x8B\x08' gzip -dc ||
	{ echo "extract-vmlinux: no ELF kernel inside $in" >&2; exit 1; }
# QEMU needs the PVH entry note (Xen ELF note type 0x12) to boot an ELF kernel.
readelf -n "$out" | grep -q 'Unknown note type: (0x00000012)' ||
	{ echo "extract-vmlinux: $out has no PVH entry note (kernel without CONFIG_PVH)" >&2; exit 1; }
