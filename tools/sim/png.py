"""PNG files of the simulated OLED as the customer sees it (host side: zlib + struct only).

`encode(width, height, rows, depth)` makes a greyscale PNG (depth 1: rows of 0/1, depth
8: rows of 0-255). `panel_rows(glass, contrast, scale, grid)` turns the panel's picture
(tools/sim/ssd1306.py: `glass()`, 1024 bytes in the GDDRAM's page layout, or `view()`,
8192 bytes of 0/1) into 8-bit grey rows: lit pixels as bright as the contrast register
makes them, dark ones near black, each pixel scale x scale with an optional one-pixel
dark grid between pixels (the dot look of a real OLED). `write_panel(path, ...)` writes
it; `decode(data)` reads back the PNGs written here (for tests).
"""

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
OFF = 12  # a dark pixel: not quite black, as the glass looks
GRID = 0


def _chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def encode(width, height, rows, depth=8):
    """A greyscale PNG of `height` rows of `width` values (0/1 at depth 1, 0-255 at 8)."""
    if depth not in (1, 8):
        raise ValueError("depth: 1 or 8")
    raw = bytearray()
    for y in range(height):
        row = rows[y]
        if len(row) != width:
            raise ValueError("row %d: %d values, expected %d" % (y, len(row), width))
        raw.append(0)  # filter type 0 (none)
        if depth == 8:
            raw += bytes(row)
        else:
            for x in range(0, width, 8):
                b = 0
                for i in range(8):
                    if x + i < width and row[x + i]:
                        b |= 0x80 >> i
                raw.append(b)
    ihdr = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    return (
        SIGNATURE
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(bytes(raw), 9))
        + _chunk(b"IEND", b"")
    )


def decode(data):
    """(width, height, depth, rows) of a PNG written by encode() (filter 0, grey)."""
    if data[:8] != SIGNATURE:
        raise ValueError("not a PNG")
    pos = 8
    idat = b""
    width = height = depth = None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise ValueError("bad CRC in " + kind.decode())
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            if colour != 0:
                raise ValueError("not greyscale")
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = width if depth == 8 else (width + 7) // 8
    rows = []
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        if line[0] != 0:
            raise ValueError("filter type %d" % line[0])
        if depth == 8:
            rows.append(list(line[1:]))
        else:
            rows.append([(line[1 + x // 8] >> (7 - x % 8)) & 1 for x in range(width)])
    return width, height, depth, rows


def pixels(glass, width=128, height=64):
    """0/1 rows from a 1024-byte page-layout picture or an 8192-byte row-major one."""
    if len(glass) == width * height:
        return [list(glass[y * width : (y + 1) * width]) for y in range(height)]
    return [
        [(glass[(y >> 3) * width + x] >> (y & 7)) & 1 for x in range(width)] for y in range(height)
    ]


def lit_level(contrast):
    """Grey of a lit pixel at a contrast register value (0-255): brighter with it."""
    return 96 + contrast * 159 // 255


def panel_rows(glass, contrast=0xCF, scale=4, grid=True):
    """8-bit grey rows of the panel, each pixel scale x scale (grid: a dark line between
    pixels, when scale >= 3)."""
    on = lit_level(contrast)
    src = pixels(glass)
    line = grid and scale >= 3
    rows = []
    for r in src:
        out = []
        for v in r:
            g = on if v else OFF
            if line:
                out += [g] * (scale - 1) + [GRID]
            else:
                out += [g] * scale
        for k in range(scale):
            if line and k == scale - 1:
                rows.append([GRID] * len(out))
            else:
                rows.append(out)
    return rows


def write_panel(path, glass, contrast=0xCF, scale=4, grid=True, depth=8):
    """Write the panel's picture as a PNG: 8-bit grey (scaled, grid) or 1-bit (depth=1:
    lit = 1, scaled without a grid)."""
    if depth == 1:
        src = pixels(glass)
        rows = []
        for r in src:
            out = []
            for v in r:
                out += [v] * scale
            rows += [out] * scale
    else:
        rows = panel_rows(glass, contrast, scale, grid)
    data = encode(len(rows[0]), len(rows), rows, depth)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)
