"""core.image_headers reads PNG and JPEG sizes as Pillow does, or leaves the file to Pillow.

The property that matters for the predict path's size check: wherever the header reader gives
a size, Pillow opens the same bytes to the same size. Checked on real CIFAR-10 JPEGs, on images
written here in every mode and option Pillow writes, and on damaged copies of them (cut short,
bytes flipped), where the reader must stop short rather than guess.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from core.image_headers import PNG_SIGNATURE, header_size
from core.images import ImageDecodeError, decode_image, image_pixels

CIFAR = sorted((Path(__file__).parents[1] / "fixtures" / "cifar10-jpeg").rglob("*.jpg"))


def _pillow_size(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:  # any refusal: Pillow gives no size
        return None


def _encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def _text_chunks() -> PngInfo:
    info = PngInfo()
    info.add_text("comment", "x" * 300)
    info.add_text("zipped", "y" * 300, zip=True)
    return info


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_a_png_with_a_second_size_header_is_left_to_pillow():
    """Pillow takes the last IHDR before the image data: a small first one must not hide it
    (64 such images of 6000x6000 would pass the request's pixel budget as 64 pixels)."""

    def ihdr(width: int, height: int) -> bytes:
        return _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))

    rows = b"".join(b"\0" + b"\0" * 3 * 300 for _ in range(200))
    png = (PNG_SIGNATURE + ihdr(1, 1) + ihdr(300, 200) + _chunk(b"IDAT", zlib.compress(rows))
           + _chunk(b"IEND", b""))  # fmt: skip
    assert _pillow_size(png) == (300, 200)
    assert header_size(png) is None
    assert image_pixels(png) == 300 * 200


def _written_images() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    made = [
        ("png-rgb", _encode(rgb, "PNG")),
        ("png-rgba", _encode(rgb.convert("RGBA"), "PNG")),
        ("png-l", _encode(rgb.convert("L"), "PNG")),
        ("png-la", _encode(rgb.convert("LA"), "PNG")),
        ("png-1", _encode(rgb.convert("1"), "PNG")),
        ("png-p", _encode(rgb.convert("P"), "PNG", optimize=True)),
        ("png-16", _encode(Image.fromarray(rng.integers(0, 65535, (9, 300), np.uint16)), "PNG")),
        ("png-1px", _encode(Image.new("RGB", (1, 1)), "PNG")),
        ("png-wide", _encode(Image.new("L", (4000, 2)), "PNG")),
        ("png-text-icc", _encode(rgb, "PNG", pnginfo=_text_chunks(), icc_profile=b"\0" * 500)),
        ("jpeg", _encode(rgb, "JPEG")),
        ("jpeg-q10-444", _encode(rgb, "JPEG", quality=10, subsampling=0)),
        ("jpeg-progressive", _encode(rgb, "JPEG", progressive=True)),
        ("jpeg-optimized", _encode(rgb, "JPEG", optimize=True)),
        ("jpeg-grey", _encode(rgb.convert("L"), "JPEG")),
        ("jpeg-cmyk", _encode(rgb.convert("CMYK"), "JPEG")),
        ("jpeg-exif", _encode(rgb, "JPEG", exif=Image.Exif().tobytes())),
        ("jpeg-icc", _encode(rgb, "JPEG", icc_profile=b"\0" * 3000)),
        ("jpeg-comment", _encode(rgb, "JPEG", comment=b"x" * 500)),
        ("jpeg-restart", _encode(rgb, "JPEG", restart_marker_blocks=1)),
        ("jpeg-big", _encode(Image.new("RGB", (3000, 17)), "JPEG")),
    ]
    return made + [(f"cifar-{p.stem}", p.read_bytes()) for p in CIFAR]


WRITTEN = _written_images()


@pytest.mark.parametrize(("name", "data"), WRITTEN, ids=[n for n, _ in WRITTEN])
def test_well_formed_png_and_jpeg_are_read_without_pillow_to_pillows_size(name, data):
    assert header_size(data) == _pillow_size(data) is not None
    w, h = _pillow_size(data)
    assert image_pixels(data) == w * h


def test_the_fixtures_hold_real_jpegs():
    assert len(CIFAR) >= 20


@pytest.mark.parametrize(
    "data",
    [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a" + b"\0" * 40, b"not an image" * 9],
    ids=["empty", "png-signature-only", "jpeg-soi-only", "gif", "text"],
)
def test_other_formats_and_stubs_are_left_to_pillow(data):
    assert header_size(data) is None


def test_a_png_header_whose_checksum_fails_is_left_to_pillow():
    data = bytearray(_encode(Image.new("RGB", (30, 20)), "PNG"))
    data[17] ^= 0x01  # the width changes, the CRC no longer matches: Pillow refuses it
    assert header_size(bytes(data)) is None
    assert _pillow_size(bytes(data)) is None


def test_a_jpeg_with_a_12_bit_frame_is_left_to_pillow():
    data = bytearray(_encode(Image.new("RGB", (30, 20)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 4] = 12  # sample precision
    assert header_size(bytes(data)) is None
    assert _pillow_size(bytes(data)) is None


@pytest.mark.parametrize(("name", "data"), WRITTEN[:20], ids=[n for n, _ in WRITTEN[:20]])
def test_damaged_copies_give_pillows_size_or_none(name, data):
    """Cut short anywhere in the header, or with a byte of it changed: where both answer, they
    answer the same; where only the reader does, the file cannot be decoded either (it is cut
    inside a later segment Pillow reads at open), so the request is refused as before, only
    perhaps by the size check first."""
    rng = random.Random(name)
    header = min(len(data), 700)
    damaged = [data[:cut] for cut in range(header)]
    for _ in range(400):
        copy = bytearray(data)
        copy[rng.randrange(2, header)] = rng.randrange(256)
        damaged.append(bytes(copy))
    answered = 0
    for copy in damaged:
        size = header_size(copy)
        if size is None:
            continue
        answered += 1
        pillow = _pillow_size(copy)
        if pillow is not None:
            assert size == pillow, copy[:64]
        else:
            with pytest.raises(ImageDecodeError):
                decode_image(copy)
    assert answered > 0
