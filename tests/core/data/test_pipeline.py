"""make_pipeline: shapes, dtypes, shuffling, augmentation, resizing, streaming; ten_crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.data import ImageSet, load_dataset, make_pipeline, pixel_statistics, ten_crop
from core.images import resize_for_model
from tests.core.data.conftest import colour_image, encode, write_class_folders


def _memory(n: int = 20, shape: str = "8x8x3", k: int = 4) -> ImageSet:
    return load_dataset(f"synthetic:{n}:{shape}:{k}").splits["train"]


def _collect(ds) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    xs, ys = zip(*[(x, y) for x, y in ds.as_numpy_iterator()], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def test_eval_pipeline_in_memory_is_ordered_and_exact() -> None:
    images = _memory()
    ds = make_pipeline(images, batch_size=8, training=False, image_shape=(8, 8, 3))
    batches = list(ds.as_numpy_iterator())
    assert [len(x) for x, _ in batches] == [8, 8, 4]
    x, y = _collect(ds)
    assert x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(x, images.images)
    np.testing.assert_array_equal(y, images.labels)
    dropped = make_pipeline(
        images, batch_size=8, training=False, image_shape=(8, 8, 3), drop_remainder=True
    )
    assert sum(len(x) for x, _ in dropped.as_numpy_iterator()) == 16


def test_training_shuffles_every_epoch_reproducibly() -> None:
    images = _memory(n=64)
    ds = make_pipeline(images, batch_size=16, training=True, image_shape=(8, 8, 3), seed=1)
    (x1, _), (x2, y2) = _collect(ds), _collect(ds)
    assert x1.shape == (64, 8, 8, 3)
    assert not np.array_equal(x1, x2)  # reshuffled
    assert sorted(map(bytes, x1.astype(np.uint8))) == sorted(map(bytes, images.images))
    # A fresh pipeline with the same seed replays the same epochs.
    again = make_pipeline(images, batch_size=16, training=True, image_shape=(8, 8, 3), seed=1)
    np.testing.assert_array_equal(_collect(again)[0], x1)
    np.testing.assert_array_equal(_collect(again)[1], y2)


def _is_pad_crop_flip(out: np.ndarray, src: np.ndarray, pad: int = 4) -> bool:
    h, w = src.shape[:2]
    padded = np.pad(src, ((pad, pad), (pad, pad), (0, 0)))
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[dy : dy + h, dx : dx + w]
            if np.array_equal(out, crop) or np.array_equal(out, crop[:, ::-1]):
                return True
    return False


def test_cifar_augmentation_is_pad_crop_flip() -> None:
    images = _memory(n=32, shape="12x12x3")
    assert images.images is not None
    ds = make_pipeline(
        images, batch_size=32, training=True, image_shape=(12, 12, 3), augment="cifar", seed=0
    )
    epochs = [_collect(ds) for _ in range(2)]
    for x, _ in epochs:
        assert x.shape == (32, 12, 12, 3) and x.dtype == np.float32
    # Match outputs to sources through an un-augmented pass with the same shuffle.
    plain = make_pipeline(
        images, batch_size=32, training=True, image_shape=(12, 12, 3), augment="none", seed=0
    )
    order = _collect(plain)[0]
    x, _ = epochs[0]
    assert all(_is_pad_crop_flip(x[i], order[i]) for i in range(32))
    assert sum(not np.array_equal(x[i], order[i]) for i in range(32)) > 16  # pixels changed
    assert not np.array_equal(epochs[0][0], epochs[1][0])
    # Evaluation ignores augmentation and is deterministic.
    ev = make_pipeline(
        images, batch_size=32, training=False, image_shape=(12, 12, 3), augment="cifar"
    )
    np.testing.assert_array_equal(_collect(ev)[0], images.images)


def test_imagenet_augmentation_in_memory() -> None:
    images = _memory(n=16, shape="20x24x3")
    ds = make_pipeline(
        images, batch_size=8, training=True, image_shape=(16, 16, 3), augment="imagenet"
    )
    x, _ = _collect(ds)
    assert x.shape == (16, 16, 16, 3) and x.min() >= 0 and x.max() <= 255


def test_resize_and_channels_match_inference() -> None:
    images = _memory(n=4, shape="28x28x1")
    ds = make_pipeline(images, batch_size=4, training=False, image_shape=(32, 32, 3))
    x, _ = _collect(ds)
    assert x.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    assert images.images is not None
    ref = resize_for_model(images.images[0], (32, 32, 1), "crop")[..., 0]
    assert np.abs(x[0, ..., 0] - ref).mean() < 2.0
    rgb = _memory(n=4, shape="8x8x3")
    gray, _ = _collect(make_pipeline(rgb, batch_size=4, training=False, image_shape=(8, 8, 1)))
    assert gray.shape == (4, 8, 8, 1)


def test_cifar_augmentation_on_resized_images() -> None:
    images = _memory(n=8, shape="28x28x1")
    ds = make_pipeline(
        images, batch_size=4, training=True, image_shape=(32, 32, 3), augment="cifar", repeat=True
    )
    batches = list(ds.take(5).as_numpy_iterator())  # repeat runs past one epoch
    assert len(batches) == 5 and batches[0][0].shape == (4, 32, 32, 3)


@pytest.fixture
def big_folder(tmp_path: Path) -> ImageSet:
    root = tmp_path / "big"
    write_class_folders(root, {"a": 3, "b": 3}, size=(140, 150), fmt="JPEG")
    (root / "b" / "cmyk.jpg").write_bytes(encode(colour_image(1, (140, 150)), "JPEG", "CMYK"))
    (root / "a" / "wide.png").write_bytes(encode(colour_image(0, (100, 260)), "PNG"))
    train = load_dataset(f"folder:{root}", cache_dir=tmp_path / "cache").splits["train"]
    assert train.paths is not None and len(train) == 8
    return train


@pytest.mark.parametrize("cache", [True, False])
def test_streamed_eval_is_deterministic(big_folder: ImageSet, cache: bool) -> None:
    ds = make_pipeline(
        big_folder, batch_size=3, training=False, image_shape=(32, 32, 3), cache=cache
    )
    x1, y1 = _collect(ds)
    x2, _ = _collect(ds)
    assert x1.shape == (8, 32, 32, 3) and x1.dtype == np.float32
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, big_folder.labels)
    # The streamed fit is the one inference uses (core.images.resize_for_model "crop").
    assert big_folder.paths is not None
    from PIL import Image

    ref = resize_for_model(
        np.asarray(Image.open(big_folder.paths[0]).convert("RGB")), (32, 32, 3), "crop"
    )
    assert np.abs(x1[0] - ref).mean() < 3.0


@pytest.mark.parametrize("augment", ["cifar", "imagenet", "none"])
def test_streamed_training(big_folder: ImageSet, augment: str) -> None:
    ds = make_pipeline(
        big_folder, batch_size=4, training=True, image_shape=(24, 24, 3), augment=augment, seed=5
    )
    x, y = _collect(ds)
    assert x.shape == (8, 24, 24, 3) and sorted(y.tolist()) == sorted(big_folder.labels.tolist())
    again = make_pipeline(
        big_folder, batch_size=4, training=True, image_shape=(24, 24, 3), augment=augment, seed=5
    )
    np.testing.assert_allclose(_collect(again)[0], x, atol=1e-3)


def test_file_broken_after_loading_is_dropped_not_fatal(
    big_folder: ImageSet, tmp_path: Path
) -> None:
    assert big_folder.paths is not None
    bad = tmp_path / "gone-bad.jpg"
    bad.write_bytes(b"\xff\xd8garbage")
    images = ImageSet(
        big_folder.class_names,
        False,
        np.append(big_folder.labels, 0),
        paths=[*big_folder.paths, str(bad)],
    )
    x, _ = _collect(make_pipeline(images, batch_size=4, training=False, image_shape=(16, 16, 3)))
    assert len(x) == 8


def test_multi_label_batches(tmp_path: Path) -> None:
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        p.write_bytes(encode(colour_image(i), "PNG"))
        paths.append(str(p))
    labels = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    images = ImageSet(["x", "y"], True, labels, paths=paths)
    x, y = _collect(make_pipeline(images, batch_size=2, training=True, image_shape=(8, 8, 3)))
    assert y.dtype == np.float32 and y.shape == (3, 2) and x.shape == (3, 8, 8, 3)


def test_pixel_statistics_streamed(big_folder: ImageSet) -> None:
    mean, std = pixel_statistics(big_folder, mode="per_channel", image_shape=(16, 16, 3))
    assert mean.shape == (3,) and std.shape == (3,) and 0 < mean.max() < 255


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="Unknown augmentation"):
        make_pipeline(
            _memory(), batch_size=2, training=True, image_shape=(8, 8, 3), augment="mixit"
        )
    with pytest.raises(ValueError, match="names no base transform"):  # a policy alone
        make_pipeline(
            _memory(), batch_size=2, training=True, image_shape=(8, 8, 3), augment="mixup"
        )
    with pytest.raises(ValueError, match="image_shape"):
        make_pipeline(_memory(), batch_size=2, training=True, image_shape=(8, 8, 2))


def test_ten_crop() -> None:
    x = np.arange(2 * 6 * 6 * 1, dtype=np.float32).reshape(2, 6, 6, 1)
    crops = np.asarray(ten_crop(x, 4))
    assert crops.shape == (2, 10, 4, 4, 1)
    np.testing.assert_array_equal(crops[:, 0], x[:, :4, :4])  # top-left
    np.testing.assert_array_equal(crops[:, 3], x[:, 2:, 2:])  # bottom-right
    np.testing.assert_array_equal(crops[:, 4], x[:, 1:5, 1:5])  # centre
    np.testing.assert_array_equal(crops[:, 9], x[:, 1:5, 1:5][:, :, ::-1])  # mirrored centre


def _epochs_of(images: ImageSet, epochs: range, **kw) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    ds = make_pipeline(images, batch_size=4, training=True, seed=3, epochs=epochs, **kw)
    return [x for x, _ in ds.as_numpy_iterator()]


@pytest.mark.parametrize("augment", ["none", "cifar", "imagenet"])
def test_an_epoch_depends_on_the_seed_and_its_number_alone(augment: str) -> None:
    """What exact resume rests on: epochs 2-3 of a run are the same batches whether the
    pipeline starts at epoch 0 or at epoch 2."""
    images = _memory(n=10, shape="8x8x3")
    whole = _epochs_of(images, range(4), image_shape=(8, 8, 3), augment=augment)
    assert len(whole) == 4 * 3  # 10 images in batches of 4, per epoch: no batch spans two
    resumed = _epochs_of(images, range(2, 4), image_shape=(8, 8, 3), augment=augment)
    assert len(resumed) == len(whole[6:])
    for a, b in zip(resumed, whole[6:], strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.concatenate(whole[:3]), np.concatenate(whole[3:6]))


@pytest.mark.parametrize(
    ("augment", "cache"), [("cifar", True), ("none", False), ("imagenet", True)]
)
def test_streamed_epochs_depend_on_the_seed_and_their_number_alone(
    big_folder: ImageSet, augment: str, cache: bool
) -> None:
    kw = {"image_shape": (24, 24, 3), "augment": augment, "cache": cache}
    whole = _epochs_of(big_folder, range(3), **kw)
    resumed = _epochs_of(big_folder, range(1, 3), **kw)
    assert len(whole) == 3 * 2 and len(resumed) == 2 * 2
    for a, b in zip(resumed, whole[2:], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-3)


def test_repeat_and_epochs_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="exclude"):
        make_pipeline(
            _memory(), batch_size=2, training=True, image_shape=(8, 8, 3), repeat=True,
            epochs=range(2),
        )  # fmt: skip
