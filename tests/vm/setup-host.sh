#!/bin/bash
# Install what the tests need on a fresh Debian 12 machine (needs root; idempotent).
# QEMU comes from bookworm-backports (-t only on that line: bookworm's 7.2 would remove
# qemu-utils 10). Both target kernels: 6.1 is bookworm's linux-image-amd64, 6.12 is the
# versioned backports package. INITRD=No skips update-initramfs runs we never use.
# dmg2img is the DMG tests' second oracle (bzip2 and ADC chunks: qemu-img's dmg driver reads
# zlib only, as Debian builds neither its dmg-bz2 nor its dmg-lzfse module, not even in
# qemu-block-extra).
set -euo pipefail
# --check: succeed only if everything is already here (no root needed).
if [ "${1:-}" = --check ]; then
	for c in qemu-system-x86_64 qemu-img qemu-io dmg2img busybox cpio modprobe sfdisk mkfs.ext4 xz zstd readelf mkfs.xfs mcopy lvm dmsetup; do
		command -v "$c" >/dev/null || exit 1
	done
	/usr/bin/python3 -c 'import pyvhdi, pyvmdk, pyqcow' 2>/dev/null || exit 1
	# Remote images (tests/remote.rs): nginx, openssl for its certificate, moto's S3 server.
	for c in nginx openssl; do command -v "$c" >/dev/null || [ -x "/usr/sbin/$c" ] || exit 1; done
	python3 -c 'import moto.server, boto3' 2>/dev/null || exit 1
	# EWF2 (tests/ewf2.rs): libewf's Python binding from PyPI reads .Ex01 (Debian's ewf-tools does not).
	python3 -c 'import pyewf' 2>/dev/null || exit 1
	ls -d /lib/modules/6.1.*/build /lib/modules/6.12.*/build >/dev/null 2>&1 || exit 1
	exit 0
fi
[ "$(id -u)" = 0 ] || { echo "setup-host.sh: run as root (it calls apt-get)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
APT=(apt-get -o DPkg::Lock::Timeout=600)
if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
	mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
		sed -nE 's#^(URIs:|deb)[[:space:]]+(\[[^]]*\][[:space:]]+)?(https?://[^ ]*/debian/?)([[:space:]].*)?$#\3#p' | head -1 || true)
	mirror=${mirror:-http://deb.debian.org/debian}
	printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
		"$mirror" >/etc/apt/sources.list.d/vdmount-backports.sources
fi
"${APT[@]}" update
"${APT[@]}" install -y --no-install-recommends -t bookworm-backports qemu-system-x86
K612=$(apt-cache show linux-image-amd64/bookworm-backports | sed -n 's/^Depends: \(linux-image-[^ ]*\).*/\1/p' | head -1)
INITRD=No "${APT[@]}" install -y --no-install-recommends \
	busybox-static cpio kmod fdisk dosfstools e2fsprogs xz-utils zstd binutils ewf-tools dmg2img \
	python3-libvhdi python3-libvmdk python3-libqcow \
	xfsprogs mtools lvm2 dmsetup \
	linux-image-amd64 linux-headers-amd64 "$K612" "${K612/image/headers}"
# Remote images (tests/remote.rs): nginx (started by the tests, never as a service), openssl,
# and moto's S3 server for the python3 the tests run.
"${APT[@]}" install -y --no-install-recommends nginx-light openssl
python3 -m pip install --quiet 'moto[server]'
# EWF2's second oracle (tests/ewf2.rs): libewf-python builds libewf from source (needs gcc).
python3 -m pip install --quiet libewf-python
qemu-img --version | head -1
ls -d /lib/modules/*/build
