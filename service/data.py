"""Data for the API: describe a source under the data root, and check the sources runs name.

A *data source* is ``KIND:PATH`` (what a worker loads); a *dataset reference* is a registered
dataset's name or id (what a client names), resolved to its source by the records.

Describing a source (``core.data.describe.describe_source``) reads headers and counts files,
never pixels: loading the images is a worker's job. Routes call it in a worker thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy.orm import Session

from core.data.archives import ArchiveLimits
from core.data.describe import describe_source
from jobs.records import DatasetRecord, RecordNotFound
from jobs.records.datasets import find_dataset
from jobs.settings import Settings
from service.errors import ApiError, invalid

# Sources a run may name directly in ``data``: they carry no path on the server. Everything with
# a path goes through a registered dataset, whose path was checked to lie under the data root.
PATHLESS_SOURCES = ("cifar10", "cifar100", "mnist", "fashion_mnist", "fashion-mnist")
# The same form core.data's synthetic loader accepts: N:HxWxC:K[:SEED].
_SYNTHETIC = re.compile(r"synthetic:(\d+):(\d+)x(\d+)x([13]):(\d+)(?::(\d+))?")
# Synthetic data is generated in memory by the worker; keep what a request can ask for sane.
MAX_SYNTHETIC_BYTES = 1 << 30
# An absolute path left in an error message after the data root's was made relative.
_ABSOLUTE_PATH = re.compile(r"(?:^|(?<=[\s'\"(=]))/[^\s'\":,)]+")


@dataclass(frozen=True)
class Described:
    """What registering a dataset records about it."""

    kind: str
    location: str
    class_names: list[str]
    counts: dict[str, Any]
    num_images: int


def archive_limits(settings: Settings) -> ArchiveLimits:
    """The extraction budget of this deployment's settings (``RESNET_ARCHIVE_*``)."""
    return settings.archive_limits()


def describe(kind: str, path: str, *, settings: Settings, field: str = "body.path") -> Described:
    """Describe ``KIND:PATH`` confined to the data root: classes and per-split counts.

    No pixels are loaded here (core's :func:`describe_source` reads headers and counts files);
    an archive is extracted, within the settings' budget, under ``<state>/extracted/``.

    Raises:
        ApiError: 422 naming ``field`` when the path leaves the root (``..``, absolute, a
            symlink out), does not exist, or holds no readable data.
    """
    root = settings.data_dir
    location = path if kind == "synthetic" else _normalise(path)
    try:
        described = describe_source(
            f"{kind}:{location}",
            root=root,
            extract_dir=settings.extract_dir,
            archive_limits=archive_limits(settings),
        )
    except ValueError as exc:  # DataError is one
        raise invalid(field, private_message(str(exc), settings), path) from None
    return Described(
        kind=kind,
        location=location,
        class_names=list(described.class_names),
        counts=described.counts(),
        num_images=described.num_images,
    )


def check_data_source(source: str, *, field: str = "body.data") -> str:
    """Accept a run's data source only if it names no path on the server.

    Raises:
        ApiError: 422 on ``field`` otherwise, pointing at dataset registration.
    """
    kind = source.partition(":")[0].strip().lower()
    if kind == "synthetic":
        m = _SYNTHETIC.fullmatch(source.strip())
        if not m:
            raise invalid(field, "expected synthetic:N:HxWxC:K[:SEED]", source)
        n, h, w, c = (int(g) for g in m.groups()[:4])
        if n * h * w * c > MAX_SYNTHETIC_BYTES:
            raise invalid(field, f"synthetic data over {MAX_SYNTHETIC_BYTES} bytes", source)
        return source.strip()
    if source.strip().lower() in PATHLESS_SOURCES:
        return source.strip().lower()
    raise invalid(
        field,
        "data with a path must be registered first (POST /v1/datasets) and named in 'dataset'; "
        f"'data' takes only synthetic:N:HxWxC:K or one of {', '.join(PATHLESS_SOURCES)}",
        source,
    )


def _normalise(path: str) -> str:
    """``./a//b/`` → ``a/b``; ``..`` and absolute paths are left for the loader to refuse."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or path.startswith("~"):
        return path
    return pure.as_posix()


def private_message(message: str, settings: Settings) -> str:
    """``message`` without the server's layout: paths under the data root made relative, and
    any other absolute path (the state folder, where an operator's symlink points) hidden."""
    root = settings.data_dir
    for folder, shown in ((settings.extract_dir, "<extracted>"), (root, "<data root>")):
        message = message.replace(f"{folder}/", "").replace(str(folder), shown)
    return _ABSOLUTE_PATH.sub("<outside path>", message)


def registered_dataset(session: Session, dataset_ref: str, *, field: str) -> DatasetRecord:
    """The dataset a request refers to by name or id.

    Raises:
        ApiError: 422 on ``field`` when no registered dataset has that name or id.
    """
    try:
        return find_dataset(session, dataset_ref)
    except RecordNotFound:
        raise not_found_dataset(field, dataset_ref) from None


def source_of(dataset: DatasetRecord) -> str:
    """A registered dataset's data source, ``KIND:PATH``, as a run's config names it."""
    return f"{dataset.kind}:{dataset.location}"


def not_found_dataset(field: str, dataset_ref: str) -> ApiError:
    return invalid(field, f"no registered dataset has the id or name {dataset_ref!r}", dataset_ref)
