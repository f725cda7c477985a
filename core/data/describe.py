"""Describe a data source without loading its pixels: classes and per-split counts.

A service registering a dataset needs to know what is in it, not the images themselves: those
are a worker's business. Each kind is described from what it says about itself:

- ``synthetic``: the spec gives the count, shape and classes;
- ``idx``: the images file's header gives the shape; the labels file is counted in blocks;
- ``cifar10``/``cifar100``: the batches named in the archive or folder, the meta batch's class
  names and the format's fixed split sizes;
- ``folder``/``imagenet``: image files per class folder (an archive is extracted, within its
  budget, into ``extract_dir``);
- ``coco``: image files per split and the categories of the annotation file;
- ``tfrecord``: the shards' record counts and labels, as the loader scans them;
- ``images`` (unlabelled): no classes, one split ``all`` of the files named as images, and how
  many other files (predictions report those as not images).

Memory stays small whatever the source declares.
"""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.data.archives import ArchiveLimits, extract_cached, is_archive
from core.data.arrays import (
    CIFAR,
    CIFAR_MAX_MEMBER_BYTES,
    _unpickle,
    count_idx_labels,
    idx_class_names,
    idx_files,
    parse_synthetic,
    read_idx_header,
    synthetic_counts,
)
from core.data.decode import IMAGE_EXTENSIONS, Skips, is_image_file
from core.data.files import cache_root
from core.data.folders import (
    _check_inside,
    _flat_val,
    _folder_classes,
    _split_dirs,
    _subdirs,
    _unwrap,
)
from core.data.loader import ALIASES, resolve_source_path
from core.data.tfrecord import load_tfrecord
from core.data.types import KINDS, UNLABELLED_KIND, UNLABELLED_SPLIT, DataError, check_class_names
from core.data.unlabelled import open_unlabelled

# CIFAR's python version: images per class in each split (fixed by the format).
_CIFAR_PER_CLASS = {"cifar10": (5000, 1000), "cifar100": (500, 100)}
# The annotation file's categories are read only from files up to this size.
COCO_MAX_ANNOTATION_BYTES = 256 << 20


@dataclass(frozen=True)
class SplitDescription:
    size: int
    counts: dict[str, int]
    image_shape: list[int] | None
    # Unlabelled images only: files not named as images, reported as such by predictions.
    other_files: int | None = None


@dataclass(frozen=True)
class Description:
    """What is in a source: its classes and, per split, images per class."""

    kind: str
    class_names: list[str]
    splits: dict[str, SplitDescription]

    @property
    def num_images(self) -> int:
        return sum(s.size for s in self.splits.values())

    def counts(self) -> dict[str, Any]:
        return {
            name: {
                "size": s.size,
                "counts": s.counts,
                "image_shape": s.image_shape,
                **({} if s.other_files is None else {"other_files": s.other_files}),
            }
            for name, s in self.splits.items()
        }


def describe_source(
    source: str,
    *,
    root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    extract_dir: str | Path | None = None,
    archive_limits: ArchiveLimits | None = None,
) -> Description:
    """Describe ``KIND:PATH`` as :func:`core.data.load_dataset` would load it, reading no pixels.

    Args: as for :func:`core.data.load_dataset`.

    Raises:
        ValueError: an unknown kind, a malformed source, or a path outside ``root``.
        DataError: (a ValueError) the data is missing or malformed.
    """
    kind, _, rest = source.partition(":")
    kind = kind.strip().lower()
    fashion = kind.startswith("fashion")
    confine = None if root is None else Path(root).resolve()
    if kind in ALIASES and not rest:
        kind, rest = ALIASES[kind]
        confine = None  # a fixed system location, not a user-supplied path
    kind = {"fashion_mnist": "idx", "fashion-mnist": "idx", "mnist": "idx"}.get(kind, kind)
    if kind == UNLABELLED_KIND:
        return _describe_unlabelled(rest, confine, cache_dir, extract_dir, archive_limits)
    if kind not in KINDS:
        raise ValueError(f"Unknown data source kind: {kind!r}. Expected one of {', '.join(KINDS)}")
    if kind == "synthetic":
        n, h, w, c, k, _ = parse_synthetic(rest)
        names = [f"class_{i}" for i in range(k)]
        counts = dict(zip(names, synthetic_counts(n, k), strict=True))
        return Description(kind, names, {"train": SplitDescription(n, counts, [h, w, c])})
    if not rest:
        raise ValueError(f"Data source {source!r} needs a path: '{kind}:PATH'")
    if kind == "tfrecord":
        pattern = str(resolve_source_path(rest, confine, must_exist=False))
        ds = load_tfrecord(pattern, name=kind, channels=None, confine=confine)
        check_class_names(ds.class_names, where=rest)
        return Description(
            kind,
            list(ds.class_names),
            {s: SplitDescription(len(x), x.counts(), None) for s, x in ds.splits.items()},
        )
    path = resolve_source_path(rest, confine, must_exist=True)
    if kind == "idx":
        return _describe_idx(path, fashion=fashion or "fashion" in path.name.lower())
    if kind in CIFAR:
        return _describe_cifar(kind, path)
    if is_archive(path):
        into = Path(extract_dir) if extract_dir is not None else cache_root(cache_dir) / "extracted"
        path = extract_cached(path, into, archive_limits)
        confine = None  # we extracted it ourselves: links were refused
    elif not path.is_dir():
        raise DataError(f"{rest}: expected a folder or a .tar/.tar.gz/.zip archive")
    if kind == "coco":
        return _describe_coco(path, confine)
    counter = count_imagenet if kind == "imagenet" else count_folder
    class_names, per_split = counter(path, confine=confine)
    return Description(
        kind,
        class_names,
        {s: SplitDescription(sum(c.values()), c, None) for s, c in per_split.items()},
    )


def _describe_unlabelled(
    rest: str,
    confine: Path | None,
    cache_dir: str | Path | None,
    extract_dir: str | Path | None,
    archive_limits: ArchiveLimits | None,
) -> Description:
    listing = open_unlabelled(
        rest,
        root=confine,
        cache_dir=cache_dir,
        extract_dir=extract_dir,
        archive_limits=archive_limits,
    )
    images = listing.image_files
    split = SplitDescription(images, {}, None, other_files=len(listing) - images)
    return Description(UNLABELLED_KIND, [], {UNLABELLED_SPLIT: split})


def _describe_idx(folder: Path, *, fashion: bool) -> Description:
    shapes, label_counts = {}, {}
    for split, (images_file, labels_file) in idx_files(folder).items():
        _, dims = read_idx_header(images_file)
        if len(dims) != 3:
            raise DataError(f"{images_file.name}: expected (N, H, W) images, got {dims}")
        shapes[split] = [dims[1], dims[2], 1]
        label_counts[split] = count_idx_labels(labels_file, expected=dims[0])
    names = idx_class_names(max(len(c) for c in label_counts.values()), fashion=fashion)
    splits = {}
    for split, per_label in label_counts.items():
        counts = {n: int(per_label[i]) if i < len(per_label) else 0 for i, n in enumerate(names)}
        splits[split] = SplitDescription(int(per_label.sum()), counts, shapes[split])
    return Description("idx", names, splits)


def _describe_cifar(kind: str, path: Path) -> Description:
    spec = CIFAR[kind]
    members = (*spec.train, spec.test, spec.meta)
    found: set[str] = set()
    meta: dict[bytes, Any] | None = None
    if path.is_file():
        try:
            with tarfile.open(path, mode="r|*") as tar:  # streamed: one member at a time
                for m in tar:
                    base = m.name.rsplit("/", 1)[-1]
                    if m.size > CIFAR_MAX_MEMBER_BYTES:  # refused before it is read through
                        raise DataError(f"{path.name}: member {m.name!r} is absurdly large")
                    if m.isfile() and base in members:
                        found.add(base)
                        if base == spec.meta and meta is None and m.size <= 1 << 20:
                            f = tar.extractfile(m)
                            if f is not None:
                                meta = _unpickle(f, f"{path.name}:{m.name}")
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise DataError(f"{path.name}: not a readable tar archive ({exc})") from None
    else:
        folder = path / spec.folder if (path / spec.folder).is_dir() else path
        found = {b for b in members if (folder / b).is_file()}
        if spec.meta in found and (folder / spec.meta).stat().st_size <= 1 << 20:
            with (folder / spec.meta).open("rb") as f:
                meta = _unpickle(f, spec.meta)
    missing = [m for m in members if m not in found]
    if missing or meta is None:
        raise DataError(
            f"{path.name}: not a {kind} python-version dataset; missing "
            f"{', '.join(missing) or spec.meta}"
        )
    try:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[spec.names_key]]
    except (KeyError, TypeError, UnicodeDecodeError):
        raise DataError(f"{path.name}: {spec.meta} has no {spec.names_key.decode()}") from None
    check_class_names(names, where=f"{path.name}:{spec.meta}")
    train, test = _CIFAR_PER_CLASS[kind]
    return Description(
        kind,
        names,
        {
            "train": SplitDescription(train * len(names), dict.fromkeys(names, train), [32, 32, 3]),
            "test": SplitDescription(test * len(names), dict.fromkeys(names, test), [32, 32, 3]),
        },
    )


def _describe_coco(root: Path, confine: Path | None) -> Description:
    if not (root / "annotations").is_dir():
        root = _unwrap(root, class_folders=False)
    train_json = root / "annotations" / "instances_train2017.json"
    if not train_json.is_file() or not (root / "train2017").is_dir():
        raise DataError(f"{root.name}: missing annotations/instances_train2017.json or train2017/")
    _check_inside(train_json, confine)
    names: list[str] = []
    if train_json.stat().st_size <= COCO_MAX_ANNOTATION_BYTES:
        try:
            categories = json.loads(train_json.read_text())["categories"]
            names = [str(c["name"]) for c in sorted(categories, key=lambda c: int(c["id"]))]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{train_json.name}: not a COCO instances file ({exc})") from None
        check_class_names(names, where=train_json.name)
    splits = {}
    for split, stem in (("train", "train2017"), ("test", "val2017")):
        if (root / stem).is_dir():
            n = sum(1 for p in (root / stem).iterdir() if is_image_file(p.name))
            splits[split] = SplitDescription(n, {}, None)
    return Description("coco", names, splits)


def _count_files(folder: Path, class_names: list[str], confine: Path | None) -> dict[str, int]:
    counts = {}
    for name in class_names:
        class_dir = folder / name
        n = 0
        if class_dir.is_dir():
            _check_inside(class_dir, confine)
            for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=False):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                for f in filenames:
                    if is_image_file(f):
                        _check_inside(Path(dirpath, f), confine)
                        n += 1
        counts[name] = n
    return counts


def count_folder(
    root: Path, *, confine: Path | None = None
) -> tuple[list[str], dict[str, dict[str, int]]]:
    """Class folders and image files per class and split, without opening a single image.

    The same layout rules as :func:`load_folder`, so what is counted is what a worker loads
    (less the unreadable files it will skip).

    Returns:
        ``(class_names, {split: {class: files}})``.
    """
    root = _unwrap(root)
    dirs = _split_dirs(root) or {"train": root}
    class_names = _folder_classes(root, dirs)
    counts = {split: _count_files(d, class_names, confine) for split, d in dirs.items()}
    if not sum(counts["train"].values()):
        raise DataError(f"{dirs['train']}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return class_names, counts


def count_imagenet(
    root: Path, *, confine: Path | None = None
) -> tuple[list[str], dict[str, dict[str, int]]]:
    """ImageNet's layout counted like :func:`count_folder`: files per class, no pixels read."""
    if not (root / "train").is_dir():
        root = _unwrap(root, class_folders=False)
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataError(f"{root}: no train/ folder (expected train/<wnid>/*.JPEG)")
    class_names = [p.name for p in _subdirs(train_dir)]
    if not class_names:
        raise DataError(f"{train_dir}: no class folders")
    check_class_names(class_names, where=str(train_dir))
    counts = {"train": _count_files(train_dir, class_names, confine)}
    val_dir = next((root / d for d in ("val", "validation") if (root / d).is_dir()), None)
    if val_dir is not None:
        if _subdirs(val_dir):
            counts["test"] = _count_files(val_dir, class_names, confine)
        else:
            _, labels, _ = _flat_val(root, val_dir, class_names, Skips(False, []), confine)
            per_class = np.bincount(np.asarray(labels, np.int64), minlength=len(class_names))
            counts["test"] = {n: int(c) for n, c in zip(class_names, per_class, strict=True)}
    return class_names, counts
