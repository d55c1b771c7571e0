#!/bin/sh
# Issue 4: with no server back within the reconnect timeout, I/O fails with EIO (no hang), the
# status says why, and a late server still takes over.
set -e
fail() { echo "timeout: $*"; exit 1; }
insmod /abuse.ko max_part=15 reconnect_timeout_ms=1500
vdmount --foreground /fixtures/e2e.qcow2 /dev/abctl0 2>/tmp/server.log &
server=$!
while [ ! -b /dev/abuse0p1 ]; do kill -0 $server || fail "server died"; sleep 0.1; done
/opt/bin/dd if=/dev/abuse0 of=/dev/null bs=4k count=16 iflag=direct status=none || fail "read while served"
kill -9 $server; wait $server 2>/dev/null || true
vdmount list | tee /tmp/list
grep -q 'waiting-for-server' /tmp/list || fail "list does not say the device waits for a server"
sleep 2
if timeout 20 /opt/bin/dd if=/dev/abuse0 of=/dev/null bs=4k count=1 skip=100 iflag=direct status=none 2>/tmp/dd.err; then
	fail "read without a server succeeded"
fi
grep -q 'Input/output error' /tmp/dd.err || fail "expected EIO, got: $(cat /tmp/dd.err)"
vdmount list --json | tee /tmp/list.json
grep -q '"state":"failed-no-server"' /tmp/list.json || fail "status does not report the timeout"
vdmount --foreground --reattach /fixtures/e2e.qcow2 /dev/abctl0 2>>/tmp/server.log &
server=$!
sleep 1
/opt/bin/dd if=/dev/abuse0 of=/dev/null bs=4k count=16 skip=200 iflag=direct status=none || fail "read after a late reattach"
kill -TERM $server; wait $server || fail "server exit"
rmmod abuse
echo "timeout: ok"
