#!/usr/bin/python3
# Random 4 KiB reads through libvmdk (Debian's python3-libvmdk), for bench/run.sh: the same
# offsets as examples/randread.rs (one a line on stdin), read one after another.
#   libvmdk-randread.py IMAGE < OFFSETS      prints "reads seconds iops"
# libvmdk keeps a small cache of decompressed grains: this is the peer for streamOptimized
# random reads (issue 10). Timed from the open, like randread and qemu-io.
import sys
import time

import pyvmdk

start = time.perf_counter()
offsets = [int(line) for line in sys.stdin if line.strip()]
handle = pyvmdk.handle()
handle.open(sys.argv[1])
handle.open_extent_data_files()
checksum = 0
for offset in offsets:
    data = handle.read_buffer_at_offset(4096, offset)
    if len(data) != 4096:
        sys.exit(f"libvmdk-randread: short read at {offset}")
    checksum += data[offset // 4096 % 4096]
secs = time.perf_counter() - start
print(f"{len(offsets)} {secs:.6f} {len(offsets) / secs:.0f} {checksum}")
