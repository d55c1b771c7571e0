#!/bin/bash
# Regenerates the committed seed corpus (fuzz/corpus/) from small images made with qemu-img and
# the smallest third-party fixtures. Seeds are kept tiny (1 MiB virtual disks, small clusters, a
# few KiB of data) so each fuzz exec is fast; the whole corpus stays well under 2 MB.
#   fuzz/corpus/open_and_read/  image seeds of every format (open_qcow2, open_vmdk, open_vhd,
#                               open_vhdx, open_vdi, open_qed, open_parallels and open_ewf are symlinks to it: forcing a format on another
#                               format's seed is a useful mutation start too)
#   fuzz/corpus/vmdk_descriptor/ descriptor texts
#   fuzz/corpus/serve_batch/     byte strings the `arbitrary` crate turns into request lists
set -euo pipefail
FUZZ=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$FUZZ")
CORPUS=$FUZZ/corpus
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"

rm -rf "$CORPUS"
mkdir -p "$CORPUS/open_and_read" "$CORPUS/vmdk_descriptor" "$CORPUS/serve_batch"
IMG=$CORPUS/open_and_read

# A 1 MiB source disk with data in a few places, the rest zeros.
python3 - <<'EOF'
data = bytearray(1 << 20)
for at, n in [(0, 4096), (70000, 3000), (600 << 10, 8192), ((1 << 20) - 2048, 2048)]:
    for i in range(n):
        data[at + i] = (at // 512 + i * 7) & 0xff
open("src.raw", "wb").write(data)
EOF

write_data() { # image format: the same few writes with qemu-io
	qemu-io -f "$2" -c 'write -P 0x5a 4k 8k' -c 'write -P 0xa5 900k 3k' "$1" >/dev/null
}

# qcow2: v3 and v2, small clusters, compression (zlib, zstd), extended L2, a backing name, a snapshot.
qemu-img create -q -f qcow2 -o cluster_size=512 "$IMG/qcow2-v3-c512.qcow2" 1M
write_data "$IMG/qcow2-v3-c512.qcow2" qcow2
qemu-img create -q -f qcow2 -o cluster_size=4096,compat=0.10 "$IMG/qcow2-v2-c4k.qcow2" 1M
write_data "$IMG/qcow2-v2-c4k.qcow2" qcow2
qemu-img convert -c -O qcow2 -o cluster_size=4096 src.raw "$IMG/qcow2-zlib.qcow2"
qemu-img convert -c -O qcow2 -o cluster_size=4096,compression_type=zstd src.raw "$IMG/qcow2-zstd.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=16384,extended_l2=on "$IMG/qcow2-extl2.qcow2" 1M
qemu-io -f qcow2 -c 'write -P 0x11 1k 1k' -c 'write -P 0x22 40k 2k' "$IMG/qcow2-extl2.qcow2" >/dev/null
# The child keeps naming its base, which is not in the corpus (a missing backing file).
qemu-img create -q -f qcow2 -o cluster_size=512 missing-base.qcow2 1M
qemu-img create -q -f qcow2 -o cluster_size=512 -b missing-base.qcow2 -F qcow2 child.qcow2 1M
write_data child.qcow2 qcow2
mv child.qcow2 "$IMG/qcow2-backing.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=512 "$IMG/qcow2-snapshot.qcow2" 1M
write_data "$IMG/qcow2-snapshot.qcow2" qcow2
qemu-img snapshot -c first "$IMG/qcow2-snapshot.qcow2"
qemu-io -f qcow2 -c 'write -P 0x77 8k 1k' "$IMG/qcow2-snapshot.qcow2" >/dev/null

# QED: 4 KiB clusters, tables of two clusters (8 KiB), data and zero-cluster writes; a child
# naming a QED base missing from the corpus; a child over src.raw with the "raw, no probe" flag.
qemu-img create -q -f qed -o cluster_size=4096,table_size=2 "$IMG/qed-c4k.qed" 1M
qemu-io -f qed -c 'write -P 0x5a 4k 8k' -c 'write -P 0xa5 900k 3k' -c 'write -z 16k 8k' "$IMG/qed-c4k.qed" >/dev/null
qemu-img create -q -f qed -o cluster_size=4096 missing-base.qed 1M
qemu-img create -q -f qed -o cluster_size=4096,table_size=2 -b missing-base.qed -F qed child.qed 1M
qemu-io -f qed -c 'write -P 0x5a 4k 8k' -c 'write -z 64k 8k' child.qed >/dev/null
mv child.qed "$IMG/qed-backing.qed"
qemu-img create -q -f qed -o cluster_size=4096,table_size=2 -b src.raw -F raw child.qed 1M
qemu-io -f qed -c 'write -P 0x11 8k 4k' child.qed >/dev/null
mv child.qed "$IMG/qed-backing-raw.qed"
ln -sfn open_and_read "$CORPUS/open_qed"
# EWF: one-segment sets from ewfacquire (ewf-tools), small chunks, each writer's layout.
for f in encase6:deflate:fast encase1:empty-block smart:deflate:fast ewfx:empty-block linen5:deflate:best; do
	ewfacquire -u -q -f "${f%%:*}" -c "${f#*:}" -b 16 -t "ewf-${f%%:*}" src.raw >/dev/null
	mv ewf-"${f%%:*}".[Ees]01 "$IMG/ewf-${f%%:*}.E01"
done
ln -sfn open_and_read "$CORPUS/open_ewf"

# Parallels: v2 with 4 KiB clusters, the same patched to v1 (sector-unit BAT), and a bundle
# descriptor (it names "image", the fuzz input's own name, as a Compressed image).
qemu-img create -q -f parallels -o cluster_size=4096 "$IMG/prl-c4k.prl" 1M
qemu-io -f parallels -c 'write -P 0x5a 4k 8k' -c 'write -P 0xa5 900k 3k' "$IMG/prl-c4k.prl" >/dev/null
python3 - "$IMG/prl-c4k.prl" "$IMG/prl-v1.prl" <<'EOF'
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
b[0:16] = b"WithoutFreeSpace"
tracks, entries = struct.unpack_from("<II", b, 28)
for i in range(entries):
    v, = struct.unpack_from("<I", b, 64 + 4 * i)
    struct.pack_into("<I", b, 64 + 4 * i, v * tracks)
open(sys.argv[2], "wb").write(b)
EOF
cat >"$IMG/prl-DiskDescriptor.xml" <<'EOF'
<?xml version='1.0' encoding='UTF-8'?>
<Parallels_disk_image Version="1.0">
 <Disk_Parameters><Disk_size>2048</Disk_size><Heads>16</Heads><Sectors>32</Sectors><Padding>0</Padding></Disk_Parameters>
 <StorageData><Storage><Start>0</Start><End>2048</End><Blocksize>8</Blocksize>
  <Image><GUID>{0b2d3c4e-1111-4a5b-8c9d-000000000001}</GUID><Type>Plain</Type><File>image</File></Image>
  <Image><GUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</GUID><Type>Compressed</Type><File>image</File></Image>
 </Storage></StorageData>
 <Snapshots>
  <Shot><GUID>{0b2d3c4e-1111-4a5b-8c9d-000000000001}</GUID><ParentGUID>{00000000-0000-0000-0000-000000000000}</ParentGUID></Shot>
  <Shot><GUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</GUID><ParentGUID>{0b2d3c4e-1111-4a5b-8c9d-000000000001}</ParentGUID></Shot>
 </Snapshots>
</Parallels_disk_image>
EOF
ln -sfn open_and_read "$CORPUS/open_parallels"

# VMDK: monolithicSparse, streamOptimized, and descriptors (flat, split sparse).
qemu-img convert -O vmdk src.raw "$IMG/vmdk-sparse.vmdk"
qemu-img convert -O vmdk -o subformat=streamOptimized src.raw "$IMG/vmdk-stream.vmdk"
qemu-img create -q -f vmdk -o subformat=monolithicFlat flat.vmdk 1M
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse split.vmdk 1M
cp flat.vmdk "$IMG/vmdk-flat-descriptor.vmdk"
cp split.vmdk "$IMG/vmdk-split-descriptor.vmdk"
for d in flat.vmdk split.vmdk "$REPO"/fixtures/third-party/vmdk-esxi-vmfs-thick/vmfs_thick.vmdk \
	"$REPO"/fixtures/third-party/vmdk-ws17-t4-vmfs-thin/image_t4.vmdk \
	"$REPO"/fixtures/third-party/vmdk-vdiskmanager-twoGbMaxExtentSparse/twoGbMaxExtentSparse.vmdk; do
	cp "$d" "$CORPUS/vmdk_descriptor/$(basename "$d" .vmdk).txt"
done
cp "$REPO/fixtures/third-party/vmdk-ws17-t4-vmfs-thin/image_t4.vmdk" "$IMG/vmdk-vmfs-descriptor.vmdk"
# The descriptor embedded in a sparse extent (sector 1 on, NUL padded).
python3 -c "import sys; d=open(sys.argv[1],'rb').read()[512:512*21]; open(sys.argv[2],'wb').write(d.split(b'\0')[0])" \
	"$IMG/vmdk-sparse.vmdk" "$CORPUS/vmdk_descriptor/embedded.txt"
xz -dc "$REPO/fixtures/third-party/vmdk-plaso-v1/image.vmdk.xz" >"$IMG/vmdk-plaso-v1.vmdk"
cp "$REPO/fixtures/third-party/qcow2-cs16384-cpoff-l2on/image_cs-16384_cp-off_l2-on.qcow2" "$IMG/qcow2-thirdparty-extl2.qcow2"

# VHD: fixed (64 KiB disk), and dynamic with its data block cut short (qemu's blocks are 2 MiB):
# the file is cut 16 KiB into the first data block and the footer appended again, so every
# structure is whole and reads past the end of the file are zeros.
qemu-img create -q -f vpc -o subformat=fixed "$IMG/vhd-fixed.vhd" 64K
qemu-io -f vpc -c 'write -P 0x5a 4k 8k' "$IMG/vhd-fixed.vhd" >/dev/null
qemu-img create -q -f vpc dyn.vhd 4M
qemu-io -f vpc -c 'write -P 0x5a 4k 8k' -c 'write -P 0xa5 2100k 3k' dyn.vhd >/dev/null
python3 - dyn.vhd "$IMG/vhd-dynamic.vhd" <<'EOF'
import struct, sys
d = open(sys.argv[1], "rb").read()
footer = d[-512:]
table = struct.unpack(">Q", d[512 + 16:512 + 24])[0]
first = min(e for e in struct.unpack(">8I", d[table:table + 32]) if e != 0xffffffff) * 512
open(sys.argv[2], "wb").write(d[:first + 512 + 16384] + footer)
EOF

# VHDX: qemu lays regions out at 1 MiB steps (8 MiB file). This moves the BAT and metadata to
# 1 MiB and 1 MiB + 64 KiB (its table and items fit in 128 KiB), drops the (empty) log and recomputes the checksums: a 1.2 MiB seed.
qemu-img create -q -f vhdx -o block_size=1M,log_size=1M big.vhdx 4M
qemu-io -f vhdx -c 'write -P 0x5a 4k 8k' big.vhdx >/dev/null
python3 - big.vhdx "$IMG/vhdx-dynamic.vhdx" <<'EOF'
import struct, sys

def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF

d = bytearray(open(sys.argv[1], "rb").read())
out = bytearray(d[:1 << 20])
BAT = bytes.fromhex("6677c22d23f600429d64115e9bfd4a08")
# Headers at 64 and 128 KiB: no log.
for h in (64 << 10, 128 << 10):
    hdr = bytearray(out[h:h + 4096])
    hdr[48:64] = bytes(16)                      # log GUID
    struct.pack_into("<IQ", hdr, 68, 0, 0)      # log length, log offset
    struct.pack_into("<I", hdr, 4, 0)
    struct.pack_into("<I", hdr, 4, crc32c(hdr))
    out[h:h + 4096] = hdr
# Region tables at 192 and 256 KiB.
new_at = {}
for r in (192 << 10, 256 << 10):
    rt = bytearray(out[r:r + 65536])
    count = struct.unpack_from("<I", rt, 8)[0]
    for i in range(count):
        e = 16 + 32 * i
        off, length = struct.unpack_from("<QI", rt, e + 16)
        at, length = ((1 << 20), 65536) if bytes(rt[e:e + 16]) == BAT else ((1 << 20) + 65536, 131072)
        new_at[off] = (at, length)
        struct.pack_into("<QI", rt, e + 16, at, length)
    struct.pack_into("<I", rt, 4, 0)
    struct.pack_into("<I", rt, 4, crc32c(rt))
    out[r:r + 65536] = rt
out += bytes(3 * 65536)
for old, (at, length) in new_at.items():
    out[at:at + length] = d[old:old + length]
open(sys.argv[2], "wb").write(out)
EOF

# VDI: dynamic and static from qemu-img (1 MiB blocks), cut 16 KiB into their first data block
# (reads past the end are zeros); and, written from the specification since qemu cannot, a
# dynamic VDI with 4 KiB blocks (stored, unallocated and discarded) and a differencing child of it.
qemu-img create -q -f vdi dyn.vdi 4M
qemu-io -f vdi -c 'write -P 0x5a 4k 8k' -c 'write -P 0xa5 2100k 3k' dyn.vdi >/dev/null
qemu-img create -q -f vdi -o static=on static.vdi 2M
qemu-io -f vdi -c 'write -P 0x5a 4k 8k' static.vdi >/dev/null
python3 - dyn.vdi static.vdi "$IMG" <<'EOF'
import struct, sys
for name, out in ((sys.argv[1], "vdi-dynamic.vdi"), (sys.argv[2], "vdi-static.vdi")):
    d = open(name, "rb").read()
    data = struct.unpack_from("<I", d, 0x158)[0]
    open(f"{sys.argv[3]}/{out}", "wb").write(d[:data + 16384])

def vdi(image_type, entries, stored, create, modify, linkage=bytes(16), parent_modify=bytes(16)):
    h = bytearray(512)
    h[:40] = b"<<< Oracle VM VirtualBox Disk Image >>>\n"
    data_at = 512 + (4 * len(entries) + 511) // 512 * 512
    struct.pack_into("<IIII", h, 0x40, 0xbeda107f, 0x00010001, 0x190, image_type)
    struct.pack_into("<II", h, 0x154, 512, data_at)
    struct.pack_into("<I", h, 0x168, 512)
    struct.pack_into("<QIIII", h, 0x170, 4096 * len(entries), 4096, 0, len(entries), len(stored))
    h[0x188:0x1c8] = create + modify + linkage + parent_modify
    m = b"".join(struct.pack("<I", e) for e in entries)
    return bytes(h) + m + bytes(data_at - 512 - len(m)) + b"".join(stored)

F, Z = 0xFFFFFFFF, 0xFFFFFFFE
base_create, base_modify = bytes(range(1, 17)), bytes(range(17, 33))
blocks = [bytes([(i * 37 + j) & 0xff for j in range(4096)]) for i in range(3)]
base = vdi(1, [1, F, 0, Z, F, 2, F, F], blocks, base_create, base_modify)
open(f"{sys.argv[3]}/vdi-4k-blocks.vdi", "wb").write(base)
child = vdi(4, [F, 0, F, F, Z, F, F, F], [bytes([0x77]) * 4096], bytes(range(33, 49)), bytes(range(49, 65)),
            base_create, base_modify)
open(f"{sys.argv[3]}/vdi-differencing.vdi", "wb").write(child)
EOF

# Apple sparse images (no Linux tool writes them): a 64 KiB disk of 4 KiB bands, three stored
# out of order; and 512-byte bands with the header's slots mostly unused and an index node.
# open_sparsebundle's inputs are an Info.plist, a NUL, then band files of 4 KiB (named 0, 2, 4...).
mkdir -p "$CORPUS/open_sparsebundle"
python3 - "$IMG" "$CORPUS/open_sparsebundle" <<'EOF'
import struct, sys
def header(spb, sectors, nxt=0):
    h = bytearray(4096)
    h[:4] = b"sprs"
    struct.pack_into(">IIII", h, 4, 3, spb, 1, sectors)
    struct.pack_into(">QQ", h, 20, nxt, sectors)
    return h
band = lambda i, n: bytes([(i * 29 + j) & 0xff for j in range(n)])
h = header(8, 128)
struct.pack_into(">III", h, 64, 5, 1, 16)
open(f"{sys.argv[1]}/sparseimage-4k.sparseimage", "wb").write(h + band(5, 4096) + band(1, 4096) + band(16, 2048))
h = header(1, 64, 4096 + 2 * 512)
struct.pack_into(">II", h, 64, 3, 60)
node = bytearray(4096)
node[:4] = b"sprs"
struct.pack_into(">IIQ", node, 4, 0, 1, 0)
struct.pack_into(">II", node, 56, 1, 64)
open(f"{sys.argv[1]}/sparseimage-nodes.sparseimage", "wb").write(h + band(3, 512) + band(60, 512) + node + band(1, 512) + band(64, 512))
plist = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>CFBundleInfoDictionaryVersion</key>
	<string>6.0</string>
	<key>band-size</key>
	<integer>%s</integer>
	<key>bundle-backingstore-version</key>
	<integer>1</integer>
	<key>diskimage-bundle-type</key>
	<string>com.apple.diskimage.sparsebundle</string>
	<key>size</key>
	<integer>%s</integer>
</dict>
</plist>
"""
open(f"{sys.argv[2]}/bundle-4k", "wb").write((plist % (4096, 65536)).encode() + b"\0" + band(0, 4096) + band(2, 4096) + band(4, 1000))
open(f"{sys.argv[2]}/bundle-odd", "wb").write((plist % (3000, 20000)).encode() + b"\0" + band(7, 3000) + band(8, 100))
EOF
ln -sfn open_and_read "$CORPUS/open_sparseimage"

# serve_batch: a few deterministic byte strings (arbitrary turns them into request lists).
python3 - "$CORPUS/serve_batch" <<'EOF'
import random, sys
r = random.Random(9)
for i in range(8):
    open(f"{sys.argv[1]}/seed-{i}", "wb").write(bytes(r.randrange(256) for _ in range(64 + 64 * i)))
EOF

cd "$CORPUS"
for t in open_qcow2 open_vmdk open_vhd open_vhdx open_vdi; do ln -sfn open_and_read "$t"; done
du -sh --apparent-size "$CORPUS"

# lvm_metadata: a physical volume of two volumes' metadata (8 KiB: label, metadata area, text;
# no data) and its text alone.
mkdir -p "$CORPUS/lvm_metadata"
head -c 3000000 /dev/zero >"$W/lv.img"
truncate -s 24M "$W/pv.raw"
python3 "$REPO/tests/vm/make-lvm-pv.py" "$W/pv.raw" 0 $((24 << 20)) vg0 home="$W/lv.img" data="$W/lv.img",1
head -c $((1 << 20)) "$W/pv.raw" | python3 -c 'import sys; b = sys.stdin.buffer.read(); n = int.from_bytes(b[4096 + 48:4096 + 56], "little"); sys.stdout.buffer.write(b[4608:4608 + n - 1])' >"$CORPUS/lvm_metadata/text"
truncate -s 8K "$W/tiny.raw"
LVM_PE_START=8192 python3 "$REPO/tests/vm/make-lvm-pv.py" "$W/tiny.raw" 0 8192 vg1
cp "$W/tiny.raw" "$CORPUS/lvm_metadata/tiny-pv"

# EWF2: one-segment .Ex01 sets from tests/ewf2/make_ex01.py (no tool here writes EWF2): each
# compression, 4 KiB chunks, zero chunks as pattern fill, small tables, MD5 and SHA1.
mkdir -p "$CORPUS/open_ewf2"
for c in deflate bzip2 none; do
	python3 "$REPO/tests/ewf2/make_ex01.py" "$W/src.raw" "$W/ewf2-$c" --compression "$c" --sectors-per-chunk 8 \
		--pattern-fill --sha1 --table-entries 64
	mv "$W/ewf2-$c.Ex01" "$CORPUS/open_ewf2/ewf2-$c.Ex01"
done
