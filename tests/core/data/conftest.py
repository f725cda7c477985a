"""Tiny datasets written in their real formats, shared by the data tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def encode(arr: np.ndarray, fmt: str, mode: str | None = None, **kw: object) -> bytes:
    """Encode an (H, W, 3) uint8 array as ``fmt``, optionally converted to ``mode`` first."""
    img = Image.fromarray(arr)
    if mode is not None:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def colour_image(label: int, size: tuple[int, int] = (8, 8), seed: int = 0) -> np.ndarray:
    """An image whose colour says its class (so labels can be checked from pixels)."""
    rng = np.random.default_rng(seed)
    base = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30]])[label % 4]
    noise = rng.integers(-10, 10, size=(*size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_class_folders(
    root: Path, classes: dict[str, int], *, size: tuple[int, int] = (8, 8), fmt: str = "PNG"
) -> None:
    """``root/<class>/<i>.<ext>`` with ``classes[name]`` images each."""
    ext = {"JPEG": "jpg", "PNG": "png", "BMP": "bmp", "GIF": "gif"}[fmt]
    for label, (name, count) in enumerate(sorted(classes.items())):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            data = (
                encode(colour_image(label, size, seed=i), fmt, quality=95)
                if fmt == "JPEG"
                else encode(colour_image(label, size, seed=i), fmt)
            )
            (root / name / f"{i:03d}.{ext}").write_bytes(data)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"
