"""PyTorch ``.pth`` state dicts read without PyTorch, and without running the file's code.

Since PyTorch 1.6, ``torch.save`` writes a zip: ``<archive>/data.pkl`` (a pickle of the state
dict, whose tensors point at storages by key) and ``<archive>/data/<key>`` (each storage's raw
bytes). A pickle can call any importable function, so the state dict is unpickled here with an
allow-list, as ``torch.load(weights_only=True)`` does: an ``OrderedDict``, PyTorch's tensor and
parameter rebuild functions (mapped to functions of this module that only record the tensor's
storage, offset, shape and strides) and the storage types (mapped to NumPy dtypes). Any other
global refuses the file before anything is built from it.

The legacy format (before PyTorch 1.6: not a zip) is refused with how to convert it.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.models.weights.tensors import StoredTensor, WeightsFileError, bfloat16_to_float32

# PyTorch's storage classes → the dtype of their elements (BFloat16 widened on load).
STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "BFloat16Storage": "u2",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}
# A ResNet-152 state dict's pickle is about 100 kB; the API reads it to check init_from.
MAX_PICKLE_BYTES = 16 * 1024 * 1024
CONVERT_HINT = (
    "convert it where PyTorch is installed: "
    "`save_file(torch.load(PATH, weights_only=True), 'weights.safetensors')` "
    "(save_file from safetensors.torch)"
)


@dataclass(frozen=True)
class _StorageType:
    name: str


@dataclass(frozen=True)
class _Storage:
    key: str
    kind: str  # a key of STORAGE_DTYPES


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(
    storage: Any, storage_offset: Any, size: Any, stride: Any, *_: Any, **__: Any
) -> _TensorRef:
    """Stands in for ``torch._utils._rebuild_tensor(_v2)``: records, builds nothing."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor without a storage")
    if not (_naturals(size) and _naturals(stride) and _naturals((storage_offset,))):
        raise pickle.UnpicklingError(f"a tensor of size {size!r} and stride {stride!r}")
    if len(size) != len(stride):
        raise pickle.UnpicklingError(f"size {size!r} and stride {stride!r} differ in length")
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, *_: Any, **__: Any) -> Any:
    """Stands in for ``torch._utils._rebuild_parameter``: a parameter is its tensor."""
    return data


def _naturals(values: Any) -> bool:
    return isinstance(values, tuple | list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values
    )


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _StateDictUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"it refers to {module}.{name}, which a state dict of tensors does not need"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"an unknown persistent reference {pid!r:.80}")
        storage_type, key = pid[1], pid[2]
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise pickle.UnpicklingError(f"an unknown storage {pid!r:.80}")
        return _Storage(key, storage_type.name)


def read_pth(path: str | Path) -> dict[str, StoredTensor]:
    """The tensors of a PyTorch zip state dict, by name; values are read on ``load()``.

    A state dict nested under ``"state_dict"`` or ``"model"`` (training checkpoints) is found
    too, and a ``module.`` prefix (DataParallel) is dropped.

    Raises:
        WeightsFileError: the legacy format, a pickle that needs anything but tensors, or
            tensors that do not fit their storage.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise WeightsFileError(
            f"{path.name}: not a zip, so not a PyTorch (1.6 or later) state dict; if it is an "
            f"older PyTorch file, {CONVERT_HINT}"
        )
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise WeightsFileError(f"{path.name}: a zip without exactly one <archive>/data.pkl")
        prefix = pickles[0][: -len("data.pkl")]
        little = _little_endian(archive, prefix)
        if archive.getinfo(pickles[0]).file_size > MAX_PICKLE_BYTES:
            raise WeightsFileError(
                f"{path.name}: a data.pkl of over {MAX_PICKLE_BYTES} bytes is no state dict"
            )
        pickled = archive.read(pickles[0])
    try:
        state = _StateDictUnpickler(io.BytesIO(pickled)).load()
    except Exception as exc:  # any failure of an untrusted pickle is a refusal
        raise WeightsFileError(f"{path.name}: refused: {exc}; {CONVERT_HINT}") from None
    state = _unwrap(state)
    tensors = {}
    for name, ref in state.items():
        if isinstance(ref, _TensorRef):
            tensors[_strip_module(str(name))] = StoredTensor(
                ref.shape, _reader(path, f"{prefix}data/{ref.storage.key}", ref, little=little)
            )
    if not tensors:
        raise WeightsFileError(f"{path.name}: no tensors in the state dict")
    return tensors


def looks_like_pth(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/data.pkl") for n in archive.namelist())


def _little_endian(archive: zipfile.ZipFile, prefix: str) -> bool:
    try:
        return archive.read(f"{prefix}byteorder").strip() != b"big"
    except KeyError:
        return True  # written before PyTorch recorded it: little-endian


def _unwrap(state: Any) -> dict[Any, Any]:
    if not isinstance(state, dict):
        raise WeightsFileError(f"the pickle holds a {type(state).__name__}, not a state dict")
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            return state[key]
    return state


def _strip_module(name: str) -> str:
    return name[len("module.") :] if name.startswith("module.") else name


def _reader(path: Path, member: str, ref: _TensorRef, *, little: bool) -> Any:
    kind = ref.storage.kind
    dtype = np.dtype(("<" if little else ">") + STORAGE_DTYPES[kind])

    def read() -> np.ndarray:
        try:
            with zipfile.ZipFile(path) as archive:
                raw = archive.read(member)
        except KeyError:
            raise WeightsFileError(f"storage {ref.storage.key!r} is missing") from None
        if len(raw) % dtype.itemsize:
            raise WeightsFileError(f"storage {ref.storage.key!r} is not whole {kind} elements")
        storage = np.frombuffer(raw, dtype=dtype)
        array = _view(storage, ref)
        if kind == "BFloat16Storage":
            return bfloat16_to_float32(array.astype("<u2"))
        return array.astype(dtype.newbyteorder("="))

    return read


def _view(storage: np.ndarray, ref: _TensorRef) -> np.ndarray:
    """The tensor's elements, checked to lie inside the storage before any strided read."""
    if math.prod(ref.shape) == 0:
        return np.zeros(ref.shape, storage.dtype)
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride, strict=True))
    if last >= storage.size:
        raise WeightsFileError(
            f"a tensor of shape {ref.shape} at offset {ref.offset} reaches past its storage of "
            f"{storage.size} elements"
        )
    item = storage.itemsize
    return np.lib.stride_tricks.as_strided(
        storage[ref.offset :],
        shape=ref.shape,
        strides=tuple(s * item for s in ref.stride),
        writeable=False,
    ).copy()
