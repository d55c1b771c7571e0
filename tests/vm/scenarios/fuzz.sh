#!/bin/sh
# Issue 4: a hostile server (forged, stale and duplicate completions, random ioctls, bad
# pointers) on abctl1 while vdmount serves abctl0: no oops or WARN, abctl1 refuses what it
# must, and abctl0 still serves correct data afterwards.
set -e
fail() { echo "fuzz: $*"; exit 1; }
insmod /abuse.ko max_part=15
vdmount --foreground /fixtures/e2e.qcow2 /dev/abctl0 2>/tmp/server.log &
server=$!
while [ ! -b /dev/abuse0p1 ]; do kill -0 $server || fail "server died"; sleep 0.1; done
# Someone else's device: every control ioctl from a non-server is refused.
abuse-ioctl-fuzz /dev/abctl1 /dev/abuse1 20000 || fail "abuse-ioctl-fuzz reported failures"
mount -o ro /dev/abuse0p1 /mnt
(cd /mnt && sha256sum -c /fixtures/e2e.sha256 >/dev/null) || fail "abctl0 data after the fuzz"
umount /mnt
kill -TERM $server; wait $server
rmmod abuse
echo "fuzz: ok"
