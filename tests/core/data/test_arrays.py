"""CIFAR python-version batches, IDX files and synthetic data."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from core.data import DataError, load_dataset


def _cifar_batch(n: int, label_key: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"batch",
        label_key.encode(): [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def write_cifar10(path: Path, *, per_batch: int = 4) -> dict[str, dict]:
    """A real-format cifar-10-python.tar.gz (pickled dicts of bytes keys, protocol 2)."""
    batches = {f"data_batch_{i}": _cifar_batch(per_batch, "labels", i) for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(per_batch, "labels", 9)
    classes = ["airplane", "automobile", "bird", "cat", "deer"]
    classes += ["dog", "frog", "horse", "ship", "truck"]
    names = [n.encode() for n in classes]
    batches["batches.meta"] = {b"label_names": names, b"num_vis": 3072}
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in batches.items():
            data = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return batches


def test_cifar10_tarball(tmp_path: Path) -> None:
    batches = write_cifar10(tmp_path / "cifar-10-python.tar.gz")
    ds = load_dataset(f"cifar10:{tmp_path / 'cifar-10-python.tar.gz'}", cache_dir=tmp_path)
    assert ds.kind == "cifar10" and ds.class_names[0] == "airplane" and len(ds.class_names) == 10
    train, test = ds.splits["train"], ds.splits["test"]
    assert len(train) == 20 and len(test) == 4
    assert train.images is not None and train.images.shape == (20, 32, 32, 3)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    # CIFAR rows are channel-planar: 1024 red, then green, then blue.
    row = batches["data_batch_1"][b"data"][0]
    np.testing.assert_array_equal(train.images[0, :, :, 1], row[1024:2048].reshape(32, 32))
    assert train.labels[0] == batches["data_batch_1"][b"labels"][0]
    assert sum(train.counts().values()) == 20


def test_cifar10_extracted_folder_and_grayscale(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "c.tar.gz")
    with tarfile.open(tmp_path / "c.tar.gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    ds = load_dataset(f"cifar10:{tmp_path / 'x'}", channels=1)
    assert ds.splits["train"].image_shape == (32, 32, 1)


def test_cifar100(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    objs = {
        "train": {
            b"fine_labels": [0, 99, 5],
            b"coarse_labels": [0, 1, 2],
            b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8),
        },
        "test": {
            b"fine_labels": [1],
            b"coarse_labels": [0],
            b"data": rng.integers(0, 256, (1, 3072), dtype=np.uint8),
        },
        "meta": {
            b"fine_label_names": [f"c{i}".encode() for i in range(100)],
            b"coarse_label_names": [b"x"] * 20,
        },
    }
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, obj in objs.items():
        (folder / name).write_bytes(pickle.dumps(obj, protocol=2))
    ds = load_dataset(f"cifar100:{tmp_path}")
    assert len(ds.class_names) == 100 and ds.splits["train"].labels.tolist() == [0, 99, 5]


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned",))


def test_cifar_pickle_cannot_run_code(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "c.tar.gz")
    with tarfile.open(tmp_path / "c.tar.gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    bad = tmp_path / "x" / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(pickle.dumps({b"data": _Evil()}))
    with pytest.raises(DataError, match=r"data_batch_3.*refusing"):
        load_dataset(f"cifar10:{tmp_path / 'x'}")


def test_cifar_missing_members(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "c.tar.gz", "w:gz"):
        pass
    with pytest.raises(DataError, match="missing data_batch_1"):
        load_dataset(f"cifar10:{tmp_path / 'c.tar.gz'}")


def _idx(arr: np.ndarray) -> bytes:
    return (
        struct.pack(">BBBB", 0, 0, 0x08, arr.ndim)
        + struct.pack(f">{arr.ndim}I", *arr.shape)
        + arr.astype(np.uint8).tobytes()
    )


def write_idx(folder: Path, *, gz: bool, n: int = 6, dot_names: bool = False) -> np.ndarray:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    y = (np.arange(n) % 10).astype(np.uint8)
    sep = "." if dot_names else "-"
    for prefix in ("train", "t10k"):
        for what, arr, nd in (("images", x, 3), ("labels", y, 1)):
            name = f"{prefix}-{what}{sep}idx{nd}-ubyte"
            data = _idx(arr)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return x


@pytest.mark.parametrize("gz", [True, False])
def test_idx_fashion(tmp_path: Path, gz: bool) -> None:
    x = write_idx(tmp_path / "fashion-mnist", gz=gz)
    ds = load_dataset(f"idx:{tmp_path / 'fashion-mnist'}")
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    train = ds.splits["train"]
    assert train.images is not None and train.images.shape == (6, 28, 28, 1)
    np.testing.assert_array_equal(train.images[..., 0], x)
    assert set(ds.splits) == {"train", "test"}


def test_idx_mnist_digits_and_rgb(tmp_path: Path) -> None:
    write_idx(tmp_path / "mnist", gz=False, dot_names=True)
    ds = load_dataset(f"idx:{tmp_path / 'mnist'}", channels=3)
    assert ds.class_names == [str(i) for i in range(10)]
    assert ds.splits["train"].image_shape == (28, 28, 3)


def test_idx_truncated(tmp_path: Path) -> None:
    write_idx(tmp_path / "m", gz=False)
    f = tmp_path / "m" / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(DataError, match="truncated"):
        load_dataset(f"idx:{tmp_path / 'm'}")


def test_synthetic_is_deterministic_and_learnable() -> None:
    a = load_dataset("synthetic:200:8x8x3:4")
    b = load_dataset("synthetic:200:8x8x3:4")
    ta, tb = a.splits["train"], b.splits["train"]
    assert ta.images is not None and tb.images is not None
    np.testing.assert_array_equal(ta.images, tb.images)
    assert ta.counts() == {f"class_{i}": 50 for i in range(4)}
    # Nearest class mean on held-out images beats chance (25%) by far.
    x = ta.images.reshape(200, -1, 3).mean(axis=1)
    means = np.stack([x[:100][ta.labels[:100] == k].mean(0) for k in range(4)])
    pred = np.argmin(((x[100:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == ta.labels[100:]).mean() > 0.9
    other = load_dataset("synthetic:200:8x8x3:4:7").splits["train"]
    assert other.images is not None and not np.array_equal(other.images, ta.images)


@pytest.mark.parametrize("spec", ["synthetic:10:8x8:2", "synthetic:0:8x8x3:2", "synthetic:x"])
def test_synthetic_malformed(spec: str) -> None:
    with pytest.raises(ValueError, match=r"[Ss]ynthetic"):
        load_dataset(spec)
