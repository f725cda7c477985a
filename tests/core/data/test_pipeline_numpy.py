"""The NumPy input pipeline (other Keras backends than TensorFlow): the tf.data one's contract.

Called directly here, so it runs in the TensorFlow test process; the JAX process without
TensorFlow is tests/core/training/test_without_tensorflow.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import ImageSet
from core.data.pipeline_numpy import CIFAR_PAD, make_numpy_pipeline, ten_crop_numpy
from core.images import decode_image, resize_for_model


def numbered_images(n: int, size: int = 8) -> ImageSet:
    """Image i is filled with i (mod 256) in channel 0 and is labelled i: batches say who."""
    x = np.zeros((n, size, size, 3), np.uint8)
    x[..., 0] = (np.arange(n) % 256)[:, None, None]
    x[..., 1] = np.arange(size)[None, None, :]  # columns numbered: flips can be seen
    return ImageSet(["a"], False, np.arange(n), images=x, image_shape=(size, size, 3))


def batches(pipeline) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(pipeline.as_numpy_iterator())


def labels_of(pipeline) -> np.ndarray:
    return np.concatenate([y for _, y in batches(pipeline)])


def train_pipeline(images: ImageSet, **options):
    options = {"batch_size": 16, "training": True, "image_shape": (8, 8, 3), **options}
    return make_numpy_pipeline(images, **options)


def test_each_epoch_is_a_seeded_permutation_of_its_own():
    images = numbered_images(50)
    epochs = labels_of(train_pipeline(images, epochs=range(0, 3))).reshape(3, 50)
    for order in epochs:
        assert sorted(order) == list(range(50))
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    again = labels_of(train_pipeline(images, epochs=range(0, 3))).reshape(3, 50)
    assert np.array_equal(epochs, again)
    other_seed = labels_of(train_pipeline(images, epochs=range(0, 1), seed=1))
    assert not np.array_equal(other_seed, epochs[0])


def test_a_resumed_run_sees_the_batches_the_whole_run_saw():
    images = numbered_images(50)
    whole = batches(train_pipeline(images, augment="cifar", epochs=range(0, 4)))
    resumed = batches(train_pipeline(images, augment="cifar", epochs=range(2, 4)))
    per_epoch = len(whole) // 4
    assert per_epoch == 4  # 50 images in batches of 16: the last one smaller
    assert len(resumed) == 2 * per_epoch
    for (xa, ya), (xb, yb) in zip(whole[2 * per_epoch :], resumed, strict=True):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)


def test_passes_without_epochs_are_new_epochs_and_repeat_runs_on():
    images = numbered_images(20)
    pipeline = train_pipeline(images)
    first, second = labels_of(pipeline), labels_of(pipeline)
    assert sorted(first) == sorted(second) == list(range(20))
    assert not np.array_equal(first, second)
    forever = train_pipeline(images, repeat=True)
    assert forever.num_batches is None
    stream = iter(forever)
    seen = np.concatenate([next(stream)[1] for _ in range(4)])  # 2 batches an epoch
    epochs = labels_of(train_pipeline(images, epochs=range(0, 2)))
    assert np.array_equal(seen, epochs)


def test_cifar_augmentation_is_a_padded_crop_and_a_flip_of_the_image():
    images = numbered_images(64)
    x, y = next(iter(train_pipeline(images, augment="cifar", batch_size=64, epochs=range(1))))
    assert x.dtype == np.float32 and x.shape == (64, 8, 8, 3)
    pad = CIFAR_PAD
    flips = shifts = 0
    for out, label in zip(x, y, strict=True):
        padded = np.pad(images.images[label], ((pad, pad), (pad, pad), (0, 0)))
        found = [
            (top, left, flip)
            for top in range(2 * pad + 1)
            for left in range(2 * pad + 1)
            for flip in (False, True)
            if np.array_equal(
                (padded[:, ::-1] if flip else padded)[top : top + 8, left : left + 8], out
            )
        ]
        assert found, f"image {label} is not a crop of its padded self"
        flips += any(f for _, _, f in found)
        shifts += any((top, left) != (pad, pad) for top, left, _ in found)
    assert 10 < flips < 54 and shifts > 40  # both happen, neither always


def test_evaluation_reads_in_order_with_a_last_smaller_batch():
    images = numbered_images(37)
    pipeline = make_numpy_pipeline(images, batch_size=16, training=False, image_shape=(8, 8, 3))
    got = batches(pipeline)
    assert [len(y) for _, y in got] == [16, 16, 5]
    assert np.array_equal(np.concatenate([y for _, y in got]), np.arange(37))
    assert np.array_equal(np.concatenate([x for x, _ in got]), images.images.astype(np.float32))
    dropped = make_numpy_pipeline(
        images, batch_size=16, training=True, image_shape=(8, 8, 3), drop_remainder=True
    )
    assert [len(y) for _, y in batches(dropped)] == [16, 16]


def test_map_applies_to_every_batch():
    images = numbered_images(10)
    pipeline = make_numpy_pipeline(images, batch_size=4, training=False, image_shape=(8, 8, 3))
    eye = np.eye(10, dtype=np.float32)
    one_hot = np.concatenate([y for _, y in pipeline.map(lambda x, y: (x, eye[y]))])
    assert np.array_equal(one_hot, eye)


def test_images_of_another_size_and_channels_are_fitted_as_inference_fits_them():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(5, 20, 24, 3), dtype=np.uint8)
    images = ImageSet(["a"], False, np.zeros(5, np.int64), images=x, image_shape=(20, 24, 3))
    ((out, _),) = batches(
        make_numpy_pipeline(images, batch_size=8, training=False, image_shape=(8, 8, 3))
    )
    want = np.stack([resize_for_model(img, (8, 8, 3), "crop") for img in x])
    assert np.array_equal(out, want.astype(np.float32))
    ((gray, _),) = batches(
        make_numpy_pipeline(images, batch_size=8, training=False, image_shape=(8, 8, 1))
    )
    assert gray.shape == (5, 8, 8, 1)


def write_files(root: Path, n: int) -> list[str]:
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, size=(30 + i, 40, 3), dtype=np.uint8)
        path = root / (f"{i}.png" if i % 2 else f"{i}.jpg")
        Image.fromarray(arr).save(path)
        paths.append(str(path))
    return paths


def test_files_are_decoded_fitted_and_unreadable_ones_left_out(tmp_path):
    paths = write_files(tmp_path, 6)
    Path(paths[3]).write_bytes(b"not an image")
    images = ImageSet(["a"], False, np.arange(6), paths=paths)
    got = batches(
        make_numpy_pipeline(images, batch_size=4, training=False, image_shape=(16, 16, 3))
    )
    labels = np.concatenate([y for _, y in got])
    assert labels.tolist() == [0, 1, 2, 4, 5]
    x = np.concatenate([x for x, _ in got])
    for out, i in zip(x, labels, strict=True):
        want = resize_for_model(decode_image(Path(paths[i]).read_bytes()), (16, 16, 3), "crop")
        assert np.array_equal(out, want.astype(np.float32))


@pytest.mark.parametrize("stored", ["memory", "files"])
def test_imagenet_crops_are_seeded_and_fill_the_model_input(tmp_path, stored):
    paths = write_files(tmp_path, 8)
    if stored == "files":
        images = ImageSet(["a"], False, np.arange(8), paths=paths)
    else:
        x = np.stack([decode_image(Path(p).read_bytes())[:30, :40] for p in paths])
        images = ImageSet(["a"], False, np.arange(8), images=x, image_shape=(30, 40, 3))
    options = {"batch_size": 8, "image_shape": (24, 24, 3), "augment": "imagenet"}
    a = batches(train_pipeline(images, epochs=range(0, 2), **options))
    b = batches(train_pipeline(images, epochs=range(1, 2), **options))
    assert a[0][0].shape == (8, 24, 24, 3) and a[0][0].min() >= 0 and a[0][0].max() <= 255
    assert np.array_equal(a[1][0], b[0][0]) and np.array_equal(a[1][1], b[0][1])
    assert not np.array_equal(a[0][0], a[1][0])


def test_ten_crop_gives_the_corners_the_centre_and_their_mirrors():
    x = np.arange(2 * 6 * 6 * 1, dtype=np.float32).reshape(2, 6, 6, 1)
    crops = ten_crop_numpy(x, 4)
    assert crops.shape == (2, 10, 4, 4, 1)
    assert np.array_equal(crops[:, 0], x[:, :4, :4])
    assert np.array_equal(crops[:, 3], x[:, 2:, 2:])
    assert np.array_equal(crops[:, 4], x[:, 1:5, 1:5])
    assert np.array_equal(crops[:, 5:], crops[:, :5, :, ::-1])
