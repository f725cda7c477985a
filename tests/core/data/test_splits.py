"""Deterministic train/val splits and pixel statistics."""

from __future__ import annotations

import numpy as np
import pytest

from core.data import ImageSet, load_dataset, paper_cifar_split, pixel_statistics, split_train_val


def _set(n: int = 100, k: int = 4) -> ImageSet:
    return load_dataset(f"synthetic:{n}:4x4x3:{k}").splits["train"]


def test_split_is_deterministic_stratified_and_disjoint() -> None:
    images = _set()
    train, val = split_train_val(images, 20, seed=3)
    again_train, again_val = split_train_val(images, 20, seed=3)
    assert train.images is not None and again_train.images is not None
    np.testing.assert_array_equal(train.images, again_train.images)
    np.testing.assert_array_equal(val.labels, again_val.labels)
    assert len(train) == 80 and len(val) == 20
    assert val.counts() == {f"class_{i}": 5 for i in range(4)}
    _, other = split_train_val(images, 20, seed=4)
    assert not np.array_equal(other.images, val.images)


def test_fractional_and_unstratified_split() -> None:
    train, val = split_train_val(_set(), 0.1, stratify=False)
    assert (len(train), len(val)) == (90, 10)


@pytest.mark.parametrize("size", [0, 100, 1.5, -0.2])
def test_bad_split_sizes(size: float) -> None:
    with pytest.raises(ValueError):
        split_train_val(_set(), size)


def test_uneven_classes_keep_exact_total() -> None:
    images = _set(n=103, k=3)
    _, val = split_train_val(images, 0.5)
    assert len(val) == 52 and all(abs(c - 17) <= 1 for c in val.counts().values())


def test_paper_cifar_split() -> None:
    ds = load_dataset("synthetic:50000:1x1x3:10")
    split = paper_cifar_split(ds)
    assert len(split.splits["train"]) == 45_000 and len(split.splits["val"]) == 5_000
    assert set(split.splits["val"].counts().values()) == {500}


def test_pixel_statistics_in_memory() -> None:
    images = _set(n=40)
    assert images.images is not None
    x = images.images.astype(np.float64)
    mean, std = pixel_statistics(images, mode="per_pixel_mean", image_shape=(4, 4, 3))
    assert mean.shape == (4, 4, 3) and std.shape == (3,) and mean.dtype == np.float32
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, x.reshape(-1, 3).std(0), rtol=1e-4)
    mean_c, std_c = pixel_statistics(images, mode="per_channel", image_shape=(4, 4, 3))
    np.testing.assert_allclose(mean_c, x.reshape(-1, 3).mean(0), rtol=1e-5)
    np.testing.assert_allclose(std_c, std)
    sampled, _ = pixel_statistics(images, mode="per_channel", image_shape=(4, 4, 3), max_images=10)
    assert sampled.shape == (3,)
    with pytest.raises(ValueError, match="Unknown statistics mode"):
        pixel_statistics(images, mode="zca", image_shape=(4, 4, 3))
