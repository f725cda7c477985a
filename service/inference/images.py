"""Encoded images → model-ready arrays, exactly as :class:`core.inference.Predictor` does it.

:func:`core.images.decode_image` (format allow-list, pixel limit checked on the header before
anything is decoded, grey/RGBA/palette/CMYK/16-bit converted, an animated image's first frame),
then :func:`core.images.resize_for_model` with the model's own resize policy: the same steps as
``Predictor.predict_bytes``, so the service answers what the library would.

A refused image becomes an :class:`ImageRejected` that says which image and what is wrong, with
the status that fits: 415 for a format that is not allowed, 413 for too many pixels (a
decompression bomb), 422 for anything else (empty, truncated, not an image).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.images import ALLOWED_FORMATS, ImageDecodeError, decode_image, resize_for_model


@dataclass(frozen=True)
class InputSpec:
    """What a model takes: (H, W, C) pixels in [0, 255], brought to size by ``resize``."""

    shape: tuple[int, int, int]
    resize: str = "direct"
    formats: tuple[str, ...] = ALLOWED_FORMATS
    max_pixels: int = 40_000_000


class ImageRejected(Exception):
    """An image the service will not predict on.

    Attributes:
        status: 413 (too many pixels), 415 (format not allowed) or 422.
        code: ``image_too_large``, ``unsupported_image_format`` or ``invalid_image``.
        field: where it was in the request (``body.images[2]``, ``body.file[0]``…).
        label: the client's name for it (a file name), if it had one.
        reason: what is wrong with it.
    """

    def __init__(
        self, *, status: int, code: str, field: str, label: str | None, reason: str
    ) -> None:
        named = f" ({label})" if label else ""
        super().__init__(f"{field}{named}: {reason}")
        self.status = status
        self.code = code
        self.field = field
        self.label = label
        self.reason = reason


def decode_for_model(data: bytes, spec: InputSpec) -> np.ndarray:
    """Decode one image to a uint8 array of the model's input shape.

    Raises:
        ImageDecodeError: the image is refused; :func:`rejection` says how to answer.
    """
    arr = decode_image(
        data, channels=spec.shape[2], formats=spec.formats, max_pixels=spec.max_pixels
    )
    return resize_for_model(arr, spec.shape, spec.resize)


def rejection(
    data: bytes, exc: ImageDecodeError, spec: InputSpec, *, field: str, label: str | None
) -> ImageRejected:
    """The answer to an image :func:`decode_for_model` refused.

    Only the header is read again (cheap, and only on this error path) to tell a disallowed
    format and an oversized image from a broken file.
    """
    status, code = 422, "invalid_image"
    reason = str(exc)
    if data:
        try:
            with Image.open(io.BytesIO(data)) as img:
                fmt, (w, h) = img.format, img.size
            if fmt not in spec.formats:
                status, code = 415, "unsupported_image_format"
            elif w * h > spec.max_pixels:
                status, code = 413, "image_too_large"
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            status, code = 413, "image_too_large"
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
            pass
    return ImageRejected(status=status, code=code, field=field, label=label, reason=reason)
