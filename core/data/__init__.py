"""Data: from a source (``"cifar10:/path"``, ``"folder:/path"``, ...) to batches for Keras.

``load_dataset`` gives a :class:`Dataset` of labelled :class:`ImageSet` splits with class names
and counts; ``split_train_val`` carves out validation; ``pixel_statistics`` gives normalisation
constants; ``make_pipeline`` gives batches (``tf.data`` on the TensorFlow backend, NumPy on the
others). Loading data does not import TensorFlow (the HTTP service validates sources without
it); ``make_pipeline`` and ``ten_crop`` import it on first use, on the TensorFlow backend only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.data.loader import load_dataset
from core.data.splits import paper_cifar_split, split_train_val, with_val_split
from core.data.stats import pixel_statistics
from core.data.types import KINDS, DataError, Dataset, ImageSet
from core.lazy import lazy_attributes

if TYPE_CHECKING:
    from core.data.pipeline import make_pipeline, ten_crop

__all__ = [
    "KINDS",
    "DataError",
    "Dataset",
    "ImageSet",
    "load_dataset",
    "make_pipeline",
    "paper_cifar_split",
    "pixel_statistics",
    "split_train_val",
    "ten_crop",
    "with_val_split",
]


__getattr__ = lazy_attributes(__name__, {"core.data.pipeline": ("make_pipeline", "ten_crop")})
