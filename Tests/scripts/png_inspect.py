#!/usr/bin/env python3
"""An independent PNG decoder for the tests (standard library only: zlib, struct).

    png_inspect.py FILE [X,Y ...] [#RRGGBB ...]

Checks the signature and every chunk's CRC, inflates IDAT, undoes all five row filters, and prints
one JSON object: {"width", "height", "colors": number of distinct colors,
"pixels": {"X,Y": [r,g,b]}, "counts": {"#rrggbb": pixels of that color}}.
Exits 1 with a message on any defect.
"""
import json
import struct
import sys
import zlib


def decode(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("bad signature")
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise ValueError(f"bad CRC in {kind!r}")
        chunks.append((kind, body))
        pos += 12 + length
    if chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        raise ValueError("IHDR must come first and IEND last")
    w, h, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if (depth, ctype, interlace) != (8, 2, 0):
        raise ValueError(f"unsupported: depth {depth}, color type {ctype}, interlace {interlace}")
    raw = zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT"))
    stride = 3 * w
    if len(raw) != h * (stride + 1):
        raise ValueError("wrong amount of image data")
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - 3] if i >= 3 else 0
            b, c = prev[i], prev[i - 3] if i >= 3 else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            elif f != 0: raise ValueError(f"bad filter {f}")
        rows.append(bytes(line))
        prev = line
    return w, h, rows


def main():
    try:
        w, h, rows = decode(sys.argv[1])
    except Exception as e:  # noqa: BLE001
        print(f"{sys.argv[1]}: {e}", file=sys.stderr)
        sys.exit(1)
    colors = {rows[y][3 * x:3 * x + 3] for y in range(h) for x in range(w)}
    pixels, counts = {}, {}
    for spec in sys.argv[2:]:
        if spec.startswith("#"):
            want = bytes.fromhex(spec[1:])
            counts[spec.lower()] = sum(rows[y][3 * x:3 * x + 3] == want for y in range(h) for x in range(w))
        else:
            x, y = map(int, spec.split(","))
            pixels[spec] = list(rows[y][3 * x:3 * x + 3])
    print(json.dumps({"width": w, "height": h, "colors": len(colors), "pixels": pixels, "counts": counts}))


main()
