#!/usr/bin/env python3
"""Writes RAW as an Apple sparse image (OUT/NAME.sparseimage: 1 MiB bands, stored in reverse
order) and sparse bundle (OUT/NAME.sparsebundle/: 64 KiB band files, each cut after its last
non-zero byte), as hdiutil lays them out, for the VM's formats scenario. Bands of zeros are
not stored. Usage: make-sparse-fixtures.py RAW OUT NAME"""
import os
import struct
import sys

raw, out, name = sys.argv[1:4]
data = open(raw, "rb").read()


def bands(size):
    return [i for i in range((len(data) + size - 1) // size) if any(data[i * size:(i + 1) * size])]


# .sparseimage: a 4096-byte header (1008 slots) is enough for a 12 MiB disk of 1 MiB bands.
band = 1 << 20
stored = bands(band)[::-1]
assert len(stored) <= 1008
h = bytearray(4096)
h[:4] = b"sprs"
sectors = (len(data) + 511) // 512
struct.pack_into(">IIII", h, 4, 3, band // 512, 1, sectors)
struct.pack_into(">QQ", h, 20, 0, sectors)
with open(os.path.join(out, name + ".sparseimage"), "wb") as f:
    for slot, b in enumerate(stored):
        struct.pack_into(">I", h, 64 + 4 * slot, b + 1)
    f.write(h)
    for b in stored:
        f.write(data[b * band:(b + 1) * band].ljust(band, b"\0"))

# .sparsebundle
band = 64 << 10
folder = os.path.join(out, name + ".sparsebundle")
os.makedirs(os.path.join(folder, "bands"), exist_ok=True)
plist = f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>CFBundleInfoDictionaryVersion</key>
	<string>6.0</string>
	<key>band-size</key>
	<integer>{band}</integer>
	<key>bundle-backingstore-version</key>
	<integer>1</integer>
	<key>diskimage-bundle-type</key>
	<string>com.apple.diskimage.sparsebundle</string>
	<key>size</key>
	<integer>{len(data)}</integer>
</dict>
</plist>
"""
open(os.path.join(folder, "Info.plist"), "w").write(plist)
open(os.path.join(folder, "token"), "w").close()
for b in bands(band):
    open(os.path.join(folder, "bands", f"{b:x}"), "wb").write(data[b * band:(b + 1) * band].rstrip(b"\0"))
