#!/usr/bin/python3
"""Fills a folder with what a used disk holds, deterministically (fixed seed): incompressible
files (media, archives), compressible text (logs, source), files of zeros (preallocated space,
VM swap) and many small files (configuration, mail, registry-like fragments).

    make-disk.py DIR TOTAL_BYTES
"""
import os
import random
import sys

out, total = sys.argv[1], int(sys.argv[2])
rng = random.Random(20240610)
os.makedirs(out, exist_ok=True)

def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)

def big_files(folder, share, make):
    left, i = int(total * share), 0
    while left > 0:
        n = min(left, rng.randint(8, 64) << 20)
        write(f"{out}/{folder}/f{i:04}", make(n))
        left -= n
        i += 1

WORDS = ("kernel usb device eth0 link up down error warning session opened closed user root "
         "systemd started stopped service cron daemon sshd accepted password for from port "
         "disk sda1 mounted filesystem ext4 journal recovery complete").split()

def text(n):
    lines, size, t = [], 0, rng.randint(0, 10**9)
    while size < n:
        t += rng.randint(1, 5000)
        line = "%d host%d %s[%d]: %s\n" % (
            t, rng.randint(1, 9), rng.choice(WORDS), rng.randint(100, 99999),
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))))
        lines.append(line)
        size += len(line)
    return "".join(lines).encode()[:n]

big_files("media", 0.35, rng.randbytes)
big_files("logs", 0.20, text)
big_files("zeros", 0.10, bytes)
left, i = int(total * 0.10), 0
while left > 0:
    n = rng.randint(200, 16384)
    data = rng.randbytes(n) if i % 3 == 0 else text(n)
    write(f"{out}/small/d{i // 200:03}/s{i:05}", data)
    left -= n
    i += 1
