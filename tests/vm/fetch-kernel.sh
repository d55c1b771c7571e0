#!/bin/bash
# Makes a Debian kernel ready for the VM tests: its image and modules to boot, and headers to
# build abuse.ko against with the compiler the kernel was built with. Nothing is installed on
# the host except by setup-host.sh (6.1 and 6.12); every other kernel is fetched once into
# $VM_WORK/kernels/KVER and reused.
# Usage: fetch-kernel.sh NAME|KVER
#   NAME: 6.1, 6.12 (installed by setup-host.sh), 6.1-rt (bookworm), 6.12-rt (bookworm-
#   backports), trixie, trixie-backports, sid: the newest such kernel in the archive.
# Prints KVER on its last line and writes $VM_WORK/kernels/KVER.env with
#   VMLINUZ  the kernel image;  MODROOT  the root its modules are under (modprobe -d);
#   KDIR     the headers, inside ROOT;  ROOT  the build root to chroot into (empty: the host);
#   PAHOLE   the pahole the kernel was built with, inside ROOT (empty: the one on the PATH).
# Bookworm kernels (gcc-12, pahole 1.24) build on the host from headers unpacked with
# dpkg-deb; trixie and newer ones (gcc-14, gcc-16) in a trixie build root ($VM_WORK/roots/trixie,
# debootstrap) that also has trixie-backports and sid, with sid pinned low.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${VM_WORK:-/tmp/vdmount-vm}
mkdir -p "$WORK/kernels"
want=$1
export DEBIAN_FRONTEND=noninteractive
APT=(apt-get -o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0 -q)
log() { echo "fetch-kernel: $*" >&2; }

write_env() {  # write_env KVER VMLINUZ MODROOT KDIR ROOT [PAHOLE]
	printf 'VMLINUZ=%q\nMODROOT=%q\nKDIR=%q\nROOT=%q\nPAHOLE=%q\n' "$2" "$3" "$4" "$5" "${6:-}" \
		>"$WORK/kernels/$1.env"
	echo "$1"
}

# The ABI name a metapackage (e.g. linux-headers-amd64) of one suite depends on: the highest
# version's Depends. $1: apt-cache command (maybe in a chroot), $2: package, $3: suite regex
# the Version must (or, with a leading !, must not) match.
abi_of() {
	local cmd=$1 pkg=$2 filter=$3
	$cmd show "$pkg" 2>/dev/null | awk -v f="$filter" '
		/^Version:/ { v = $2 }
		/^Depends:/ { d = $2; neg = substr(f, 1, 1) == "!"; re = neg ? substr(f, 2) : f
			if ((v ~ re) != neg) print v, d }' |
		sort -V | tail -1 | awk '{ print $2 }' | sed -E 's/^linux-(image|headers)-//'
}

# The package to download for NAME: a name that exists only as a virtual package (Debian
# provides some images as NAME-unsigned) has no Version line. (grep without -q: an early exit
# would kill apt-cache with SIGPIPE, a failure under pipefail.)
real_pkg() {  # real_pkg CMD NAME
	if $1 show "$2" 2>/dev/null | grep '^Version:' >/dev/null; then echo "$2"; else echo "$2-unsigned"; fi
}

# Installed on the host by setup-host.sh.
host_kernel() {
	write_env "$1" "/boot/vmlinuz-$1" / "/lib/modules/$1/build" ""
}

# Bookworm and bookworm-backports kernels: the host's apt knows them and its gcc-12 built them.
fetch_bookworm() {
	local kver=$1 d=$WORK/kernels/$1 hdr common kbuild img
	if [ ! -e "$d/.ready" ]; then
		[ "$(id -u)" = 0 ] || { log "fetching $kver needs root (apt-get download, depmod)"; exit 1; }
		rm -rf "$d"; mkdir -p "$d/debs" "$d/root"
		hdr=linux-headers-$kver
		img=$(real_pkg apt-cache "linux-image-$kver")
		common=$(apt-cache depends "$hdr" | sed -nE 's/^ *Depends: (linux-headers-[^ ]*-common[^ ]*)$/\1/p' | awk 'NR == 1')
		kbuild=$(apt-cache depends "$hdr" | sed -nE 's/^ *Depends: (linux-kbuild-[^ ]*)$/\1/p' | awk 'NR == 1')
		log "$kver: downloading $img $hdr $common $kbuild"
		(cd "$d/debs" && "${APT[@]}" download "$img" "$hdr" "$common" "$kbuild" >&2)
		for f in "$d"/debs/*.deb; do dpkg-deb -x "$f" "$d/root"; done
		rm -rf "$d/debs"
		# The headers' one-line Makefile includes the common headers by absolute path.
		sed -i "s#^include /usr/src/#include $d/root/usr/src/#" "$d/root/usr/src/linux-headers-$kver/Makefile"
		depmod -b "$d/root" "$kver"
		touch "$d/.ready"
	fi
	write_env "$kver" "$d/root/boot/vmlinuz-$kver" "$d/root" "$d/root/usr/src/linux-headers-$kver" ""
}

R=$WORK/roots/trixie
in_root() { chroot "$R" "$@"; }
root_apt_cache() { chroot "$R" apt-cache "$@"; }

# The trixie build root, made once (debootstrap from the mirror the host's apt uses).
make_root() {
	[ -e "$R/.ready" ] && return 0
	[ "$(id -u)" = 0 ] || { log "making the build root needs root (debootstrap)"; exit 1; }
	command -v debootstrap >/dev/null || "${APT[@]}" install -y --no-install-recommends debootstrap >&2
	local mirror
	mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
		sed -nE 's#^(URIs:|deb)[[:space:]]+(\[[^]]*\][[:space:]]+)?(https?://[^ ]*/debian/?)([[:space:]].*)?$#\3#p' | head -1 || true)
	mirror=${mirror:-http://deb.debian.org/debian}
	log "making the trixie build root in $R from $mirror"
	rm -rf "$R"; mkdir -p "$R"
	debootstrap --variant=buildd trixie "$R" "$mirror" >&2
	printf 'Types: deb\nURIs: %s\nSuites: trixie trixie-backports\nComponents: main\n\nTypes: deb\nURIs: %s\nSuites: sid\nComponents: main\nCheck-Valid-Until: no\n' \
		"$mirror" "$mirror" >"$R/etc/apt/sources.list.d/vdmount.sources"
	rm -f "$R/etc/apt/sources.list"
	printf 'Package: *\nPin: release a=unstable\nPin-Priority: 100\n' >"$R/etc/apt/preferences.d/sid-low"
	# Headers depend on their image, whose hooks would build an initramfs nobody uses.
	in_root dpkg-divert --local --rename --add /usr/sbin/update-initramfs >&2
	ln -sf /bin/true "$R/usr/sbin/update-initramfs"
	in_root "${APT[@]}" update >&2
	in_root "${APT[@]}" install -y --no-install-recommends bc flex bison libelf-dev make kmod >&2
	touch "$R/.ready"
}

# trixie, trixie-backports and sid kernels: headers installed in the build root, image and
# modules unpacked next to it (7.x splits the image into linux-binary, linux-modules and
# linux-base).
fetch_trixie() {
	local kver=$1 suite=$2 d=$WORK/kernels/$1 pkgs vmlinuz
	if [ ! -e "$d/.ready" ]; then
		rm -rf "$d"; mkdir -p "$d/root" "$R/tmp/debs"
		log "$kver: installing headers in the build root (suite $suite)"
		in_root "${APT[@]}" install -y --no-install-recommends -t "$suite" "linux-headers-$kver" >&2
		if root_apt_cache show "linux-binary-$kver" 2>/dev/null | grep '^Version:' >/dev/null; then
			# linux-base has modules.builtin: without it modprobe takes built-in drivers for missing.
			pkgs="linux-binary-$kver linux-modules-$kver linux-base-$kver"
		else
			pkgs=$(real_pkg root_apt_cache "linux-image-$kver")
		fi
		log "$kver: downloading $pkgs"
		rm -f "$R"/tmp/debs/*.deb
		# shellcheck disable=SC2086
		in_root sh -c "cd /tmp/debs && apt-get -q download $pkgs" >&2
		for f in "$R"/tmp/debs/*.deb; do dpkg-deb -x "$f" "$d/root"; done
		rm -rf "$R/tmp/debs"
		# Merged /usr: modules under usr/lib; depmod and modprobe -d look in lib/modules.
		[ -e "$d/root/lib" ] || ln -s usr/lib "$d/root/lib"
		depmod -b "$d/root" "$kver"
		touch "$d/.ready"
	fi
	vmlinuz=$d/root/boot/vmlinuz-$kver
	[ -e "$vmlinuz" ] || vmlinuz=$d/root/usr/lib/modules/$kver/vmlinuz
	write_env "$kver" "$vmlinuz" "$d/root" "/usr/src/linux-headers-$kver" "$R" "$(pahole_for "$kver")"
}

# The kernels in one root want different pahole versions (trixie 1.30, sid 1.32), and a build
# with another one warns "pahole version differs". Each version is unpacked once, with its
# libraries, into /opt/pahole-NNN in the root; prints the path of a wrapper that runs it.
pahole_for() {
	local want ver pv suite libs dir
	want=$(sed -n 's/^CONFIG_PAHOLE_VERSION=//p' "$R/usr/src/linux-headers-$1/.config")
	[ -n "$want" ] && [ "$want" != 0 ] || return 0
	dir=/opt/pahole-$want
	if [ ! -x "$R$dir/pahole" ]; then
		ver=${want:0:1}.${want:1}
		# Its version and suite ("sid/main": madison's 6th field), and from that suite the
		# libraries it depends on that an older pahole does not have (libdwarves1, libbpf1).
		read -r pv suite < <(in_root apt-cache madison pahole |
			awk -v v="$ver" '$3 ~ "^" v "-" { split($6, a, "/"); print $3, a[1]; exit }') || true
		[ -n "${pv:-}" ] || { log "no pahole $ver in the archive: expect a pahole warning"; return 0; }
		libs=$(in_root apt-cache show "pahole=$pv" | sed -n 's/^Depends: //p' | tr ',' '\n' |
			awk '$1 ~ /^lib(dwarves|bpf)/ { printf " %s/'"$suite"'", $1 }')
		rm -rf "$R/tmp/pahole"; mkdir -p "$R/tmp/pahole"
		in_root sh -c "cd /tmp/pahole && apt-get -q download pahole=$pv$libs" >&2
		for f in "$R"/tmp/pahole/*.deb; do dpkg-deb -x "$f" "$R$dir"; done
		printf '#!/bin/sh\nLD_LIBRARY_PATH=%s/usr/lib/x86_64-linux-gnu exec %s/usr/bin/pahole "$@"\n' \
			"$dir" "$dir" >"$R$dir/pahole"
		chmod +x "$R$dir/pahole"
		rm -rf "$R/tmp/pahole"
	fi
	echo "$dir/pahole"
}

host_newest() {  # host_newest GLOB: the newest installed kernel with headers matching GLOB
	local k
	k=$(for b in /lib/modules/$1/build; do [ -e "$b" ] && basename "$(dirname "$b")"; done | sort -V | tail -1)
	[ -n "$k" ] || { log "no kernel matching $1 with headers: run tests/vm/setup-host.sh"; exit 1; }
	echo "$k"
}

# Which suite a KVER comes from, by Debian's naming.
suite_of() {
	case "$1" in
	6.1.0-*-rt-amd64) echo bookworm;;
	*+deb12-rt-amd64) echo bookworm-backports;;
	*+deb13-*) case "$1" in 6.*) echo trixie;; *) echo trixie-backports;; esac;;
	*+deb14-*) echo unstable;;
	*) log "do not know where $1 comes from"; exit 1;;
	esac
}

case "$want" in
6.1) host_kernel "$(host_newest '6.1.*-amd64')";;
6.12) host_kernel "$(host_newest '6.12.*+deb12-amd64')";;
6.1-rt) fetch_bookworm "$(abi_of apt-cache linux-image-rt-amd64 '!bpo')";;
6.12-rt) fetch_bookworm "$(abi_of apt-cache linux-image-rt-amd64 'bpo')";;
trixie | trixie-backports | sid)
	make_root
	suite=$want; [ "$want" = sid ] && suite=unstable
	# The metapackage of that suite only: apt-cache show lists every suite's version.
	kver=$(in_root apt-cache show "linux-headers-amd64/$suite" 2>/dev/null |
		sed -n '/^Depends:/p' | grep -o 'linux-headers-[^ ,]*' | sed 's/^linux-headers-//' | awk 'NR == 1')
	[ -n "$kver" ] || { log "no linux-headers-amd64 in $suite"; exit 1; }
	fetch_trixie "$kver" "$suite";;
*)
	if [ -e "/lib/modules/$want/build" ]; then
		host_kernel "$want"
	else
		case "$(suite_of "$want")" in
		bookworm*) fetch_bookworm "$want";;
		*) make_root; fetch_trixie "$want" "$(suite_of "$want")";;
		esac
	fi;;
esac
