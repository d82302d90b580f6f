#!/usr/bin/env python3
"""Regenerates examples/data/digits/ from scikit-learn's copy of the UCI digits data.

    python3 examples/data/make_digits.py PATH/TO/sklearn/datasets/data/digits.csv.gz

Each CSV row is 64 pixel values (0..16, row-major 8x8) followed by the digit. Row i becomes
digits/<digit>/<i>.png: an 8-bit grayscale PNG, pixel = round(v * 255 / 16). Standard library
only; the PNG bytes depend on nothing but the data, so reruns give identical files.
"""

import csv
import gzip
import os
import shutil
import struct
import sys
import zlib


def png(width, height, rows):
    """An 8-bit grayscale PNG of `rows` (lists of 0..255)."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(row) for row in rows)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits")
    shutil.rmtree(out, ignore_errors=True)
    with gzip.open(sys.argv[1], "rt") as f:
        for i, row in enumerate(csv.reader(f)):
            values = [int(float(v)) for v in row[:64]]
            digit = int(float(row[64]))
            pixels = [round(v * 255 / 16) for v in values]
            folder = os.path.join(out, str(digit))
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, f"{i:04d}.png"), "wb") as p:
                p.write(png(8, 8, [pixels[r * 8 : r * 8 + 8] for r in range(8)]))


if __name__ == "__main__":
    main()
