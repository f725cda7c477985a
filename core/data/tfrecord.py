"""TFRecord shards of ``tf.train.Example`` with the standard keys (ImageNet's build scripts).

Keys: ``image/encoded`` (the encoded image), ``image/class/label`` (int64) and, optionally,
``image/class/synset`` or ``image/class/text`` (the class name). Files named ``train-*`` form
the train split and ``validation-*`` (or ``val-*``, ``test-*``) the test split.
"""

from __future__ import annotations

import glob
import os
import struct
from pathlib import Path

import numpy as np

from core.data.types import DataError, Dataset, ImageSet
from core.environment import require_tensorflow

ENCODED_KEY = "image/encoded"
LABEL_KEY = "image/class/label"
NAME_KEYS = ("image/class/synset", "image/class/text")
# Labels are read up front (for counts, class names and stratified splits) when the shards
# total at most this; beyond it only the first shard is read and records are counted.
SCAN_BYTES = 1 << 30
_TEST_PREFIXES = ("validation", "val", "test")


def shard_files(path: str, confine: Path | None) -> dict[str, list[str]]:
    """Shards by split from a folder or a glob pattern."""
    if os.path.isdir(path):
        files = sorted(str(p) for p in Path(path).iterdir() if p.is_file())
        files = [f for f in files if not os.path.basename(f).startswith(".")]
    else:
        files = sorted(glob.glob(path))
    if confine is not None:
        for f in files:
            if not Path(f).resolve().is_relative_to(confine):
                raise ValueError(f"{f} resolves outside the data root")
    train = [f for f in files if os.path.basename(f).startswith("train")]
    test = [f for f in files if os.path.basename(f).startswith(_TEST_PREFIXES)]
    if not train and not test:
        train = files  # a glob naming shards directly
    if not train:
        raise DataError(
            f"{path}: no TFRecord shards (expected files named train-* and validation-*)"
        )
    return {"train": train, "test": test} if test else {"train": train}


def count_records(files: list[str]) -> int:
    """Records in TFRecord files, found by hopping over the length-prefixed records."""
    n = 0
    for name in files:
        with open(name, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            pos = 0
            while pos < size:
                f.seek(pos)
                head = f.read(12)
                if len(head) < 12:
                    raise DataError(f"{os.path.basename(name)}: truncated TFRecord file")
                (length,) = struct.unpack("<Q", head[:8])
                pos += 12 + length + 4
                n += 1
            if pos != size:
                raise DataError(f"{os.path.basename(name)}: truncated TFRecord file")
    return n


def _scan(files: list[str]) -> tuple[np.ndarray, dict[int, str]]:
    """Every record's label, and label -> class name where the records carry names."""
    tf = require_tensorflow("TFRecord data")

    spec = {LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
    spec.update({k: tf.io.FixedLenFeature([], tf.string, default_value="") for k in NAME_KEYS})
    ds = tf.data.TFRecordDataset(files).batch(4096).map(lambda r: tf.io.parse_example(r, spec))
    labels, names = [], {}
    try:
        for batch in ds.as_numpy_iterator():
            labels.append(batch[LABEL_KEY])
            for key in NAME_KEYS:
                for label, text in zip(batch[LABEL_KEY], batch[key], strict=True):
                    if text and int(label) not in names:
                        names[int(label)] = text.decode("utf-8", "replace")
                if names:
                    break
    except tf.errors.OpError as exc:
        raise DataError(f"{files[0]}: unreadable TFRecord shards ({exc.message})") from None
    return (np.concatenate(labels) if labels else np.zeros(0, np.int64)), names


def load_tfrecord(path: str, *, name: str, channels: int | None, confine: Path | None) -> Dataset:
    """TFRecord shards as a dataset; the pipeline decodes images (to the model's channels)."""
    shards = shard_files(path, confine)
    sizes = {s: count_records(f) for s, f in shards.items()}
    total_bytes = sum(os.path.getsize(f) for files in shards.values() for f in files)
    full = total_bytes <= SCAN_BYTES
    scanned = {s: _scan(f if full else f[:1]) for s, f in shards.items()}
    all_labels = np.concatenate([labels for labels, _ in scanned.values()])
    if not len(all_labels):
        raise DataError(f"{path}: the TFRecord shards hold no records")
    present = np.unique(all_labels)
    # ImageNet's build scripts number classes from 1 (0 was "background"): labels 1..K.
    offset = 1 if present[0] == 1 and present[-1] == len(present) else 0
    k = int(present[-1]) + 1 - offset
    names: dict[int, str] = {}
    for _, n in scanned.values():
        names.update(n)
    class_names = [names.get(i + offset, str(i)) for i in range(k)]
    splits = {
        s: ImageSet(
            class_names,
            False,
            (scanned[s][0] - offset).astype(np.int64) if full else np.zeros(0, np.int64),
            tfrecords=files,
            size=sizes[s],
            image_shape=None,
            label_offset=offset,
        )
        for s, files in shards.items()
    }
    return Dataset(name, "tfrecord", class_names, False, splits, [])
