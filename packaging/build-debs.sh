#!/bin/bash
# Builds the two Debian packages into OUTDIR (default: target/debian):
#   vdmount_VERSION_amd64.deb    the binary, man page, bash/zsh/fish completions and
#                                /etc/modprobe.d/abuse.conf (max_part, a conffile)
#   abuse-dkms_VERSION_all.deb   the module source in /usr/src/abuse-VERSION with dkms.conf;
#                                postinst builds and installs it for every kernel with headers
# Plain dpkg-deb of staged trees (see README, "Install"): needs only cargo and dpkg.
# Usage: packaging/build-debs.sh [OUTDIR]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$REPO/target/debian}
umask 022
ver=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -1)
maint="vdmount developers <vdmount@localhost>"
# Same timestamps for the same commit, so a rebuild gives the same packages.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || date +%s)}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$OUT"

cargo build --release --locked --manifest-path "$REPO/Cargo.toml" --bin vdmount >&2
bin=${CARGO_TARGET_DIR:-$REPO/target}/release/vdmount

copyright() {  # copyright DIR
	mkdir -p "$1"
	printf 'vdmount and abuse.ko\nLicense: GPL-2.0-only\nOn Debian systems the full text is in /usr/share/common-licenses/GPL-2.\n' >"$1/copyright"
}

# --- vdmount
d=$stage/vdmount
install -Dm755 "$bin" "$d/usr/bin/vdmount"
strip --strip-unneeded "$d/usr/bin/vdmount"
install -d "$d/usr/share/man/man1" "$d/usr/share/bash-completion/completions" \
	"$d/usr/share/zsh/vendor-completions" "$d/usr/share/fish/vendor_completions.d"
gzip -9n <"$REPO/man/vdmount.1" >"$d/usr/share/man/man1/vdmount.1.gz"
"$bin" completions bash >"$d/usr/share/bash-completion/completions/vdmount"
"$bin" completions zsh >"$d/usr/share/zsh/vendor-completions/_vdmount"
"$bin" completions fish >"$d/usr/share/fish/vendor_completions.d/vdmount.fish"
# Partitions of a served image get device nodes only with max_part set at load time.
install -d "$d/etc/modprobe.d"
printf '# Installed by vdmount: /dev/abuseNpM nodes for partitions of a served image.\noptions abuse max_part=15\n' \
	>"$d/etc/modprobe.d/abuse.conf"
copyright "$d/usr/share/doc/vdmount"
# vdmount@IMAGE.service: an attachment that survives a reboot (see FILES in the man page).
install -Dm644 "$REPO/packaging/vdmount@.service" "$d/usr/lib/systemd/system/vdmount@.service"
# The newest glibc symbol version the binary needs is its libc6 dependency (what
# dpkg-shlibdeps would find; no other shared library is linked).
glibc=$(objdump -T "$d/usr/bin/vdmount" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
if ldd "$d/usr/bin/vdmount" | grep -vE 'libc\.so|libm\.so|libgcc_s|ld-linux|linux-vdso' | grep -q '=>'; then
	echo "build-debs: vdmount links a library other than libc/libgcc: add it to Depends" >&2; exit 1
fi
mkdir -p "$d/DEBIAN"
echo /etc/modprobe.d/abuse.conf >"$d/DEBIAN/conffiles"
cat >"$d/DEBIAN/control" <<CTL
Package: vdmount
Version: $ver
Architecture: amd64
Maintainer: $maint
Installed-Size: $(du -sk --exclude=DEBIAN "$d" | cut -f1)
Depends: libc6 (>= $glibc), libgcc-s1
Recommends: abuse-dkms (= $ver)
Section: admin
Priority: optional
Description: serve a VM disk image as a Linux block device
 Reads qcow2, VMDK, VHD, VHDX and raw images and serves them through the
 abuse.ko kernel module (package abuse-dkms) as /dev/abuseN, read-only or
 with a copy-on-write overlay.
CTL

# --- abuse-dkms
d=$stage/abuse-dkms
src=$d/usr/src/abuse-$ver
install -d "$src/compat" "$src/include/uapi/linux"
install -m644 "$REPO"/kmod/{Kbuild,Makefile,*.c,*.h} "$src/"
install -m644 "$REPO"/kmod/compat/*.c "$src/compat/"
install -m755 "$REPO/kmod/compat/probe.sh" "$src/compat/"
install -m644 "$REPO/kmod/include/uapi/linux/abuse.h" "$src/include/uapi/linux/"
sed "s/^PACKAGE_VERSION=.*/PACKAGE_VERSION=\"$ver\"/" "$REPO/kmod/dkms.conf" >"$src/dkms.conf"
copyright "$d/usr/share/doc/abuse-dkms"
mkdir -p "$d/DEBIAN"
cat >"$d/DEBIAN/control" <<CTL
Package: abuse-dkms
Version: $ver
Architecture: all
Maintainer: $maint
Installed-Size: $(du -sk --exclude=DEBIAN "$d" | cut -f1)
Depends: dkms (>= 2.8)
Section: kernel
Priority: optional
Description: abuse.ko kernel module for vdmount (DKMS source)
 The block device driver vdmount serves disk images through, built by DKMS
 for every installed kernel that has headers, and for new kernels as they
 are installed. DKMS signs it with its MOK key where it has one.
CTL
# Build for every kernel whose headers are installed; DKMS's kernel hook does later ones.
cat >"$d/DEBIAN/postinst" <<SH
#!/bin/sh
set -e
if [ "\$1" = configure ]; then
	dkms status -m abuse -v $ver | grep -q . || dkms add -m abuse -v $ver
	for b in /lib/modules/*/build; do
		[ -d "\$b" ] || continue
		dkms install -m abuse -v $ver -k "\$(basename "\$(dirname "\$b")")"
	done
fi
SH
cat >"$d/DEBIAN/prerm" <<SH
#!/bin/sh
set -e
case "\$1" in remove|upgrade|deconfigure)
	if dkms status -m abuse -v $ver | grep -q .; then dkms remove -m abuse -v $ver --all; fi;;
esac
SH
chmod 755 "$d/DEBIAN/postinst" "$d/DEBIAN/prerm"

for p in vdmount abuse-dkms; do
	find "$stage/$p" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	arch=$(sed -n 's/^Architecture: //p' "$stage/$p/DEBIAN/control")
	dpkg-deb --root-owner-group -Zxz --build "$stage/$p" "$OUT/${p}_${ver}_$arch.deb" >&2
done
ls "$OUT"/vdmount_"$ver"_amd64.deb "$OUT"/abuse-dkms_"$ver"_all.deb
