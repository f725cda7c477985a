"""Deterministic train/validation splits."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from core.data.types import Dataset, ImageSet

PAPER_CIFAR_VAL_SIZE = 5_000  # He et al. 2016, section 4.2: a 45k/5k train/val split


def split_train_val(
    images: ImageSet, val_size: int | float, *, seed: int = 0, stratify: bool = True
) -> tuple[ImageSet, ImageSet]:
    """Hold out ``val_size`` images (a count, or a fraction in (0, 1)), deterministically.

    With ``stratify`` (single-label only) every class gives the same share to validation,
    rounded so that the total is exact. Both parts keep the original order.

    Raises:
        ValueError: a size that leaves either part empty, or a split that cannot be indexed.
    """
    n = len(images)
    if isinstance(val_size, float) and val_size < 1:
        n_val = round(n * val_size)
    elif float(val_size).is_integer():
        n_val = int(val_size)
    else:
        raise ValueError(f"val_size must be a count or a fraction in (0, 1); got {val_size}")
    if not 0 < n_val < n:
        raise ValueError(f"val_size {val_size} leaves no images for train or val (of {n})")
    rng = np.random.default_rng(seed)
    if stratify and not images.multi_label and len(images.labels) == n:
        val = _stratified(np.asarray(images.labels, np.int64), n_val, rng)
    else:
        val = rng.choice(n, size=n_val, replace=False)
    is_val = np.zeros(n, dtype=bool)
    is_val[val] = True
    return images.subset(np.flatnonzero(~is_val)), images.subset(np.flatnonzero(is_val))


def _stratified(labels: np.ndarray, n_val: int, rng: np.random.Generator) -> np.ndarray:
    classes, counts = np.unique(labels, return_counts=True)
    share = counts * n_val / len(labels)
    take = np.floor(share).astype(np.int64)
    # Largest remainders get the leftover images (ties broken by class order).
    for i in np.argsort(-(share - take), kind="stable")[: n_val - int(take.sum())]:
        take[i] += 1
    picked = [
        rng.choice(np.flatnonzero(labels == c), size=t, replace=False)
        for c, t in zip(classes, take, strict=True)
    ]
    return np.concatenate(picked)


def with_val_split(
    ds: Dataset, val_size: int | float, *, seed: int = 0, stratify: bool = True
) -> Dataset:
    """The dataset with ``val`` carved out of ``train`` (``test`` untouched)."""
    train, val = split_train_val(ds.splits["train"], val_size, seed=seed, stratify=stratify)
    return replace(ds, splits={**ds.splits, "train": train, "val": val})


def paper_cifar_split(ds: Dataset, *, seed: int = 0) -> Dataset:
    """CIFAR-10's 45k/5k train/val split of the paper (stratified: 500 per class)."""
    return with_val_split(ds, PAPER_CIFAR_VAL_SIZE, seed=seed)
