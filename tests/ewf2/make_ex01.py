#!/usr/bin/env python3
"""Writes an EWF2 (EnCase 7 .Ex01) segment set from a raw file, by libyal's "Expert Witness
Compression Format 2 (EWF2)" document. No tool here writes EWF2, so the tests build sets with
this and compare what vdmount reads with the source file it read (the oracle).

Layout of each segment: a 32-byte file header, then sections, each its data followed by a
64-byte descriptor that points back at the previous descriptor: device information, case data,
then (sector data, sector table) pairs, and in the last segment the MD5 and SHA1 sections; the
last descriptor is "next" (more segments follow) or "done".

With --layout FILE it also writes a JSON list of every section and table entry it wrote, so the
hostile tests can patch exact places.
"""

import argparse
import bz2
import hashlib
import json
import struct
import zlib

SIGNATURE = b"EVF2\r\n\x81\x00"
DEVICE_INFORMATION, CASE_DATA, SECTOR_DATA, SECTOR_TABLE = 1, 2, 3, 4
MD5_HASH, SHA1_HASH, NEXT, DONE = 8, 9, 0xD, 0xF
COMPRESSED, CHECKSUMED, PATTERN_FILL = 1, 2, 4
METHOD = {"none": 1, "deflate": 1, "bzip2": 2}  # "none" stores chunks; metadata still deflated


def adler32(data):
    return zlib.adler32(data) & 0xFFFFFFFF


def pad16(data):
    return data + b"\0" * (-len(data) % 16)


def segment_name(base, number):
    """.Ex01 to .Ex99, then .ExAA to .ExZZ, .EyAA ... .EzZZ."""
    if number <= 99:
        return f"{base}.Ex{number:02d}"
    k = number - 100
    second = chr(ord("x") + k // 676)
    return f"{base}.E{second}{chr(65 + k // 26 % 26)}{chr(65 + k % 26)}"


def compress(method, data):
    return zlib.compress(data, 6) if method == 1 else bz2.compress(data, 9)


def object_text(pairs, overrides):
    """The serialized object string: "1", "main", tags, values, an empty line; UTF-16LE + BOM.
    `overrides` (TAG=VALUE strings) replace or add values."""
    pairs = dict(pairs)
    for o in overrides:
        tag, value = o.split("=", 1)
        pairs[tag] = value
    pairs = list(pairs.items())
    tags = "\t".join(k for k, _ in pairs)
    values = "\t".join(v for _, v in pairs)
    return b"\xff\xfe" + f"1\nmain\n{tags}\n{values}\n\n".encode("utf-16-le")


class Segment:
    def __init__(self, path, number, method, set_id, layout):
        self.f = open(path, "wb")
        self.number = number
        self.prev = 0
        self.tables = 0
        self.layout = layout
        self.path = path
        self.f.write(SIGNATURE + struct.pack("<BBHI", 2, 1, method, number) + set_id)

    def section(self, kind, data, padding=0, flags=1):
        """Writes `data` (its padding included) and the descriptor after it; flags 1: with the
        MD5 of the data (the integrity hash)."""
        data_at = self.f.tell()
        self.f.write(data)
        at = self.f.tell()
        digest = hashlib.md5(data).digest() if flags & 1 else b"\0" * 16
        d = struct.pack("<IIQQII", kind, flags, self.prev, len(data), 64, padding) + digest + b"\0" * 12
        self.f.write(d + struct.pack("<I", adler32(d)))
        self.layout.append(
            {"segment": self.number, "type": kind, "descriptor": at, "data": data_at, "data_size": len(data)}
        )
        self.prev = at
        return data_at

    def size(self):
        return self.f.tell()

    def close(self, kind):
        self.section(kind, b"", flags=0)
        self.f.close()


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("source")
    p.add_argument("base", help="output name without extension: writes BASE.Ex01, BASE.Ex02, ...")
    p.add_argument("--sectors-per-chunk", type=int, default=64)
    p.add_argument("--bytes-per-sector", type=int, default=512)
    p.add_argument("--compression", choices=["none", "deflate", "bzip2"], default="deflate")
    p.add_argument("--metadata-compression", choices=["deflate", "bzip2"],
                   help="compress the device information and case data so (default: as the header says)")
    p.add_argument("--pattern-fill", action="store_true", help="store all-zero chunks as pattern fill")
    p.add_argument("--segment-size", type=int, default=1 << 40, help="start a new segment past this size")
    p.add_argument("--table-entries", type=int, default=16384, help="most chunks per sector table")
    p.add_argument("--no-md5", action="store_true")
    p.add_argument("--sha1", action="store_true")
    p.add_argument("--case-number", default="case 1")
    p.add_argument("--examiner", default="examiner")
    p.add_argument("--layout", help="write a JSON list of the sections and table entries here")
    p.add_argument("--device", action="append", default=[], metavar="TAG=VALUE",
                   help="set a device information value (for hostile sets: ts, bp, ...)")
    p.add_argument("--case", action="append", default=[], metavar="TAG=VALUE",
                   help="set a case data value (sb, tb, ...)")
    a = p.parse_args()

    bps = a.bytes_per_sector
    # The media is whole sectors: a source that is not is read as if padded with zeros.
    src = open(a.source, "rb").read()
    src += b"\0" * (-len(src) % bps)
    chunk_size = a.sectors_per_chunk * bps
    sectors = (len(src) + bps - 1) // bps
    chunks = (len(src) + chunk_size - 1) // chunk_size
    method = METHOD[a.compression]
    set_id = hashlib.md5(b"vdmount ewf2 set " + a.base.encode()).digest()
    layout = {"sections": [], "entries": [], "segments": []}

    device = object_text(
        [("sn", "VD0001"), ("md", "vdmount test disk"), ("lb", ""), ("ts", str(sectors)), ("hs", "0"),
         ("dc", "0"), ("dt", "f"), ("pid", ""), ("rs", "0"), ("ls", "0"), ("bp", str(bps)), ("ph", "1")], a.device
    )
    case = object_text(
        [("nm", "test image"), ("cn", a.case_number), ("en", "ev 1"), ("ex", a.examiner), ("nt", "notes"),
         ("av", "make_ex01.py"), ("os", "Linux"), ("tt", "1764700000"), ("at", "1764700000"),
         ("tb", str(chunks)), ("cp", "" if a.compression == "none" else str(method)),
         ("sb", str(a.sectors_per_chunk)), ("gr", "64"), ("wb", "")], a.case
    )

    def open_segment(number):
        path = segment_name(a.base, number)
        layout["segments"].append(path)
        s = Segment(path, number, method, set_id, layout["sections"])
        for kind, text in ((DEVICE_INFORMATION, device), (CASE_DATA, case)):
            packed = compress(METHOD[a.metadata_compression or a.compression], text)
            s.section(kind, pad16(packed), padding=len(pad16(packed)) - len(packed))
        return s

    seg = open_segment(1)
    chunk = 0
    while chunk < chunks or chunk == 0 and not chunks:
        # A new segment once this one is past the size and holds some chunks.
        if seg.size() >= a.segment_size and seg.tables:
            seg.close(NEXT)
            seg = open_segment(seg.number + 1)
        first = chunk
        data = bytearray()
        entries = []
        sector_data_at = seg.size()
        while chunk < chunks and len(entries) < a.table_entries:
            raw = src[chunk * chunk_size:(chunk + 1) * chunk_size]
            raw += b"\0" * (min(chunk_size, len(src) - chunk * chunk_size) - len(raw))
            if a.pattern_fill and raw.count(0) == len(raw):
                entries.append((0, 0, COMPRESSED | PATTERN_FILL))
            else:
                packed = compress(method, raw) if a.compression != "none" else None
                at = sector_data_at + len(data)
                if packed is not None and len(packed) < len(raw):
                    entries.append((at, len(packed), COMPRESSED))
                    data += pad16(packed)
                else:
                    stored = raw + struct.pack("<I", adler32(raw))
                    entries.append((at, len(stored), CHECKSUMED))
                    data += pad16(stored)
            chunk += 1
            if sector_data_at + len(data) >= a.segment_size:
                break
        if not entries:
            break
        if data:
            seg.section(SECTOR_DATA, bytes(data), flags=0)
        header = struct.pack("<QII", first, len(entries), 0)
        header += struct.pack("<I", adler32(header)) + b"\0" * 12
        body = b"".join(struct.pack("<QII", *e) for e in entries)
        table = header + body + struct.pack("<I", adler32(body)) + b"\0" * 12
        table_at = seg.size()
        seg.section(SECTOR_TABLE, table, padding=12, flags=0)
        seg.tables += 1
        for i, e in enumerate(entries):
            layout["entries"].append(
                {"segment": seg.number, "chunk": first + i, "at": table_at + 32 + 16 * i,
                 "offset": e[0], "size": e[1], "flags": e[2]}
            )
    if not a.no_md5:
        h = hashlib.md5(src).digest()
        seg.section(MD5_HASH, h + struct.pack("<I", adler32(h)) + b"\0" * 12, padding=12)
    if a.sha1:
        h = hashlib.sha1(src).digest()
        seg.section(SHA1_HASH, h + struct.pack("<I", adler32(h)) + b"\0" * 8, padding=8)
    seg.close(DONE)
    if a.layout:
        with open(a.layout, "w") as f:
            json.dump(layout, f)


if __name__ == "__main__":
    main()
