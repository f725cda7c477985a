"""The data a run or an evaluation names, and the weights a run starts from, read under the
server's data root."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from jobs.settings import Settings

if TYPE_CHECKING:
    from core.data import Dataset
    from core.data.unlabelled import UnlabelledImages


def load_data(spec: str, settings: Settings) -> Dataset:
    """Load ``KIND:PATH`` confined to ``settings.data_dir``, as the API registers data.

    The worker holds the line too: a run whose config names a path outside the data root (a
    record written by hand, an older API) fails instead of reading it. PATH is relative to the
    root; an absolute path that lies under the root is taken as the same path relative to it.
    Sources without a path (``synthetic:…``, ``cifar10``, Debian's ``fashion_mnist``) need no
    root.
    """
    from core.data import load_dataset

    spec = _relative_to_root(spec, settings)
    # Archives are extracted under the state folder, within the settings' budget (never into
    # the home folder's cache), where deleting their dataset frees them; converted copies of
    # odd images go under the state folder too.
    return load_dataset(
        spec,
        root=settings.data_dir,
        cache_dir=settings.state_dir.resolve() / "cache",
        extract_dir=settings.extract_dir,
        archive_limits=settings.archive_limits(),
    )


def list_images(spec: str, settings: Settings) -> UnlabelledImages:
    """List unlabelled ``images:PATH`` confined to the data root, as :func:`load_data` loads a
    labelled source (the same root, extraction folder and archive budget)."""
    from core.data.unlabelled import open_unlabelled

    return open_unlabelled(
        _relative_to_root(spec, settings),
        root=settings.data_dir,
        cache_dir=settings.state_dir.resolve() / "cache",
        extract_dir=settings.extract_dir,
        archive_limits=settings.archive_limits(),
    )


def _relative_to_root(spec: str, settings: Settings) -> str:
    """``KIND:PATH`` with an absolute PATH under the data root made relative to it."""
    root = settings.data_dir
    kind, sep, rest = spec.partition(":")
    if sep and rest.startswith("/"):
        path = Path(rest)
        if path.is_relative_to(root):
            return f"{kind}:{path.relative_to(root).as_posix()}"
    return spec


def weights_path(path: str, settings: Settings) -> Path:
    """The weights file a run starts from (``init_from``), confined to ``settings.data_dir``.

    The API checked it when the run was queued; the worker holds the line again, as for data.

    Raises:
        ValueError: the path leaves the data root or names nothing.
    """
    from core.data.loader import resolve_source_path

    root = settings.data_dir
    candidate = Path(path)
    if candidate.is_absolute() and candidate.is_relative_to(root):
        path = candidate.relative_to(root).as_posix()
    return resolve_source_path(path, root, must_exist=True)
