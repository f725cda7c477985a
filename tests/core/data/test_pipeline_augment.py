"""Augmentation policies in both input pipelines: the tf.data one (make_pipeline on the
TensorFlow backend) and the NumPy one (called directly, as under JAX)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.data import ImageSet, load_dataset, make_pipeline
from core.data.augment import AugmentParams, CutoutParams, batch_policy, parse_augment
from core.data.pipeline_numpy import make_numpy_pipeline
from tests.core.data.conftest import write_class_folders

SHAPE = (8, 8, 3)
PARAMS = AugmentParams(cutout=CutoutParams(size=4))
POLICIES = [
    "cifar+randaugment",
    "none+autoaugment-cifar10",
    "cifar+cutout",
    "none+mixup",
    "cifar+cutmix",
    "imagenet+randaugment+cutout+mixup",
]
# The policies are the same NumPy code in both pipelines: tf.data needs each of its paths
# (the three bases, labels kept and mixed), not each policy again.
TF_POLICIES = ["cifar+randaugment+cutout+mixup", "none+cutmix", "imagenet+autoaugment-cifar10"]
CASES = [("numpy", a) for a in POLICIES] + [("tf.data", a) for a in TF_POLICIES]


def numpy_pipeline(images: ImageSet, *, augment: str = "none", training: bool = True, **options):
    """The NumPy pipeline with the policy make_pipeline would give it."""
    spec = parse_augment(augment)
    policy = batch_policy(
        spec,
        PARAMS,
        num_classes=len(images.class_names),
        multi_label=images.multi_label,
        image_shape=SHAPE,
    )
    return make_numpy_pipeline(
        images,
        batch_size=8,
        training=training,
        image_shape=SHAPE,
        augment=spec.base,
        policy=policy if training else None,
        **options,
    )


def tf_pipeline(images: ImageSet, *, augment: str = "none", training: bool = True, **options):
    return make_pipeline(
        images,
        batch_size=8,
        training=training,
        image_shape=SHAPE,
        augment=augment,
        augment_params=PARAMS,
        **options,
    )


PIPELINES = {"tf.data": tf_pipeline, "numpy": numpy_pipeline}


def batches(ds) -> list[tuple[np.ndarray, np.ndarray]]:  # type: ignore[no-untyped-def]
    return list(ds.as_numpy_iterator())


@pytest.fixture(scope="module")
def images() -> ImageSet:
    return load_dataset("synthetic:20:8x8x3:3").splits["train"]


@pytest.mark.parametrize(("pipeline", "augment"), CASES)
def test_policies_give_float_pixels_in_range_and_labels_of_unit_mass(images, pipeline, augment):
    make = PIPELINES[pipeline]
    whole = batches(make(images, augment=augment, epochs=range(0, 3)))
    assert len(whole) == 9  # 20 images in batches of 8, three epochs
    for x, y in whole:
        assert x.dtype == np.float32 and x.shape[1:] == SHAPE
        assert x.min() >= 0.0 and x.max() <= 255.0
        if parse_augment(augment).mixes_labels:
            assert y.dtype == np.float32 and y.shape == (len(x), 3)
            np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)
        else:
            assert y.dtype == np.int64 and y.shape == (len(x),)
    # Resumed at epoch 2: the batches the whole run saw, bit for bit.
    resumed = batches(make(images, augment=augment, epochs=range(2, 3)))
    for (xa, ya), (xb, yb) in zip(whole[6:], resumed, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    # Another seed: another run (the same seed's is the resumed one above).
    other = batches(make(images, augment=augment, epochs=range(0, 1), seed=5))
    assert not np.array_equal(other[0][0], whole[0][0])


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_the_policy_comes_after_the_base_and_changes_what_it_gave(images, pipeline):
    make = PIPELINES[pipeline]
    plain = batches(make(images, augment="cifar", epochs=range(0, 1)))
    cut = batches(make(images, augment="cifar+cutout", epochs=range(0, 1)))
    for (xa, ya), (xb, yb) in zip(plain, cut, strict=True):
        np.testing.assert_array_equal(ya, yb)  # same order
        changed = xa != xb
        assert np.all(xb[changed] == 0)  # cutout only zeroes pixels of the cropped images
        assert changed.any()


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_evaluation_ignores_the_policies(images, pipeline):
    make = PIPELINES[pipeline]
    (x, y), *_ = batches(make(images, augment="cifar+cutmix", training=False))
    np.testing.assert_array_equal(x, images.images[:8])
    np.testing.assert_array_equal(y, images.labels[:8])


def test_make_pipeline_refuses_unknown_names_and_mixing_multi_label_sets(images):
    with pytest.raises(ValueError, match="Unknown augmentation: 'cutot'"):
        tf_pipeline(images, augment="cifar+cutot")
    multi = ImageSet(
        ["a", "b"],
        True,
        np.array([[1, 0], [1, 1]], np.float32),
        images=np.zeros((2, 8, 8, 3), np.uint8),
    )
    with pytest.raises(ValueError, match="multi-label"):
        tf_pipeline(multi, augment="cifar+mixup")
    x, y = batches(tf_pipeline(multi, augment="cifar+randaugment", epochs=range(1)))[0]
    assert y.shape == (2, 2) and x.shape == (2, *SHAPE)  # policies that keep labels apply


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_streamed_files_get_the_policies_too(tmp_path: Path, pipeline):
    write_class_folders(tmp_path / "imgs", {"a": 6, "b": 6}, size=(12, 10))
    files = load_dataset(f"folder:{tmp_path / 'imgs'}").splits["train"]
    make = PIPELINES[pipeline]
    for augment in ("none+cutmix", "imagenet+autoaugment-cifar10"):
        whole = batches(make(files, augment=augment, epochs=range(0, 2), cache=False))
        resumed = batches(make(files, augment=augment, epochs=range(1, 2), cache=False))
        assert len(whole) == 4 and whole[0][0].shape == (8, *SHAPE)
        for (xa, ya), (xb, yb) in zip(whole[2:], resumed, strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
