"""Data for the API: describe a source under the data root, and check the sources runs name.

A *data source* is ``KIND:PATH`` (what a worker loads); a *dataset reference* is a registered
dataset's name or id (what a client names), resolved to its source by the records.

Loading a source (``core.data.load_dataset``) does not import TensorFlow; it lists (and, for
small images, decodes) the files, so routes call these functions in a worker thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy.orm import Session

from core.data import DataError, load_dataset
from jobs.records import DatasetRecord, RecordNotFound
from jobs.records.datasets import find_dataset
from service.errors import ApiError, invalid

# Sources a run may name directly in ``data``: they carry no path on the server. Everything with
# a path goes through a registered dataset, whose path was checked to lie under the data root.
PATHLESS_SOURCES = ("cifar10", "cifar100", "mnist", "fashion_mnist", "fashion-mnist")
# The same form core.data's synthetic loader accepts: N:HxWxC:K[:SEED].
_SYNTHETIC = re.compile(r"synthetic:(\d+):(\d+)x(\d+)x([13]):(\d+)(?::(\d+))?")
# Synthetic data is generated in memory by the worker; keep what a request can ask for sane.
MAX_SYNTHETIC_BYTES = 1 << 30


@dataclass(frozen=True)
class Described:
    """What registering a dataset records about it."""

    kind: str
    location: str
    class_names: list[str]
    counts: dict[str, Any]
    num_images: int
    skipped: int


def describe(kind: str, path: str, *, root: Path, field: str = "body.path") -> Described:
    """Load ``KIND:PATH`` confined to ``root`` and summarise it: classes and per-split counts.

    Raises:
        ApiError: 422 naming ``field`` when the path leaves the root (``..``, absolute, a
            symlink out), does not exist, or holds no readable data.
    """
    location = path if kind == "synthetic" else _normalise(path)
    try:
        dataset = load_dataset(f"{kind}:{location}", root=root)
    except DataError as exc:
        raise invalid(field, _relative_message(str(exc), root), path) from None
    except ValueError as exc:
        raise invalid(field, _relative_message(str(exc), root), path) from None
    summary = dataset.summary()
    counts = {
        split: {"size": s["size"], "counts": s["counts"], "image_shape": s["image_shape"]}
        for split, s in summary["splits"].items()
    }
    return Described(
        kind=kind,
        location=location,
        class_names=list(dataset.class_names),
        counts=counts,
        num_images=sum(s["size"] for s in counts.values()),
        skipped=int(summary["skipped"]),
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


def _relative_message(message: str, root: Path) -> str:
    # Do not tell clients where the data root is on the server's disk.
    return message.replace(f"{root}/", "").replace(str(root), "<data root>")


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
