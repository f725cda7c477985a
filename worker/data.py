"""The data a run or an evaluation names, and the weights a run starts from, read under the
server's data root."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from jobs.settings import Settings

if TYPE_CHECKING:
    from core.data import Dataset


def load_data(spec: str, settings: Settings) -> Dataset:
    """Load ``KIND:PATH`` confined to ``settings.data_dir``, as the API registers data.

    The worker holds the line too: a run whose config names a path outside the data root (a
    record written by hand, an older API) fails instead of reading it. PATH is relative to the
    root; an absolute path that lies under the root is taken as the same path relative to it.
    Sources without a path (``synthetic:…``, ``cifar10``, Debian's ``fashion_mnist``) need no
    root.
    """
    from core.data import load_dataset

    root = settings.data_dir
    kind, sep, rest = spec.partition(":")
    if sep and rest.startswith("/"):
        path = Path(rest)
        if path.is_relative_to(root):
            spec = f"{kind}:{path.relative_to(root).as_posix()}"
    # Archives are extracted under the state folder, within the settings' budget (never into
    # the home folder's cache), where deleting their dataset frees them; converted copies of
    # odd images go under the state folder too.
    return load_dataset(
        spec,
        root=root,
        cache_dir=settings.state_dir.resolve() / "cache",
        extract_dir=settings.extract_dir,
        archive_limits=settings.archive_limits(),
    )


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
