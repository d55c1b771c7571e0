#!/bin/bash
# Installs the two Debian packages (packaging/build-debs.sh) in a clean Debian 12 and a clean
# Debian 13 root, checks that DKMS built and installed abuse.ko for that root's kernel headers
# (and whether it signed it), purges both and checks that nothing is left behind.
# Prints one PASS/FAIL line per check, as tests/vm/run.sh does, and "N passed, M failed".
# Usage: tests/package.sh [bookworm] [trixie]   (default: both; needs root)
# Env: VM_WORK (default /tmp/vdmount-vm): the roots are cached in $VM_WORK/roots/pkg-SUITE
# (debootstrap minbase + dkms + linux-headers-amd64, made once); each run installs into a
# throwaway overlay on top, so the cached root stays clean.
# DEBS: a directory with vdmount_*.deb and abuse-dkms_*.deb (default: build them).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${VM_WORK:-/tmp/vdmount-vm}
suites=("$@"); [ ${#suites[@]} -gt 0 ] || suites=(bookworm trixie)
export DEBIAN_FRONTEND=noninteractive
APT=(apt-get -o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0 -q)
passed=0 failed=0
pass() { echo "PASS pkg/$*"; passed=$((passed + 1)); }
fail() { echo "FAIL pkg/$*"; failed=$((failed + 1)); }
now() { date +%s; }
[ "$(id -u)" = 0 ] || { fail "setup: needs root (debootstrap, chroot, mount)"; echo "$passed passed, $failed failed"; exit 1; }

if [ -z "${DEBS:-}" ]; then
	DEBS=$(mktemp -d)
	trap 'rm -rf "$DEBS"' EXIT
	"$REPO/packaging/build-debs.sh" "$DEBS" >&2 || { fail "build-debs.sh failed"; echo "$passed passed, $failed failed"; exit 1; }
fi
vdm_deb=$(ls "$DEBS"/vdmount_*_amd64.deb | tail -1)
dkms_deb=$(ls "$DEBS"/abuse-dkms_*_all.deb | tail -1)
ver=$(dpkg-deb -f "$vdm_deb" Version)

# The cached clean root of a suite: minbase, dkms (which abuse-dkms depends on anyway), the
# suite's default kernel headers, and openssl, which DKMS needs to make its signing key (it is
# on any standard install, but not in minbase).
make_root() {  # make_root SUITE
	local r=$WORK/roots/pkg-$1 mirror
	[ -e "$r/.ready" ] && return 0
	command -v debootstrap >/dev/null || "${APT[@]}" install -y --no-install-recommends debootstrap >&2
	mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
		sed -nE 's#^(URIs:|deb)[[:space:]]+(\[[^]]*\][[:space:]]+)?(https?://[^ ]*/debian/?)([[:space:]].*)?$#\3#p' | head -1 || true)
	mirror=${mirror:-http://deb.debian.org/debian}
	echo "  making the clean $1 root in $r from $mirror" >&2
	rm -rf "$r"; mkdir -p "$r"
	debootstrap --variant=minbase "$1" "$r" "$mirror" >&2 || return 1
	# Headers may pull their image (6.12 and later), whose hook would build an unused initramfs.
	chroot "$r" dpkg-divert --local --rename --add /usr/sbin/update-initramfs >&2
	ln -sf /bin/true "$r/usr/sbin/update-initramfs"
	mount -t proc proc "$r/proc"
	chroot "$r" "${APT[@]}" update >&2 &&
		chroot "$r" "${APT[@]}" install -y dkms linux-headers-amd64 openssl >&2
	local rc=$?
	umount "$r/proc"
	[ $rc = 0 ] || return 1
	chroot "$r" "${APT[@]}" clean
	touch "$r/.ready"
}

# Every file and symlink of the root, minus what changes on any apt run or is generated.
snapshot() {  # snapshot ROOT
	(cd "$1" && find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./run -o -path ./tmp \
		-o -path ./var/cache -o -path ./var/log -o -path ./var/lib/apt -o -path ./var/lib/dpkg \) -prune \
		-o \( -type f -o -type l -o -type d \) -print | sort)
}

# The systemd unit, as the package installs it, for an image: systemd itself reads it
# (systemd-analyze verify: unknown keys, bad values, a command that is not there). Its
# ExecStart names the packaged binary, unpacked here.
verify_unit() {
	local d inst
	command -v systemd-analyze >/dev/null || "${APT[@]}" install -y --no-install-recommends systemd >&2
	d=$(mktemp -d)
	dpkg-deb -x "$vdm_deb" "$d/root"
	touch "$d/disk.qcow2"
	inst=$(systemd-escape --path "$d/disk.qcow2")
	sed "s#/usr/bin/vdmount#$d/root/usr/bin/vdmount#" "$d/root/usr/lib/systemd/system/vdmount@.service" >"$d/vdmount@$inst.service"
	if ! timeout 60 systemd-analyze verify --man=no "$d/vdmount@$inst.service" >"$d/out" 2>&1; then
		fail "vdmount@.service: systemd-analyze verify failed:"; cat "$d/out"
	elif grep -F "vdmount@" "$d/out"; then
		fail "vdmount@.service: systemd-analyze verify complains (above)"
	elif ! grep -q "^ExecStart=$d/root/usr/bin/vdmount --supervise --foreground %f$" "$d/vdmount@$inst.service"; then
		fail "vdmount@.service: ExecStart is not vdmount --supervise --foreground %f"
	else
		pass "vdmount@.service: systemd reads it cleanly for $d/disk.qcow2"
	fi
	rm -rf "$d"
}
verify_unit

for suite in "${suites[@]}"; do
	t0=$(now)
	if ! make_root "$suite"; then fail "$suite: making the clean root failed"; continue; fi
	base=$WORK/roots/pkg-$suite
	kver=$(basename "$(dirname "$(ls -d "$base"/lib/modules/*/build | tail -1)")")
	echo "  $suite root ready in $(( $(now) - t0 ))s (headers $kver)"
	t0=$(now)
	ov=$(mktemp -d "$WORK/pkg-ov-$suite.XXXXXX")
	mkdir -p "$ov/upper" "$ov/work" "$ov/root"
	mount -t overlay overlay -o "lowerdir=$base,upperdir=$ov/upper,workdir=$ov/work" "$ov/root" ||
		{ fail "$suite: overlay mount failed"; continue; }
	r=$ov/root
	# objtool (7.x) reads /proc; apt and dkms want /dev/null.
	mount -t proc proc "$r/proc" && mount --bind /dev "$r/dev"
	snapshot "$r" >"$ov/before"
	cp "$vdm_deb" "$dkms_deb" "$r/tmp/"
	log=$ov/install.log
	if chroot "$r" "${APT[@]}" install -y "/tmp/$(basename "$vdm_deb")" "/tmp/$(basename "$dkms_deb")" >"$log" 2>&1; then
		pass "$suite: apt-get install vdmount abuse-dkms ($(( $(now) - t0 ))s)"
	else
		fail "$suite: apt-get install failed:"; tail -30 "$log"
	fi
	st=$(chroot "$r" dkms status 2>&1)
	echo "    dkms status: $st"
	if grep -q "^abuse/$ver, $kver, x86_64: installed" <<<"$st"; then pass "$suite: dkms status: abuse/$ver installed for $kver"
	else fail "$suite: dkms status does not show abuse/$ver installed for $kver"; fi
	ko=$(cd "$r" && ls lib/modules/"$kver"/updates/dkms/abuse.ko* 2>/dev/null | head -1)
	if [ -n "$ko" ]; then
		pass "$suite: module at /$ko"
		# Compressed modules (.ko.xz) are read by modinfo itself.
		signer=$(chroot "$r" modinfo -F signer "/$ko" 2>/dev/null)
		sig_key=; [ -e "$r/var/lib/dkms/mok.key" ] && sig_key=/var/lib/dkms/mok.key
		echo "    modinfo -F signer: '${signer}'; DKMS key: ${sig_key:-none}"
		if [ -n "$sig_key" ] && [ -z "$signer" ]; then fail "$suite: DKMS has a MOK key but the module is unsigned"
		else pass "$suite: signature as DKMS configures it (signer '${signer:-none}')"; fi
	else
		fail "$suite: no abuse.ko under /lib/modules/$kver/updates/dkms"
	fi
	for f in /usr/bin/vdmount /usr/share/man/man1/vdmount.1.gz /usr/share/bash-completion/completions/vdmount /etc/modprobe.d/abuse.conf "/usr/src/abuse-$ver/dkms.conf" "/usr/lib/systemd/system/vdmount@.service"; do
		[ -e "$r$f" ] || fail "$suite: $f not installed"
	done
	if chroot "$r" vdmount --version >/dev/null 2>&1; then pass "$suite: vdmount --version runs"; else fail "$suite: vdmount does not run"; fi
	t0=$(now)
	if chroot "$r" "${APT[@]}" purge -y vdmount abuse-dkms >"$log" 2>&1; then pass "$suite: apt-get purge ($(( $(now) - t0 ))s)"
	else fail "$suite: apt-get purge failed:"; tail -30 "$log"; fi
	left=$(chroot "$r" dpkg -l vdmount abuse-dkms 2>/dev/null | grep -E '^[a-z][a-z] ' | grep -v '^un' || true)
	[ -z "$left" ] || fail "$suite: still known to dpkg: $left"
	snapshot "$r" >"$ov/after"
	# Left for good reasons: DKMS's own signing key (it may be enrolled as a MOK), and depmod's
	# regenerated indexes.
	extra=$(comm -13 "$ov/before" "$ov/after" | grep -vE '^\./var/lib/dkms/mok\.(key|pub)$|^\./(usr/)?lib/modules/[^/]+/modules\.' || true)
	if [ -z "$extra" ] && [ -z "$left" ] && [ ! -e "$r/etc/modprobe.d/abuse.conf" ] && [ ! -e "$r/var/lib/dkms/abuse" ] &&
	   ! ls -d "$r"/usr/src/abuse-* >/dev/null 2>&1; then
		pass "$suite: purge left nothing behind"
	else
		fail "$suite: left behind after purge:"; printf '    %s\n' $extra
	fi
	# A process apt or dkms started may hold the root for a moment after it returns.
	for m in "$r/dev" "$r/proc" "$r"; do
		umount "$m" 2>/dev/null || { sleep 2; umount "$m" 2>/dev/null; } || umount -l "$m"
	done
	rm -rf "$ov"
done
echo "$passed passed, $failed failed"
[ $failed = 0 ]
