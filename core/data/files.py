"""Files on disk: the cache folder, checked downloads, and archives extracted into the cache."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from core.data.archives import ARCHIVE_SUFFIXES, ArchiveLimits, extract_cached, is_archive
from core.data.types import DataError

__all__ = ["ARCHIVE_SUFFIXES", "cache_root", "download", "extract_archive", "is_archive", "md5sum"]

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("~/.cache/resnet-service")


def cache_root(cache_dir: str | Path | None) -> Path:
    path = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def md5sum(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, *, md5: str, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` unless a file with the right checksum is already there.

    The file is written beside ``dest`` and renamed into place only once its MD5 matches, so
    an interrupted or corrupted download never looks complete.

    Raises:
        DataError: the download failed (offline, HTTP error) or the checksum does not match.
    """
    if dest.is_file() and md5sum(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", url, dest)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for block in iter(lambda: resp.read(1 << 20), b""):
                h.update(block)
                out.write(block)
        if h.hexdigest() != md5:
            raise DataError(f"checksum mismatch for {url}: got md5 {h.hexdigest()}, expected {md5}")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(
            f"could not download {url} ({exc}); if this machine is offline, fetch the file "
            f"elsewhere and place it at {dest} or name its path in the source"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def extract_archive(
    archive: Path, cache_dir: str | Path | None, limits: ArchiveLimits | None = None
) -> Path:
    """Extract a .tar(.gz)/.zip once into ``<cache>/extracted/`` and return the folder.

    The bounded routine of :mod:`core.data.archives` does the work (links, escapes, bombs and
    corrupt data refused with a :class:`DataError`).
    """
    return extract_cached(archive, cache_root(cache_dir) / "extracted", limits)
