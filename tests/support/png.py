"""Reading the PNG screenshots headless Chromium writes: pixels and the
colours in them, for tests that check what a page shows a person."""
from __future__ import annotations

import struct
import zlib
from collections import Counter


def paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB bytes) of an 8-bit, non-interlaced
    truecolour PNG (with or without alpha), which is what Chromium writes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, head = 8, [], None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR":
            head = struct.unpack(">IIBBBBB", data[pos + 8:pos + 8 + n])
        elif kind == b"IDAT":
            idat.append(data[pos + 8:pos + 8 + n])
        pos += 12 + n
    w, h, depth, colour, _, _, interlace = head
    assert depth == 8 and colour in (2, 6) and interlace == 0, head
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(b"".join(idat)), w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        at = y * (stride + 1)
        kind, line = raw[at], bytearray(raw[at + 1:at + 1 + stride])
        if kind == 2:  # up: the common one, whole-row
            line = bytearray((x + b) & 0xFF for x, b in zip(line, prev))
        elif kind in (1, 3, 4):
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                c = prev[i - bpp] if i >= bpp else 0
                guess = a if kind == 1 else (a + prev[i]) // 2 if kind == 3 else paeth(a, prev[i], c)
                line[i] = (line[i] + guess) & 0xFF
        else:
            assert kind == 0, kind
        rows.append(line)
        prev = line
    if bpp == 4:  # drop alpha: a screenshot is opaque
        rgb_rows = []
        for line in rows:
            rgb = bytearray(w * 3)
            for k in range(3):
                rgb[k::3] = line[k::4]
            rgb_rows.append(bytes(rgb))
        return w, h, rgb_rows
    return w, h, [bytes(line) for line in rows]


def count_colours(rows: list[bytes], colours: dict[str, tuple[int, int, int]], tol: int = 6) -> Counter:
    """Pixels within tol per channel of each named colour."""
    seen: Counter = Counter()
    for row in rows:
        seen.update(row[i:i + 3] for i in range(0, len(row), 3))
    counts: Counter = Counter()
    for (r, g, b), n in seen.items():
        for name, (cr, cg, cb) in colours.items():
            if abs(r - cr) <= tol and abs(g - cg) <= tol and abs(b - cb) <= tol:
                counts[name] += n
    return counts
