"""Turning a list of encoded image files into an :class:`ImageSet`, reporting bad files by name.

Small images (CIFAR-sized) are decoded once, up front, with :func:`core.images.decode_image` into
one uint8 array: epochs are then a gather from memory. Large images (ImageNet) stay files that
the pipeline decodes while streaming; here each is checked cheaply (header and trailer, a full
decode only when something looks off) so a broken file is reported by name instead of failing an
epoch, and the few files TensorFlow would read differently from Pillow (CMYK, palette, alpha,
16-bit, GIF) are converted once to PNG in the cache, so training sees what inference sees.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.data.types import DataError, ImageSet
from core.images import ALLOWED_FORMATS, MAX_PIXELS, ImageDecodeError, decode_image

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# Images up to this many pixels are decoded into memory (CIFAR is 1,024; Tiny ImageNet 4,096).
SMALL_IMAGE_PIXELS = 128 * 128
# ...as long as the decoded array stays below this.
MEMORY_BUDGET_BYTES = 1 << 30
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
# What tf.io.decode_image reads exactly as Pillow does; anything else is converted once.
_TF_SAFE = {"JPEG": ("L", "RGB"), "PNG": ("L", "RGB"), "BMP": ("RGB",)}
_PROBE_SAMPLE = 32
T = TypeVar("T")


def is_image_file(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


@dataclass
class Skips:
    """Unreadable files met so far; raises at the first one in strict mode."""

    strict: bool
    items: list[tuple[str, str]]

    def add(self, name: str, reason: str) -> None:
        if self.strict:
            raise DataError(f"{name}: {reason}")
        self.items.append((name, reason))


def _probe(path: str) -> tuple[str, str, int, int] | None:
    """(format, mode, width, height) from the header alone, or None when unreadable."""
    try:
        with Image.open(path) as img:
            return str(img.format), img.mode, img.size[0], img.size[1]
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def infer_channels(paths: Sequence[str]) -> int:
    """1 when every sampled image is grayscale, else 3."""
    probes = [p for p in map(_probe, _sample(paths)) if p is not None]
    return 1 if probes and all(p[1] in GRAY_MODES for p in probes) else 3


def _sample(paths: Sequence[str]) -> list[str]:
    step = max(1, len(paths) // _PROBE_SAMPLE)
    return list(paths[::step][:_PROBE_SAMPLE])


def load_files(
    paths: Sequence[str],
    labels: np.ndarray,
    *,
    names: Sequence[str],
    class_names: list[str],
    multi_label: bool,
    channels: int,
    skips: Skips,
    cache_dir: Path,
) -> ImageSet:
    """Decode small images into memory, or check large ones for streaming.

    Args:
        paths: encoded image files.
        labels: one label (or multi-hot row) per path.
        names: how each file is named in reports (relative to the dataset's root).
        class_names: the classes, in label order.
        multi_label: whether labels are multi-hot rows.
        channels: 1 or 3, the channels to decode to.
        skips: where unreadable files are reported.
        cache_dir: where converted copies of odd files go (streaming only).
    """
    probes = [p for p in map(_probe, _sample(paths)) if p is not None]
    largest = max((w * h for _, _, w, h in probes), default=0)
    in_memory = largest <= SMALL_IMAGE_PIXELS and len(paths) * largest * channels <= (
        MEMORY_BUDGET_BYTES
    )
    if in_memory:
        arrays, keep = _decode_all(paths, names, channels, skips, threads=largest > 64 * 64)
        shapes = {a.shape for a in arrays}
        if len(shapes) == 1:
            return ImageSet(
                class_names=class_names,
                multi_label=multi_label,
                labels=labels[keep],
                images=np.stack(arrays),
                image_shape=next(iter(shapes)),
                names=[names[i] for i in keep],
            )
        if not arrays:
            return ImageSet(
                class_names=class_names,
                multi_label=multi_label,
                labels=labels[:0],
                images=np.zeros((0, 1, 1, channels), np.uint8),
                image_shape=None,
            )
        # Small but of mixed sizes: stream the good files, resized by the pipeline.
        paths = [paths[i] for i in keep]
        labels, names = labels[keep], [names[i] for i in keep]
    good, keep = _check_for_streaming(paths, names, channels, skips, cache_dir)
    return ImageSet(
        class_names=class_names,
        multi_label=multi_label,
        labels=labels[keep],
        paths=good,
        image_shape=None,
        names=[names[i] for i in keep],
    )


def _decode_all(
    paths: Sequence[str], names: Sequence[str], channels: int, skips: Skips, *, threads: bool
) -> tuple[list[np.ndarray], np.ndarray]:
    def one(path: str) -> np.ndarray | str:
        try:
            with open(path, "rb") as f:
                return decode_image(f.read(), channels=channels)
        except ImageDecodeError as exc:
            return str(exc)
        except OSError as exc:
            return f"unreadable file: {exc.strerror or exc}"

    if threads:
        # Pillow releases the GIL while decoding, so threads pay off for larger images; for
        # CIFAR-sized ones the per-file overhead dominates and one thread is fastest.
        results = _map_threads(one, paths, workers=min(8, 2 * (os.cpu_count() or 1)))
    else:
        results = [one(p) for p in paths]
    arrays, keep = [], []
    for i, r in enumerate(results):
        if isinstance(r, str):
            skips.add(names[i], r)
        else:
            arrays.append(r)
            keep.append(i)
    return arrays, np.asarray(keep, dtype=np.int64)


def _check_for_streaming(
    paths: Sequence[str], names: Sequence[str], channels: int, skips: Skips, cache_dir: Path
) -> tuple[list[str], np.ndarray]:
    convert_dir = cache_dir / "converted"

    def one(path: str) -> str | tuple[str]:
        """The path to stream (maybe a converted copy), or (reason,) when unusable."""
        probe = _probe(path)
        if probe is None:
            try:
                with open(path, "rb") as f:
                    decode_image(f.read(), channels=channels)
            except ImageDecodeError as exc:
                return (str(exc),)
            except OSError as exc:
                return (f"unreadable file: {exc.strerror or exc}",)
            return ("not a recognised image file",)
        fmt, mode, w, h = probe
        if fmt not in ALLOWED_FORMATS:
            return (f"image format {fmt!r} is not allowed",)
        if w * h > MAX_PIXELS:
            return (f"image of {w}x{h} pixels exceeds the limit of {MAX_PIXELS}",)
        safe = mode in _TF_SAFE.get("JPEG" if fmt == "MPO" else fmt, ())
        if safe and _trailer_ok(path, fmt):
            return path
        # Looks truncated, or TensorFlow would read it differently: decode it fully here.
        try:
            with open(path, "rb") as f:
                arr = decode_image(f.read(), channels=channels)
        except ImageDecodeError as exc:
            return (str(exc),)
        except OSError as exc:
            return (f"unreadable file: {exc.strerror or exc}",)
        if safe:  # only an odd trailer; Pillow reads it fine
            return path
        st = os.stat(path)
        key = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{channels}"
        out = convert_dir / (hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest() + ".png")
        if not out.is_file():
            convert_dir.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            Image.fromarray(arr[..., 0] if channels == 1 else arr).save(buf, format="PNG")
            tmp = out.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(buf.getvalue())
            os.replace(tmp, out)
        return str(out)

    # Mostly waiting on the disk (a header and a trailer per file): more threads than cores.
    results = _map_threads(one, paths, workers=min(16, 4 * (os.cpu_count() or 1)))
    good, keep = [], []
    for i, r in enumerate(results):
        if isinstance(r, tuple):
            skips.add(names[i], r[0])
        else:
            good.append(r)
            keep.append(i)
    return good, np.asarray(keep, dtype=np.int64)


def _map_threads(fn: Callable[[str], T], items: Sequence[str], *, workers: int) -> list[T]:
    """``[fn(x) for x in items]`` on a thread pool, in chunks (a future per file is slow)."""
    chunks = [items[i : i + 256] for i in range(0, len(items), 256)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = pool.map(lambda chunk: [fn(x) for x in chunk], chunks)
        return [r for chunk in done for r in chunk]


def _trailer_ok(path: str, fmt: str) -> bool:
    """Whether the file ends as a complete file of its format does (cheap truncation check)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - 64))
            tail = f.read()
            if fmt == "BMP":
                f.seek(2)
                declared = int.from_bytes(f.read(4), "little")
                return size >= declared
    except OSError:
        return False
    if fmt in ("JPEG", "MPO"):
        return tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")
    if fmt == "PNG":
        return b"IEND" in tail
    return True
