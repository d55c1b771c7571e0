#!/bin/bash
# Writes OUT: a 16 MiB VHDX with 4096-byte logical sectors holding a GPT (written for 4 KiB
# sectors) with one ext4 partition containing hello.txt. qemu-img cannot make 4Kn VHDX, so the
# disk is made as raw, converted with 512-byte sectors, and the metadata's logical sector size
# item is set to 4096 (the BAT layout is the same for a disk this small: fewer blocks than one
# chunk). Usage: make-4kn-vhdx.sh OUT
set -euo pipefail
OUT=$1
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
mkdir "$T/files"; echo "hello from a 4Kn disk" >"$T/files/hello.txt"
truncate -s 8M "$T/part.img"
mkfs.ext4 -q -b 4096 -L vdm-4kn -d "$T/files" "$T/part.img"
truncate -s 16M "$T/disk.raw"
# GPT for 4096-byte sectors, written here (sfdisk 2.38 cannot use another sector size).
python3 - "$T/disk.raw" <<'PY'
import struct, sys, uuid, zlib
path, ss = sys.argv[1], 4096
disk = bytearray(open(path, "rb").read())
last = len(disk) // ss - 1
mbr = bytearray(512)
mbr[446:462] = struct.pack("<BBBBBBBBII", 0, 0, 2, 0, 0xEE, 0xFF, 0xFF, 0xFF, 1, min(last, 0xFFFFFFFF))
mbr[510:512] = b"\x55\xaa"
disk[0:512] = mbr
entry = bytearray(128)
entry[0:16] = uuid.UUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4").bytes_le
entry[16:32] = uuid.UUID("6B1C2A3E-0000-4000-8000-00000000400A").bytes_le
struct.pack_into("<QQQ", entry, 32, 256, 256 + 2048 - 1, 0)
entry[56:56 + 14] = "vdm-4kn".encode("utf-16-le")
entries = bytes(entry) + bytes(128 * 127)
def header(mine, other, table):
    h = bytearray(92)
    struct.pack_into("<8sIIIIQQQQ16sQIII", h, 0, b"EFI PART", 0x10000, 92, 0, 0, mine, other, 6, last - 6,
                     uuid.UUID("6B1C2A3E-0000-4000-8000-000000004000").bytes_le, table, 128, 128, zlib.crc32(entries))
    struct.pack_into("<I", h, 16, zlib.crc32(bytes(h)))
    return h
disk[ss:ss + 92] = header(1, last, 2)
disk[2 * ss:2 * ss + len(entries)] = entries
disk[(last - 4) * ss:(last - 4) * ss + len(entries)] = entries
disk[last * ss:last * ss + 92] = header(last, 1, last - 4)
open(path, "wb").write(disk)
PY
dd if="$T/part.img" of="$T/disk.raw" bs=1M seek=1 conv=notrunc status=none
qemu-img convert -f raw -O vhdx -o subformat=dynamic,block_size=1M "$T/disk.raw" "$OUT"
python3 - "$OUT" <<'PY'
import struct, sys, uuid
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
# Region table at 192 KiB: entries of (guid, offset, length, required) after a 16-byte header.
META = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E").bytes_le
LSS = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F").bytes_le
count = struct.unpack_from("<I", data, 192 * 1024 + 8)[0]
for i in range(count):
    e = 192 * 1024 + 16 + 32 * i
    if data[e:e + 16] == META:
        meta = struct.unpack_from("<Q", data, e + 16)[0]
        break
else:
    sys.exit("no metadata region")
n = struct.unpack_from("<H", data, meta + 10)[0]
for i in range(n):
    e = meta + 32 + 32 * i
    if data[e:e + 16] == LSS:
        off = struct.unpack_from("<I", data, e + 16)[0]
        struct.pack_into("<I", data, meta + off, 4096)
        break
else:
    sys.exit("no logical sector size item")
open(path, "wb").write(data)
PY
