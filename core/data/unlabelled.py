"""Unlabelled images: a folder (or an archive) of image files with no class folders, to predict.

The data source is ``images:PATH``. Its layout rules, decided here once:

- Every file under the folder is listed, in sub-folders too, named by its path relative to
  the folder (``2024/05/img_001.jpg``). A labelled folder registered as ``images`` is therefore
  predicted whole: its class folders are only part of each file's name, never a label.
- Hidden files and folders (a leading ``.``) are left out, as for labelled folders; symlinked
  folders are not followed, and a file that resolves outside ``confine`` refuses the source.
- Files named as images (``IMAGE_EXTENSIONS``, as for labelled folders) are decoded. Every
  other file stays in the listing and is reported, by name, as not an image; so is a file that
  cannot be decoded (corrupt, truncated, too large): nothing the folder holds is dropped
  silently, and one bad file never fails the rest.
- The names are sorted (code point order), so results come in one stable order.

Nothing here imports TensorFlow; decoding is :func:`core.images.decode_image`, the predictor's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data.archives import ArchiveLimits, extract_cached, is_archive
from core.data.decode import IMAGE_EXTENSIONS, is_image_file
from core.data.files import cache_root
from core.data.folders import _check_inside
from core.data.loader import resolve_source_path
from core.data.types import UNLABELLED_KIND, DataError
from core.images import ImageDecodeError, decode_image

# A file over this size is reported, not read: the default limit on one archive member.
MAX_IMAGE_FILE_BYTES = 256 << 20
NOT_AN_IMAGE = f"not an image file: its name does not end in {', '.join(IMAGE_EXTENSIONS)}"


@dataclass(frozen=True)
class UnlabelledImages:
    """The files of an unlabelled folder: ``names[i]`` (relative, for reports) is ``paths[i]``."""

    root: Path
    names: list[str]
    paths: list[Path]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def image_files(self) -> int:
        """Files named as images (the others are reported as not images)."""
        return sum(is_image_file(Path(name).name) for name in self.names)


def list_unlabelled(folder: Path, *, confine: Path | None = None) -> UnlabelledImages:
    """Every file under ``folder`` (see the module's rules), sorted by relative name.

    Args:
        folder: the folder (an archive's extracted folder for archives).
        confine: when given, every file must resolve inside it (symlinks out are refused).

    Raises:
        DataError: the folder holds no file named as an image.
        ValueError: a file resolves outside ``confine``.
    """
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(dirpath, name)
            _check_inside(path, confine)
            found.append((_printable(path.relative_to(folder).as_posix()), path))
    found.sort(key=lambda item: item[0])
    listing = UnlabelledImages(folder, [n for n, _ in found], [p for _, p in found])
    if not listing.image_files:
        raise DataError(
            f"{folder.name or folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) "
            "in it or its sub-folders"
        )
    return listing


def open_unlabelled(
    path: str,
    *,
    root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    extract_dir: str | Path | None = None,
    archive_limits: ArchiveLimits | None = None,
) -> UnlabelledImages:
    """List ``images:PATH`` as :func:`core.data.load_dataset` would confine and extract it.

    Args:
        path: the folder or .tar/.tar.gz/.zip archive (``PATH`` of ``images:PATH``; the
            ``images:`` prefix is accepted too).
        root: when given, ``path`` is relative to it and must stay inside it.
        cache_dir: the cache (archives go to ``<cache>/extracted`` unless ``extract_dir``).
        extract_dir: where archives are extracted.
        archive_limits: the extraction budget.

    Raises:
        ValueError: a path outside ``root``.
        DataError: (a ValueError) missing, not a folder or archive, an unsafe archive, or no
            image files.
    """
    prefix = f"{UNLABELLED_KIND}:"
    rest = path[len(prefix) :] if path.startswith(prefix) else path
    if not rest:
        raise ValueError(f"Data source needs a path: '{UNLABELLED_KIND}:PATH'")
    confine = None if root is None else Path(root).resolve()
    folder = resolve_source_path(rest, confine, must_exist=True)
    if is_archive(folder):
        into = Path(extract_dir) if extract_dir is not None else cache_root(cache_dir) / "extracted"
        folder = extract_cached(folder, into, archive_limits)
        confine = None  # we extracted it ourselves: links were refused
    elif not folder.is_dir():
        raise DataError(f"{rest}: expected a folder or a .tar/.tar.gz/.zip archive")
    return list_unlabelled(folder, confine=confine)


def read_image(path: Path, *, channels: int = 3) -> np.ndarray:
    """One file of the listing decoded to (H, W, channels) uint8.

    Raises:
        ImageDecodeError: saying why the file is not a usable image: not named as one, too
            large, unreadable, corrupt, truncated, a disallowed format or too many pixels.
    """
    if not is_image_file(path.name):
        raise ImageDecodeError(NOT_AN_IMAGE)
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_FILE_BYTES:
            raise ImageDecodeError(f"file of {size} bytes is over {MAX_IMAGE_FILE_BYTES}")
        data = path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"unreadable file: {exc.strerror or exc}") from None
    return decode_image(data, channels=channels)


@dataclass(frozen=True)
class DecodedChunk:
    """Consecutive files of a listing: ``images[i]`` is None exactly when ``errors[i]`` says
    why (``""`` for a file that decoded)."""

    names: list[str]
    images: list[np.ndarray | None]
    errors: list[str]


def decode_chunks(
    listing: UnlabelledImages, *, channels: int = 3, size: int = 256
) -> Iterator[DecodedChunk]:
    """The listing's files decoded ``size`` at a time, in its order; a file that cannot be
    used is carried with its reason instead of stopping the rest."""
    if size < 1:
        raise ValueError(f"size must be at least 1; got {size}")
    for start in range(0, len(listing), size):
        names = listing.names[start : start + size]
        images: list[np.ndarray | None] = []
        errors: list[str] = []
        for path in listing.paths[start : start + size]:
            try:
                images.append(read_image(path, channels=channels))
                errors.append("")
            except ImageDecodeError as exc:
                images.append(None)
                errors.append(str(exc) or "unreadable image")
        yield DecodedChunk(names, images, errors)


def _printable(name: str) -> str:
    """A file name as reports carry it: bytes that are not UTF-8 shown as ``\\xNN``."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.walk decoded them as surrogates
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return name
