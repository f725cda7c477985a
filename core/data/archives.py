"""Bounded archive extraction: the one routine that opens a .tar(.gz/.bz2/.xz) or .zip.

Every archive the library or the service extracts goes through :func:`extract_into`. It writes
only inside the folder it is given, and refuses, with a :class:`DataError` naming the archive:

- members that are links, devices or FIFOs, absolute paths, ``..`` or drive letters;
- more bytes than the budget: ``max_ratio`` times the archive's own size, and never more than
  ``max_total_bytes`` (counted as the bytes are written, so a header that lies does not help);
- more members (files and folders created: inodes) than ``max_members``, and more than one per
  ``min_bytes_per_member`` bytes of archive (100,000 empty members fit in 471 KB of tar.gz);
- any member larger than ``max_member_bytes``;
- corrupt data: a zip member whose CRC is wrong, a gzip/xz/bzip2 stream whose check fails
  (the whole compressed stream is read to its end, so a tar.gz's trailing CRC is checked too),
  unsupported compression methods and encrypted members.

Whatever fails, the half-written folder is removed.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from core.data.types import DataError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")
_BLOCK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    """What one extraction may write.

    Attributes:
        max_ratio: bytes written per byte of archive (images are compressed already).
        max_total_bytes: an absolute cap on the bytes written, whatever the archive's size.
        max_members: files and folders created, at most.
        min_bytes_per_member: each member must be paid for with this many archive bytes.
        max_member_bytes: the largest single member.
    """

    # Defaults for the library and its CLI, whose archives are the user's own; the service
    # passes stricter ones from its settings.
    max_ratio: float = 100.0
    max_total_bytes: int = 512 << 30
    max_members: int = 5_000_000
    min_bytes_per_member: int = 16
    max_member_bytes: int = 1 << 30

    def bytes_for(self, archive_size: int) -> int:
        return int(min(self.max_total_bytes, self.max_ratio * max(archive_size, 1)))

    def members_for(self, archive_size: int) -> int:
        per_size = max(archive_size, 1) // max(self.min_bytes_per_member, 1)
        return int(min(self.max_members, max(per_size, 16)))


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def archive_stem(name: str) -> str:
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def extracted_folder(archive: Path, root: Path) -> Path:
    """Where :func:`extract_cached` puts ``archive`` under ``root``.

    The name depends on the archive's resolved path, size and modification time, so a changed
    archive is extracted afresh, and whoever deletes the archive's dataset can find the folder.
    """
    st = archive.stat()
    key = hashlib.sha1(
        f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode(), usedforsecurity=False
    ).hexdigest()[:16]
    return root / f"{archive_stem(archive.name)}-{key}"


def extract_cached(archive: Path, root: Path, limits: ArchiveLimits | None = None) -> Path:
    """Extract ``archive`` once under ``root`` (see :func:`extracted_folder`); the folder."""
    target = extracted_folder(archive, root)
    if target.is_dir():
        return target
    return extract_into(archive, target, limits)


def extract_into(
    archive: Path,
    target: Path,
    limits: ArchiveLimits | None = None,
    *,
    display_name: str | None = None,
) -> Path:
    """Extract ``archive`` into the new folder ``target`` within ``limits``.

    Extraction goes to a hidden temporary folder beside ``target``, renamed at the end, so a
    half-extracted archive never looks finished.

    Args:
        archive: the .tar/.tar.gz/.tgz/.tar.bz2/.tar.xz/.zip file.
        target: the folder to create (its parent is created too).
        limits: the budget; the defaults are core's generous ones.
        display_name: how error messages name the archive (default: its file name).

    Raises:
        DataError: naming the archive, for anything unsafe, over budget or unreadable.
    """
    limits = limits or ArchiveLimits()
    name = display_name or archive.name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        budget = _Budget(name, limits, archive.stat().st_size)
        try:
            if archive.name.lower().endswith(".zip"):
                _extract_zip(archive, tmp, budget)
            else:
                _extract_tar(archive, tmp, budget)
        except DataError:
            raise
        except (
            tarfile.TarError,
            zipfile.BadZipFile,
            zipfile.LargeZipFile,
            EOFError,
            OSError,  # gzip.BadGzipFile (a wrong CRC) is one
            zlib.error,
            lzma.LZMAError,
            NotImplementedError,  # zip compression methods Python lacks (deflate64, AES: 9, 99)
            RuntimeError,  # an encrypted zip member
            ValueError,
            UnicodeError,
        ) as exc:
            raise DataError(f"{name}: not a readable archive ({_reason(exc)})") from None
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():  # not a concurrent extraction that finished first
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _reason(exc: BaseException) -> str:
    # Messages of OSError name paths on this machine; keep only what went wrong.
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or type(exc).__name__
    return text.replace(os.sep + "tmp", "")[:200]


class _Budget:
    """Bytes and inodes one archive may still create."""

    def __init__(self, name: str, limits: ArchiveLimits, archive_size: int) -> None:
        self.name, self.limits = name, limits
        self.bytes_left = limits.bytes_for(archive_size)
        self.inodes_left = limits.members_for(archive_size)
        self.byte_cap, self.inode_cap = self.bytes_left, self.inodes_left

    def inode(self, member: str) -> None:
        self.inodes_left -= 1
        if self.inodes_left < 0:
            raise DataError(
                f"{self.name}: more than {self.inode_cap} files and folders for an archive of "
                f"its size; refused (member {member!r})"
            )

    def spend(self, member: str, n: int) -> None:
        self.bytes_left -= n
        if self.bytes_left < 0:
            raise DataError(
                f"{self.name}: expands to more than {self.byte_cap} bytes "
                f"({self.limits.max_ratio:g}x its own size, at most "
                f"{self.limits.max_total_bytes}); refused at member {member!r}"
            )

    def check_member(self, member: str, size: int) -> None:
        if size > self.limits.max_member_bytes:
            raise DataError(
                f"{self.name}: member {member!r} is absurdly large ({size} bytes; at most "
                f"{self.limits.max_member_bytes})"
            )


def _member_path(root: Path, name: str, archive: str) -> Path | None:
    """Where a member goes under ``root``; None for entries to leave out (macOS metadata)."""
    pure = PurePosixPath(name.replace("\\", "/"))
    parts = pure.parts
    if not parts or parts[0] == "__MACOSX":
        return None
    if pure.is_absolute() or ".." in parts or ":" in parts[0] or "\0" in name:
        raise DataError(f"{archive}: member {name!r} would escape the extraction folder")
    kept = [p for p in parts if p not in ("", ".")]
    return root.joinpath(*kept) if kept else None


def _make_dirs(root: Path, folder: Path, budget: _Budget, member: str) -> None:
    """Create ``folder`` and its missing parents under ``root``, each paid for as an inode."""
    missing = []
    here = folder
    while here != root and not here.is_dir():
        missing.append(here)
        here = here.parent
    for d in reversed(missing):
        budget.inode(member)
        d.mkdir()


def _copy(src: IO[bytes], dst: Path, *, claimed: int, budget: _Budget, member: str) -> None:
    written = 0
    with dst.open("xb") as out:
        for block in iter(lambda: src.read(_BLOCK), b""):
            written += len(block)
            if written > claimed:  # a header that lied about the size
                raise DataError(f"{budget.name}: member {member!r} is larger than it claims")
            budget.spend(member, len(block))
            out.write(block)


def _scan_tar(archive: Path, budget: _Budget) -> None:
    """Refuse, from the headers alone and before anything is written, an archive whose members
    and folders or declared sizes are over the budget (writing thousands of files first would
    take seconds and leave work to undo)."""
    folders: set[PurePosixPath] = set()
    members = total = 0
    with archive.open("rb") as raw, tarfile.open(fileobj=_decompressed(raw), mode="r|") as tar:
        for m in tar:
            pure = PurePosixPath(m.name.replace("\\", "/"))
            members += 1
            folders.update(pure.parents)
            if m.isfile():
                budget.check_member(m.name, m.size)
                total += m.size
            if members + len(folders) > budget.inode_cap + 1:  # "." is among the parents
                raise DataError(
                    f"{budget.name}: more than {budget.inode_cap} files and folders for an "
                    f"archive of its size; refused"
                )
            if total > budget.byte_cap:
                raise DataError(
                    f"{budget.name}: expands to more than {budget.byte_cap} bytes "
                    f"({budget.limits.max_ratio:g}x its own size, at most "
                    f"{budget.limits.max_total_bytes}); refused"
                )
            tar.members = []  # type: ignore[attr-defined]


def _extract_tar(archive: Path, root: Path, budget: _Budget) -> None:
    _scan_tar(archive, budget)
    with archive.open("rb") as raw:
        stream = _decompressed(raw)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for m in tar:
                dest = _member_path(root, m.name, budget.name)
                if dest is None:
                    continue
                if m.isdir():
                    _make_dirs(root, dest, budget, m.name)
                    continue
                if not m.isfile():
                    raise DataError(
                        f"{budget.name}: member {m.name!r} is a link or special file; refused"
                    )
                budget.check_member(m.name, m.size)
                _make_dirs(root, dest.parent, budget, m.name)
                if dest.exists():
                    raise DataError(f"{budget.name}: member {m.name!r} appears twice")
                budget.inode(m.name)
                src = tar.extractfile(m)
                if src is not None:
                    _copy(src, dest, claimed=m.size, budget=budget, member=m.name)
                tar.members = []  # type: ignore[attr-defined]  # streamed: keep no list of members
        # tarfile stops at the end-of-archive blocks and never reads the compressed stream's
        # trailer, where gzip keeps its CRC: read to the end so a corrupt archive is refused.
        for block in iter(lambda: stream.read(_BLOCK), b""):
            budget.spend("(after the last member)", len(block))


def _decompressed(raw: IO[bytes]) -> IO[bytes]:
    head = raw.read(6)
    raw.seek(0)
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if head[:3] == b"BZh":
        return bz2.BZ2File(raw, mode="rb")
    if head == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(raw, mode="rb")
    return raw


def _zip_entries(archive: Path) -> int:
    """The member count the zip's end record declares, read before ``ZipFile`` builds one
    object per entry (a central directory of millions of tiny entries is a memory bomb)."""
    with archive.open("rb") as f:
        end = zipfile._EndRecData(f)  # type: ignore[attr-defined]  # stable since Python 2
    if end is None:
        raise zipfile.BadZipFile("File is not a zip file")
    return int(end[zipfile._ECD_ENTRIES_TOTAL])  # type: ignore[attr-defined]


def _extract_zip(archive: Path, root: Path, budget: _Budget) -> None:
    declared = _zip_entries(archive)
    if declared > budget.inode_cap:
        raise DataError(
            f"{budget.name}: {declared} members, more than {budget.inode_cap} files and folders "
            "for an archive of its size; refused"
        )
    with zipfile.ZipFile(archive) as zf:
        declared_bytes = sum(info.file_size for info in zf.infolist())
        if declared_bytes > budget.byte_cap:  # refused before anything is written
            raise DataError(
                f"{budget.name}: expands to more than {budget.byte_cap} bytes (its members "
                f"declare {declared_bytes}; {budget.limits.max_ratio:g}x its own size, at most "
                f"{budget.limits.max_total_bytes}); refused"
            )
        for info in zf.infolist():
            dest = _member_path(root, info.filename, budget.name)
            if dest is None:
                continue
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode) or (
                mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR)
            ):
                raise DataError(
                    f"{budget.name}: member {info.filename!r} is a link or special file; refused"
                )
            if info.flag_bits & 0x1:
                raise DataError(f"{budget.name}: member {info.filename!r} is encrypted; refused")
            if info.is_dir():
                _make_dirs(root, dest, budget, info.filename)
                continue
            budget.check_member(info.filename, info.file_size)
            _make_dirs(root, dest.parent, budget, info.filename)
            if dest.exists():
                raise DataError(f"{budget.name}: member {info.filename!r} appears twice")
            budget.inode(info.filename)
            # ZipExtFile checks the member's CRC when it reaches its end (BadZipFile if wrong).
            with zf.open(info) as src:
                _copy(src, dest, claimed=info.file_size, budget=budget, member=info.filename)
