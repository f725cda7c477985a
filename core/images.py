"""Decoding of encoded images (JPEG, PNG, BMP, GIF, WebP) into uint8 arrays, safely.

Shared by the data sources and the predictor, so an image is read the same way in training,
evaluation and inference. Every failure is an :class:`ImageDecodeError` that says what was wrong.
"""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.image_headers import header_size

ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "MPO")
# Pillow's own default guard is ~89 Mpx (a warning) and twice that an error; we refuse earlier.
MAX_PIXELS = 40_000_000


class ImageDecodeError(ValueError):
    """An image could not be decoded; the message names the problem."""


def decode_image(
    data: bytes,
    *,
    channels: int = 3,
    formats: tuple[str, ...] = ALLOWED_FORMATS,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Decode encoded bytes to an (H, W, channels) uint8 array.

    Grayscale, RGBA, palette, CMYK and 16-bit images are converted; an animated image
    contributes its first frame.

    Raises:
        ImageDecodeError: empty, truncated, unknown or disallowed format, or too many pixels.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3; got {channels}.")
    if not data:
        raise ImageDecodeError("empty file")
    try:
        # The pixel limit is checked on the header, before any decoding. (No warning filters:
        # they are process-global and unsafe to change from decoding threads.)
        img = Image.open(io.BytesIO(data))
        if img.format not in formats:
            allowed = ", ".join(formats)
            raise ImageDecodeError(
                f"image format {img.format!r} is not allowed; expected one of {allowed}"
            )
        w, h = img.size
        if w * h > max_pixels:
            raise ImageDecodeError(_too_many_pixels(w * h, max_pixels, f"{w}x{h}"))
        img.seek(0)
        img.load()
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard fired before ours could (its limit is higher): answer in our words.
        raise ImageDecodeError(_too_many_pixels(_bomb_pixels(exc), max_pixels)) from None
    except UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image file") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"corrupt or truncated image: {exc}") from None
    return to_array(img, channels)


def image_pixels(data: bytes) -> int | None:
    """Width x height of an encoded image, read from its header alone (nothing is decoded).

    ``None`` when the header cannot be read (not an image, truncated): :func:`decode_image`
    then says what is wrong. A size past Pillow's own bomb guard is still reported. PNG and
    JPEG headers are read without Pillow where they are well formed (:mod:`core.image_headers`).
    """
    size = header_size(data)
    if size is not None:
        return size[0] * size[1]
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            return int(w) * int(h)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return _bomb_pixels(exc)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        return None


def too_many_pixels_message(pixels: int, max_pixels: int) -> str:
    """What :func:`decode_image` says about an image over ``max_pixels``."""
    return _too_many_pixels(pixels, max_pixels)


def _too_many_pixels(pixels: int | None, max_pixels: int, dims: str | None = None) -> str:
    size = f"{dims} ({pixels} pixels)" if dims else f"{pixels} pixels"
    if pixels is None:
        size = "more pixels than Pillow allows"
    return f"image of {size} exceeds the limit of {max_pixels} pixels"


def _bomb_pixels(exc: Exception) -> int | None:
    # Pillow says "Image size (400000000 pixels) exceeds limit of ...": the only place the
    # size is given, since the image it refused is never returned.
    found = re.search(r"\((\d+) pixels\)", str(exc))
    return int(found.group(1)) if found else None


def to_array(img: Image.Image, channels: int) -> np.ndarray:
    """Convert a loaded PIL image of any mode to uint8 with 1 or 3 channels."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits rather than clip.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparency over white, as a viewer would show it.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    target = "L" if channels == 1 else "RGB"
    if img.mode != target:
        img = img.convert(target)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


def resize_for_model(
    arr: np.ndarray, shape: tuple[int, int, int], policy: str = "direct"
) -> np.ndarray:
    """Bring a decoded image to the model's (H, W) input size.

    ``direct`` resizes to the input size; ``crop`` resizes the shorter side to size/0.875
    (ImageNet's 256 for 224) and takes the centre crop.
    """
    h, w = shape[0], shape[1]
    if arr.shape[0] == h and arr.shape[1] == w:
        return arr
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    if policy == "crop":
        short = round(min(h, w) / 0.875)
        scale = short / min(img.size)
        img = img.resize(
            (max(w, round(img.size[0] * scale)), max(h, round(img.size[1] * scale))),
            Image.Resampling.BILINEAR,
        )
        left, top = (img.size[0] - w) // 2, (img.size[1] - h) // 2
        img = img.crop((left, top, left + w, top + h))
    else:
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    out = np.asarray(img, dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out
