#!/bin/sh
# The README's main job: serve fixtures/e2e.qcow2 through abuse.ko and show its files.
set -e
insmod /abuse.ko max_part=15
echo "== vdmount info /fixtures/e2e.qcow2"; vdmount info /fixtures/e2e.qcow2
echo "== vdmount /fixtures/e2e.qcow2"; vdmount /fixtures/e2e.qcow2
echo "== vdmount list"; vdmount list
mount -o ro /dev/abuse0p1 /mnt
echo "== mount -o ro /dev/abuse0p1 /mnt; ls -lR /mnt"; ls -lR /mnt
echo "== cat /mnt/README.txt"; cat /mnt/README.txt
echo "== sha256sum -c fixtures/e2e.sha256"; (cd /mnt && sha256sum -c /fixtures/e2e.sha256)
echo "== vdmount detach /dev/abuse0 (while mounted)"; vdmount detach /dev/abuse0 || true
umount /mnt
echo "== umount /mnt; vdmount detach /dev/abuse0"; vdmount detach /dev/abuse0
rmmod abuse
