"""The two records every data source produces: a labelled split and a named dataset."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

KINDS = ("cifar10", "cifar100", "idx", "folder", "imagenet", "tfrecord", "coco", "synthetic")
# A folder (or archive) of image files without labels: predicted, never trained or scored on
# (core.data.unlabelled). Not one of KINDS: load_dataset gives labelled datasets only.
UNLABELLED_KIND = "images"
# Unlabelled data has one split, of every file: what an evaluation of it records as its split.
UNLABELLED_SPLIT = "all"
# What a dataset may be registered as: the labelled kinds, and unlabelled images.
DATASET_KINDS = (*KINDS, UNLABELLED_KIND)


class DataError(ValueError):
    """A data source is missing, malformed or unreadable; the message names the file."""


MAX_CLASS_NAME_CHARS = 128
CLASS_NAME_RULE = (
    f"1-{MAX_CLASS_NAME_CHARS} characters, no control or format characters, no leading or "
    "trailing spaces"
)


def check_class_names(names: list[str], *, where: str) -> list[str]:
    """Refuse class names (folder names, mostly) that reports and CSV files cannot carry safely.

    A class name reaches JSON, HTML and CSV reports; control characters (TAB, CR, newlines),
    Unicode format characters (bidi overrides) and endless names are refused here, at the door.

    Raises:
        DataError: naming the first bad class (its ``repr``) and ``where`` it comes from.
    """
    for name in names:
        bad = (
            not name
            or len(name) > MAX_CLASS_NAME_CHARS
            or name != name.strip()
            or any(
                unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for c in name
            )
        )
        if bad:
            shown = name if len(name) <= 40 else name[:40] + "..."
            raise DataError(f"{where}: class name {shown!r} is not allowed ({CLASS_NAME_RULE})")
    return names


@dataclass
class ImageSet:
    """One labelled split, held in exactly one of three ways.

    ``images`` (decoded uint8, in memory) for small images; ``paths`` (encoded files, decoded
    while streaming) for large ones; ``tfrecords`` (shards of ``tf.train.Example``) when the
    source is TFRecord. For TFRecords ``labels`` may be empty (shards too large to scan) and
    ``size`` then gives the number of records.
    """

    class_names: list[str]
    multi_label: bool
    labels: np.ndarray
    images: np.ndarray | None = None
    paths: list[str] | None = None
    tfrecords: list[str] | None = None
    size: int | None = None
    image_shape: tuple[int, int, int] | None = None
    # TFRecord only: stored label minus this is the class index (1 for the ImageNet build
    # scripts, which keep 0 for "background").
    label_offset: int = 0
    # Sources of files: each image's file relative to the dataset's root, so stored predictions
    # can say which image each one is.
    names: list[str] | None = None

    def __post_init__(self) -> None:
        held = sum(x is not None for x in (self.images, self.paths, self.tfrecords))
        if held != 1:
            raise ValueError("an ImageSet holds exactly one of images, paths or tfrecords")
        n = self._stored_len()
        if len(self.labels) and len(self.labels) != n:
            raise ValueError(f"{len(self.labels)} labels for {n} images")
        if self.names is not None and len(self.names) != n:
            raise ValueError(f"{len(self.names)} names for {n} images")

    def _stored_len(self) -> int:
        if self.images is not None:
            return len(self.images)
        if self.paths is not None:
            return len(self.paths)
        return self.size if self.size is not None else len(self.labels)

    def __len__(self) -> int:
        return self._stored_len()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def counts(self) -> dict[str, int]:
        """Images per class name (for multi-label: images in which the class is present).

        Empty when the labels are unknown (a TFRecord source too large to scan).
        """
        if not len(self.labels):
            return {}
        if self.multi_label:
            per_class = np.asarray(self.labels, dtype=np.float32).sum(axis=0)
        else:
            per_class = np.bincount(np.asarray(self.labels, np.int64), minlength=self.num_classes)
        return {name: int(c) for name, c in zip(self.class_names, per_class, strict=False)}

    def subset(self, indices: np.ndarray) -> ImageSet:
        """The images at ``indices``, in that order.

        Raises:
            ValueError: for a TFRecord split, which cannot be indexed.
        """
        if self.tfrecords is not None:
            raise ValueError("a TFRecord split cannot be subset by index; write separate shards")
        idx = np.asarray(indices, dtype=np.int64)
        return replace(
            self,
            labels=self.labels[idx],
            images=None if self.images is None else self.images[idx],
            paths=None if self.paths is None else [self.paths[i] for i in idx],
            names=None if self.names is None else [self.names[i] for i in idx],
            size=None,
        )


@dataclass
class Dataset:
    """A source's splits: ``train``, ``test`` when the source has one, ``val`` after a split."""

    name: str
    kind: str
    class_names: list[str]
    multi_label: bool
    splits: dict[str, ImageSet]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> dict[str, Any]:
        """A JSON-able description: kind, classes, per-split sizes and counts, skipped files."""
        return {
            "name": self.name,
            "kind": self.kind,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "multi_label": self.multi_label,
            "splits": {
                name: {
                    "size": len(s),
                    "image_shape": list(s.image_shape) if s.image_shape else None,
                    "storage": "memory"
                    if s.images is not None
                    else ("files" if s.paths is not None else "tfrecord"),
                    "counts": s.counts(),
                }
                for name, s in self.splits.items()
            },
            "skipped": len(self.skipped),
            "skipped_examples": [list(x) for x in self.skipped[:20]],
        }
