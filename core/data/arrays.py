"""Sources that hold pixels as arrays: CIFAR's pickled batches, IDX files, synthetic images."""

from __future__ import annotations

import gzip
import pickle
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from core.data.files import cache_root, download
from core.data.types import DataError, Dataset, ImageSet


@dataclass(frozen=True)
class CifarSpec:
    url: str
    md5: str
    folder: str  # the top folder inside the tarball
    train: tuple[str, ...]
    test: str
    meta: str
    names_key: bytes
    labels_key: bytes


CIFAR: dict[str, CifarSpec] = {
    "cifar10": CifarSpec(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test="test_batch",
        meta="batches.meta",
        names_key=b"label_names",
        labels_key=b"labels",
    ),
    "cifar100": CifarSpec(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        train=("train",),
        test="test",
        meta="meta",
        names_key=b"fine_label_names",
        labels_key=b"fine_labels",
    ),
}

# The largest batch a CIFAR tarball may hold (read into memory).
CIFAR_MAX_MEMBER_BYTES = 256 << 20
# The only globals CIFAR's pickles need: numpy arrays and Python 2 strings. Anything else (a
# pickle that would run code) is refused, so a user-supplied tarball cannot execute anything.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(f: IO[bytes], name: str) -> dict[bytes, Any]:
    try:
        obj = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as exc:  # any malformed pickle is a data error, never a crash
        raise DataError(f"{name}: not a CIFAR batch ({exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{name}: not a CIFAR batch (a {type(obj).__name__}, not a dict)")
    return {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}


def load_cifar(
    kind: str, path: Path | None, *, channels: int | None, cache_dir: str | Path | None
) -> Dataset:
    """CIFAR-10/100, python version: the tarball, its extracted folder, or downloaded.

    Args:
        kind: ``cifar10`` or ``cifar100``.
        path: the ``.tar.gz`` or a folder holding (or being) its top folder; None downloads
            the official tarball into the cache, checking its MD5.
        channels: 3 (native) or 1 (converted to grayscale).
        cache_dir: where a download goes.
    """
    spec = CIFAR[kind]
    if path is None:
        path = download(spec.url, cache_root(cache_dir) / Path(spec.url).name, md5=spec.md5)
    members = (*spec.train, spec.test, spec.meta)
    batches: dict[str, dict[bytes, Any]] = {}
    if path.is_file():
        try:
            with tarfile.open(path) as tar:
                for m in tar:
                    base = m.name.rsplit("/", 1)[-1]
                    if m.isfile() and base in members and base not in batches:
                        if m.size > CIFAR_MAX_MEMBER_BYTES:  # CIFAR-100's train is 155 MB
                            raise DataError(f"{path.name}: member {m.name!r} is absurdly large")
                        f = tar.extractfile(m)
                        if f is not None:
                            batches[base] = _unpickle(f, f"{path.name}:{m.name}")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(f"{path.name}: not a readable tar archive ({exc})") from None
    else:
        folder = path / spec.folder if (path / spec.folder).is_dir() else path
        for base in members:
            if (folder / base).is_file():
                with (folder / base).open("rb") as f:
                    batches[base] = _unpickle(f, str(folder / base))
    missing = [m for m in members if m not in batches]
    if missing:
        raise DataError(
            f"{path}: not a {kind} python-version dataset; missing {', '.join(missing)}"
        )
    try:
        class_names = [
            n.decode() if isinstance(n, bytes) else str(n)
            for n in batches[spec.meta][spec.names_key]
        ]
    except KeyError:
        raise DataError(f"{path}: {spec.meta} has no {spec.names_key.decode()}") from None

    def split(names: tuple[str, ...]) -> ImageSet:
        xs, ys = [], []
        for n in names:
            b = batches[n]
            try:
                x = np.asarray(b[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                y = np.asarray(b[spec.labels_key], dtype=np.int64)
            except (KeyError, ValueError) as exc:
                raise DataError(f"{path}: batch {n} is malformed ({exc})") from None
            if len(x) != len(y) or (len(y) and (y.min() < 0 or y.max() >= len(class_names))):
                raise DataError(f"{path}: batch {n} has inconsistent labels")
            xs.append(x.transpose(0, 2, 3, 1))
            ys.append(y)
        images = _to_channels(np.concatenate(xs), channels or 3)
        return ImageSet(
            class_names, False, np.concatenate(ys), images=images, image_shape=images.shape[1:]
        )

    return Dataset(
        kind,
        kind,
        class_names,
        False,
        {"train": split(spec.train), "test": split((spec.test,))},
        [],
    )


def _to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    c = images.shape[-1]
    if c == channels:
        return images
    if channels == 1:  # ITU-R 601-2 luma, as Pillow's convert("L")
        gray = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.clip(np.rint(gray), 0, 255).astype(np.uint8)[..., None]
    return np.repeat(images, channels, axis=-1)


FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_MAX_BYTES = 4 << 30


def _idx_header(f: IO[bytes], path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    head = f.read(4)
    if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _IDX_DTYPES:
        raise DataError(f"{path.name}: not an IDX file (bad magic number)")
    ndim = head[3]
    dims = np.frombuffer(f.read(4 * ndim), dtype=">u4").astype(np.int64)
    dtype = np.dtype(_IDX_DTYPES[head[2]])
    if len(dims) != ndim:
        raise DataError(f"{path.name}: truncated IDX header")
    nbytes = int(np.prod(dims)) * dtype.itemsize
    if nbytes > _IDX_MAX_BYTES:
        raise DataError(f"{path.name}: IDX file declares an absurd size ({nbytes} bytes)")
    return dtype, tuple(int(d) for d in dims)


def _open_idx(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def read_idx_header(path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """An IDX file's element type and shape, from its header alone."""
    try:
        with _open_idx(path) as f:
            return _idx_header(f, path)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path.name}: unreadable IDX file ({exc})") from None


def count_idx_labels(path: Path, *, expected: int) -> np.ndarray:
    """Per-label counts of a 1-D IDX labels file, read in blocks (memory stays constant).

    Raises:
        DataError: not a 1-D IDX file of ``expected`` integer labels, or truncated.
    """
    counts = np.zeros(0, np.int64)
    seen = 0
    try:
        with _open_idx(path) as f:
            dtype, dims = _idx_header(f, path)
            if len(dims) != 1 or dims[0] != expected or dtype.kind not in "iu":
                raise DataError(f"{path.name}: expected {expected} integer labels, got {dims}")
            block = 1 << 20
            while seen < expected:
                data = f.read(min(block, expected - seen) * dtype.itemsize)
                if not data:
                    break
                labels = np.frombuffer(data, dtype=dtype)
                if labels.min() < 0 or labels.max() > 1_000_000:
                    raise DataError(f"{path.name}: labels outside 0..1000000")
                here = np.bincount(labels.astype(np.int64))
                if len(here) > len(counts):
                    counts = np.pad(counts, (0, len(here) - len(counts)))
                counts[: len(here)] += here
                seen += len(labels)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path.name}: unreadable IDX file ({exc})") from None
    if seen != expected:
        raise DataError(f"{path.name}: truncated: {seen} of {expected} labels")
    return counts


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (gzipped or not) as an array of its declared type and shape."""
    try:
        with _open_idx(path) as f:
            dtype, dims = _idx_header(f, path)
            nbytes = int(np.prod(dims)) * dtype.itemsize
            data = f.read(nbytes)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path.name}: unreadable IDX file ({exc})") from None
    if len(data) != nbytes:
        raise DataError(f"{path.name}: truncated: {len(data)} of {nbytes} bytes")
    return np.frombuffer(data, dtype=dtype).reshape(tuple(dims))


def idx_files(folder: Path) -> dict[str, tuple[Path, Path]]:
    """``{split: (images file, labels file)}`` of an IDX folder (train required, test optional)."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (expected IDX files)")
    found = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images_file = _idx_file(folder, prefix, "images", 3)
        labels_file = _idx_file(folder, prefix, "labels", 1)
        if images_file is None or labels_file is None:
            if split == "train":
                raise DataError(
                    f"{folder}: missing train-images-idx3-ubyte(.gz) or "
                    "train-labels-idx1-ubyte(.gz)"
                )
            continue
        found[split] = (images_file, labels_file)
    return found


def idx_class_names(k: int, *, fashion: bool) -> list[str]:
    """The MNIST family has ten classes even when a small file misses some; EMNIST has more."""
    k = max(10, k)
    return FASHION_MNIST_CLASSES if fashion and k == 10 else [str(i) for i in range(k)]


def _idx_file(folder: Path, prefix: str, what: str, ndim: int) -> Path | None:
    for sep in ("-", "."):
        for gz in (".gz", ""):
            p = folder / f"{prefix}-{what}{sep}idx{ndim}-ubyte{gz}"
            if p.is_file():
                return p
    return None


def load_idx(
    folder: Path, *, name: str, channels: int | None, fashion: bool | None = None
) -> Dataset:
    """MNIST-style IDX files: train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte, t10k-*.

    Class names are Fashion-MNIST's when ``fashion`` is true, or (when None) the folder's name
    says "fashion"; else digits.
    """
    if fashion is None:
        fashion = "fashion" in folder.name.lower()
    splits = {}
    for split, (images_file, labels_file) in idx_files(folder).items():
        x, y = read_idx(images_file), read_idx(labels_file)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{folder}: {images_file.name} and {labels_file.name} do not match")
        x = np.ascontiguousarray(x.astype(np.uint8)[..., None])
        images = _to_channels(x, channels or 1)
        splits[split] = ImageSet(
            [], False, y.astype(np.int64), images=images, image_shape=images.shape[1:]
        )
    k = max(int(s.labels.max(initial=-1)) for s in splits.values()) + 1
    class_names = idx_class_names(k, fashion=fashion)
    for s in splits.values():
        s.class_names = class_names
    return Dataset(name, "idx", class_names, False, splits, [])


_SYNTHETIC = re.compile(r"^(\d+):(\d+)x(\d+)x([13]):(\d+)(?::(\d+))?$")
_SYNTHETIC_MAX_BYTES = 1 << 30


def parse_synthetic(spec: str) -> tuple[int, int, int, int, int, int]:
    """``N:HxWxC:K[:SEED]`` → ``(n, h, w, c, k, seed)``, checked.

    Raises:
        ValueError: malformed, not positive, or more than 1 GiB of pixels.
    """
    m = _SYNTHETIC.match(spec)
    if not m:
        raise ValueError(f"Synthetic source must be 'synthetic:N:HxWxC:K[:SEED]'; got {spec!r}")
    n, h, w, c, k = (int(g) for g in m.groups()[:5])
    seed = int(m.group(6) or 0)
    if n < 1 or k < 1 or h < 1 or w < 1:
        raise ValueError(f"Synthetic sizes must be positive; got {spec!r}")
    if n * h * w * c > _SYNTHETIC_MAX_BYTES:
        raise ValueError(f"Synthetic data of {n}x{h}x{w}x{c} bytes is too large")
    return n, h, w, c, k, seed


def synthetic_counts(n: int, k: int) -> list[int]:
    """Images per class of :func:`load_synthetic`: ``n`` spread evenly, the first classes
    taking the remainder (its labels are a permutation of ``arange(n) % k``)."""
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def load_synthetic(spec: str) -> Dataset:
    """``N:HxWxC:K[:SEED]``: N images, K balanced classes, each class its own mean colour.

    Deterministic from the seed (0 by default) and learnable: the class shows in the pixels.
    """
    n, h, w, c, k, seed = parse_synthetic(spec)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % k).astype(np.int64)
    colours = rng.uniform(30, 225, size=(k, c)).astype(np.float32)
    noise = rng.normal(0.0, 25.0, size=(n, h, w, c)).astype(np.float32)
    images = np.clip(np.rint(colours[labels][:, None, None, :] + noise), 0, 255).astype(np.uint8)
    class_names = [f"class_{i}" for i in range(k)]
    train = ImageSet(class_names, False, labels, images=images, image_shape=(h, w, c))
    return Dataset(f"synthetic:{spec}", "synthetic", class_names, False, {"train": train}, [])
