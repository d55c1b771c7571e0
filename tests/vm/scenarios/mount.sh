#!/bin/sh
# Issue 20: `vdmount mount IMAGE DIR` mounts every filesystem of the image under DIR (ext4 with
# noload, vfat), reports the LUKS and LVM partitions with what to do, --json says the same, and
# `vdmount umount DIR` leaves nothing mounted and no device; the image never changes.
set -e
fail() { echo "mount: $*"; cat /tmp/out 2>/dev/null; cat /run/vdmount/*.log 2>/dev/null; exit 1; }
insmod /abuse.ko max_part=15 || fail "insmod"
before=$(sha256sum /fixtures/mount.qcow2 | cut -d' ' -f1)
vdmount mount /fixtures/mount.qcow2 /tmp/m >/tmp/out 2>&1 || fail "vdmount mount"
cat /tmp/out
grep -q "/dev/abuse0p1 .*ext4 \"root\" on /tmp/m/p1-root (mounted (ext4, ro,noload))" /tmp/out || fail "p1 line"
grep -q "/dev/abuse0p2 .*vfat \"ESP\" on /tmp/m/p2-ESP" /tmp/out || fail "p2 line"
grep -q "/dev/abuse0p3 .*crypto_LUKS: encrypted (LUKS): open it read-only with: cryptsetup open --readonly /dev/abuse0p3" /tmp/out || fail "LUKS line"
grep -q "/dev/abuse0p4 .*LVM2_member: an LVM physical volume" /tmp/out || fail "LVM line"
(cd /tmp/m/p1-root && sha256sum -c /fixtures/mount.sha256 >/dev/null) || fail "checksums"
grep -q " /tmp/m/p1-root ext4 ro,nosuid,nodev" /proc/mounts || { cat /proc/mounts; fail "p1 mount flags"; }
grep -q " /tmp/m/p2-ESP vfat ro,nosuid,nodev" /proc/mounts || { cat /proc/mounts; fail "p2 mount flags"; }
vdmount umount /tmp/m >/tmp/out 2>&1 || fail "vdmount umount"
cat /tmp/out
grep -q /tmp/m /proc/mounts && fail "something is still mounted under /tmp/m"
i=0
while [ -e /sys/block/abuse0 ]; do i=$((i + 1)); [ $i -le 100 ] || fail "/dev/abuse0 still there"; sleep 0.1; done
[ ! -e /tmp/m/p1-root ] || fail "the mount folder was left behind"

vdmount mount --json /fixtures/mount.qcow2 /tmp/j >/tmp/out 2>&1 || fail "vdmount mount --json"
grep -q '"node":"/dev/abuse0p1","filesystem":"ext4","label":"root","mountpoint":"/tmp/j/p1-root"' /tmp/out || fail "--json p1"
grep -q '"node":"/dev/abuse0p3","filesystem":"crypto_LUKS","label":null,"mountpoint":null' /tmp/out || fail "--json p3"
[ "$(grep -c '"node"' /tmp/out)" = 4 ] || fail "--json: not four objects"
vdmount umount /tmp/j >/dev/null || fail "umount (json)"
[ "$(sha256sum /fixtures/mount.qcow2 | cut -d' ' -f1)" = "$before" ] || fail "the image changed"
rmmod abuse || fail "rmmod"
echo "mount: ok"
