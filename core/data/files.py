"""Files on disk: the cache folder, checked downloads and safe archive extraction."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO

from core.data.types import DataError

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("~/.cache/resnet-service")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
# Guards against archive bombs: no single image is a gigabyte, no dataset archive holds more.
MAX_MEMBER_BYTES = 1 << 30
MAX_TOTAL_BYTES = 512 << 30
MAX_MEMBERS = 5_000_000


def cache_root(cache_dir: str | Path | None) -> Path:
    path = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


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


def extract_archive(archive: Path, cache_dir: str | Path | None) -> Path:
    """Extract a .tar(.gz)/.zip once into the cache and return the folder.

    The folder's name depends on the archive's path, size and modification time, so a changed
    archive is extracted afresh; extraction goes to a temporary folder renamed at the end.

    Raises:
        DataError: a member escapes the target, is a link or device, or sizes are absurd.
    """
    st = archive.stat()
    key = hashlib.sha1(
        f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode(), usedforsecurity=False
    ).hexdigest()[:16]
    stem = archive.name
    for suffix in ARCHIVE_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    target = cache_root(cache_dir) / "extracted" / f"{stem}-{key}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        if archive.name.lower().endswith(".zip"):
            _extract_zip(archive, tmp)
        else:
            _extract_tar(archive, tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():  # not a concurrent extraction that finished first
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _member_target(root: Path, name: str, archive: Path) -> Path | None:
    """Where a member goes under ``root``; None for entries to leave out (macOS metadata)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or parts[0] == "__MACOSX":
        return None
    if PurePosixPath(name).is_absolute() or ".." in parts or ":" in parts[0]:
        raise DataError(f"{archive.name}: member {name!r} would escape the extraction folder")
    return root.joinpath(*[p for p in parts if p not in ("", ".")])


class _Budget:
    def __init__(self, archive: Path) -> None:
        self.archive, self.members, self.total = archive, 0, 0

    def charge(self, name: str, size: int) -> None:
        self.members += 1
        self.total += size
        if size > MAX_MEMBER_BYTES:
            raise DataError(
                f"{self.archive.name}: member {name!r} is absurdly large ({size} bytes)"
            )
        if self.total > MAX_TOTAL_BYTES or self.members > MAX_MEMBERS:
            raise DataError(f"{self.archive.name}: archive is too large to extract")


def _copy_limited(src: IO[bytes], dst: Path, limit: int, what: str) -> None:
    written = 0
    with dst.open("wb") as out:
        for block in iter(lambda: src.read(1 << 20), b""):
            written += len(block)
            if written > limit:  # a header that lied about the size
                raise DataError(f"{what}: member is larger than it claims")
            out.write(block)


def _extract_tar(archive: Path, root: Path) -> None:
    budget = _Budget(archive)
    try:
        with tarfile.open(archive) as tar:
            for m in tar:
                dest = _member_target(root, m.name, archive)
                if dest is None:
                    continue
                if m.isdir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                if not m.isfile():
                    raise DataError(
                        f"{archive.name}: member {m.name!r} is a link or special file; refused"
                    )
                budget.charge(m.name, m.size)
                dest.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                if src is None:
                    continue
                with src:
                    _copy_limited(src, dest, m.size, f"{archive.name}:{m.name}")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive.name}: not a readable tar archive ({exc})") from None


def _extract_zip(archive: Path, root: Path) -> None:
    budget = _Budget(archive)
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                dest = _member_target(root, info.filename, archive)
                if dest is None:
                    continue
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise DataError(f"{archive.name}: member {info.filename!r} is a link; refused")
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                budget.charge(info.filename, info.file_size)
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src:
                    _copy_limited(src, dest, info.file_size, f"{archive.name}:{info.filename}")
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DataError(f"{archive.name}: not a readable zip archive ({exc})") from None
