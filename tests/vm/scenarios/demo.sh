#!/bin/sh
# The README's main job: serve fixtures/e2e.qcow2 through abuse.ko and show its files.
set -e
insmod /abuse.ko max_part=15
vdmount /fixtures/e2e.qcow2 /dev/abctl0 &
server=$!
while [ ! -b /dev/abuse0p1 ]; do kill -0 $server && sleep 0.1; done
echo "== vdmount info /fixtures/e2e.qcow2"; vdmount info /fixtures/e2e.qcow2
echo "== partitions"; ls -l /dev/abuse0*
mount -o ro /dev/abuse0p1 /mnt
echo "== mount -o ro /dev/abuse0p1 /mnt; ls -lR /mnt"; ls -lR /mnt
echo "== cat /mnt/README.txt"; cat /mnt/README.txt
echo "== checksums"; (cd /mnt && sha256sum -c /fixtures/e2e.sha256)
umount /mnt
kill -TERM $server; wait $server
rmmod abuse
