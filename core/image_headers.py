"""Width and height of a PNG or JPEG read straight from its header bytes, without Pillow.

The predict path checks every image's size before it queues the request (a 413 for one too
large to decode in time). Opening each image with Pillow just for that cost as much of the
server's event loop as parsing the request's multipart body did (issue 11's profile), and the
decode thread opened it again. These readers follow the two formats' headers exactly as Pillow
does, for the well-formed case only: anything else (another format, a truncated header, a
chunk whose checksum fails, a second size header, a marker out of place) gives ``None``, and
the caller asks Pillow, whose answer is then the same as before. Where they answer, they
answer what Pillow would (tested against Pillow on real and generated images, and on damaged
ones).
"""

from __future__ import annotations

import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The start-of-frame markers that carry the frame's size (ITU T.81, B.1.1.3): C0-CF except
# DHT (C4), JPG (C8) and DAC (CC), as in Pillow's JpegImagePlugin.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers with no length field after them: RST0-7, SOI, EOI. (Below C0, where TEM sits, Pillow
# knows no marker and refuses the file.)
_STANDALONE = frozenset(range(0xD0, 0xDA))
_FIRST_MARKER = 0xC0
_START_OF_SCAN = 0xDA
# Chunks before the first IDAT that the PNG reader walks before leaving the file to Pillow.
_MAX_PNG_CHUNKS = 64


def header_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` as the header states it, or ``None`` where this reader stops short
    (then ask Pillow)."""
    if data.startswith(PNG_SIGNATURE):
        return _png_size(data)
    if data.startswith(b"\xff\xd8\xff"):
        return _jpeg_size(data)
    return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    # Pillow reads every chunk up to the first IDAT, checking each CRC, and a later IHDR would
    # replace the size it reports and decodes: so walk the same chunks, and answer only for
    # exactly one IHDR, first, before IDAT (a second IHDR could otherwise hide a large image
    # behind a small first one).
    size: tuple[int, int] | None = None
    at, end = len(PNG_SIGNATURE), len(data)
    for _ in range(_MAX_PNG_CHUNKS):
        if at + 12 > end:
            return None
        length = int.from_bytes(data[at : at + 4], "big")
        kind = data[at + 4 : at + 8]
        if at + 12 + length > end:
            return None
        crc = int.from_bytes(data[at + 8 + length : at + 12 + length], "big")
        if zlib.crc32(data[at + 4 : at + 8 + length]) != crc:
            return None
        if kind == b"IHDR":
            if size is not None or at != len(PNG_SIGNATURE) or length != 13:
                return None
            width = int.from_bytes(data[at + 8 : at + 12], "big")
            height = int.from_bytes(data[at + 12 : at + 16], "big")
            if not width or not height:
                return None
            size = (width, height)
        elif size is None:
            return None  # IHDR must come first
        elif kind == b"IDAT":
            return size
        at += 12 + length
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    # Walk the markers up to the start of scan, as Pillow does; the last frame header seen
    # gives the size (a well-formed file has one).
    size: tuple[int, int] | None = None
    i, end = 2, len(data)
    while i + 4 <= end:
        if data[i] != 0xFF:
            return None  # Pillow tolerates some junk here; leave those files to it
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1  # a fill byte before the marker
            continue
        if marker < _FIRST_MARKER:
            return None
        if marker in _STANDALONE:
            i += 2
            continue
        if marker == _START_OF_SCAN:
            return size
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if length < 2 or i + 2 + length > end:
            return None
        if marker in _SOF:
            # Pillow opens 8-bit frames of 1, 3 or 4 components only.
            if length < 8 or data[i + 4] != 8 or data[i + 9] not in (1, 3, 4):
                return None
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            if not width or not height:
                return None
            size = (width, height)
        i += 2 + length
    return None
