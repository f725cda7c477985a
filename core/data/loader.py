"""``load_dataset("KIND:PATH")``: one entry point from a data source to a :class:`Dataset`."""

from __future__ import annotations

import logging
from pathlib import Path

from core.data.archives import ArchiveLimits, extract_cached, is_archive
from core.data.arrays import CIFAR, load_cifar, load_idx, load_synthetic
from core.data.files import cache_root
from core.data.folders import load_coco, load_folder, load_imagenet, resolves_inside
from core.data.tfrecord import load_tfrecord
from core.data.types import KINDS, DataError, Dataset

log = logging.getLogger(__name__)

# Sources named without a path, and where they are read from. Debian's dataset-fashion-mnist
# package installs the IDX files under /usr/share/datasets/.
ALIASES = {
    "fashion_mnist": ("idx", "/usr/share/datasets/fashion-mnist"),
    "fashion-mnist": ("idx", "/usr/share/datasets/fashion-mnist"),
    "mnist": ("idx", "/usr/share/datasets/mnist"),
}


def load_dataset(
    source: str,
    *,
    root: str | Path | None = None,
    strict: bool = False,
    channels: int | None = None,
    cache_dir: str | Path | None = None,
    extract_dir: str | Path | None = None,
    archive_limits: ArchiveLimits | None = None,
) -> Dataset:
    """Load a data source named ``KIND:PATH``.

    Kinds: ``cifar10``/``cifar100`` (python-version tarball or folder; no path downloads it),
    ``idx`` (folder of MNIST-style files; ``fashion_mnist`` and ``mnist`` name Debian's
    folders), ``folder`` (class folders, or an archive of them), ``imagenet``, ``tfrecord``
    (folder or glob), ``coco`` and ``synthetic:N:HxWxC:K``.

    Args:
        source: the data source, e.g. ``"folder:/data/flowers.tar.gz"``.
        root: when given, PATH is relative to it and must stay inside it (no ``..``, absolute
            paths or symlinks out), as the HTTP service requires.
        strict: raise a :class:`DataError` at the first unreadable image instead of skipping it.
        channels: 1 or 3 to convert every image; None keeps the source's own (grayscale for
            IDX and all-grayscale folders, else RGB).
        cache_dir: downloads, extracted archives and converted images; default
            ``~/.cache/resnet-service``.
        extract_dir: where archives are extracted (default ``<cache_dir>/extracted``); the
            service passes a folder under its state folder.
        archive_limits: the extraction budget (:class:`core.data.archives.ArchiveLimits`).

    Returns:
        The dataset; unreadable files it skipped are listed in ``skipped``.

    Raises:
        ValueError: an unknown kind, a malformed source, or a path outside ``root``.
        DataError: (a ValueError) the data is missing or malformed.
    """
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None; got {channels!r}")
    kind, _, rest = source.partition(":")
    kind = kind.strip().lower()
    fashion = True if kind.startswith("fashion") else None
    if kind in ALIASES and not rest:
        kind, rest = ALIASES[kind][0], ALIASES[kind][1]
        system_path = True  # a fixed system location, not a user-supplied path
    else:
        kind = {"fashion_mnist": "idx", "fashion-mnist": "idx", "mnist": "idx"}.get(kind, kind)
        system_path = False
    if kind not in KINDS:
        raise ValueError(f"Unknown data source kind: {kind!r}. Expected one of {', '.join(KINDS)}")
    if kind == "synthetic":
        return load_synthetic(rest)
    if kind in CIFAR and not rest:
        return load_cifar(kind, None, channels=channels, cache_dir=cache_dir)
    if not rest:
        raise ValueError(f"Data source {source!r} needs a path: '{kind}:PATH'")
    confine = None if root is None or system_path else Path(root).resolve()
    cache = cache_root(cache_dir)
    if kind == "tfrecord":
        pattern = str(resolve_source_path(rest, confine, must_exist=False))
        return load_tfrecord(
            pattern, name=f"tfrecord:{pattern}", channels=channels, confine=confine
        )
    path = resolve_source_path(rest, confine, must_exist=True)
    name = f"{kind}:{path}"
    if kind in CIFAR:
        return load_cifar(kind, path, channels=channels, cache_dir=cache_dir)
    if kind == "idx":
        return load_idx(path, name=name, channels=channels, fashion=fashion)
    if is_archive(path):
        into = Path(extract_dir) if extract_dir is not None else cache / "extracted"
        path = extract_cached(path, into, archive_limits)
        confine = None  # we extracted it ourselves: links were refused
    elif not path.is_dir():
        raise DataError(f"{path}: expected a folder or a .tar/.tar.gz/.zip archive")
    loader = {"folder": load_folder, "imagenet": load_imagenet, "coco": load_coco}[kind]
    ds = loader(path, name=name, strict=strict, channels=channels, cache_dir=cache, confine=confine)
    if ds.skipped:
        log.warning(
            "%s: skipped %d unreadable file(s), e.g. %s: %s", name, len(ds.skipped), *ds.skipped[0]
        )
    return ds


def resolve_source_path(rest: str, confine: Path | None, *, must_exist: bool) -> Path:
    """The source's path; with ``confine``, relative to it and resolving inside it."""
    path = Path(rest).expanduser() if confine is None else Path(rest)
    if confine is not None:
        if path.is_absolute() or rest.startswith("~"):
            raise ValueError(f"Data path {rest!r} must be relative to the data root")
        if ".." in path.parts:
            raise ValueError(f"Data path {rest!r} must not contain '..'")
        path = confine / path
        # resolve() follows symlinks, so a link pointing out of the root is caught here.
        if not resolves_inside(path, confine):
            raise ValueError(f"Data path {rest!r} resolves outside the data root")
        # Glob patterns are checked per matched file by the TFRecord loader.
    if must_exist:
        try:
            exists = path.exists()
        except OSError as exc:  # a name longer than the file system takes, a folder not readable
            raise DataError(f"{_shown(rest)}: cannot be opened ({exc.strerror})") from None
        if not exists:
            raise DataError(f"{_shown(rest)}: no such file or folder")
    return path


def _shown(text: str, limit: int = 200) -> str:
    """A path as a message shows it: a long one cut (the message goes back to the client)."""
    return text if len(text) <= limit else f"{text[:limit]}…"
