"""The ``.safetensors`` format, read and written with NumPy alone (the ``safetensors`` package is
not needed).

A file is: 8 bytes, the little-endian length N of a JSON header; N bytes of header,
``{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}}``;
then the tensors' raw little-endian bytes, each at its offsets relative to the end of the header.
Nothing in it is executed, which is why torchvision weights are best handed over in it.

Every header entry is checked before a byte is read: a known dtype, a shape of non-negative
integers, offsets inside the file and of exactly the shape's size, no two tensors overlapping.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from core.models.weights.tensors import StoredTensor, WeightsFileError, bfloat16_to_float32

# dtype names of the format → NumPy's (BF16 is read as uint16 and widened to float32).
DTYPES: dict[str, str] = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}
# (kind, itemsize) of a NumPy dtype → the format's name, for writing.
_CODES = {(np.dtype(v).kind, np.dtype(v).itemsize): k for k, v in DTYPES.items() if k != "BF16"}
# The reference implementation refuses headers over 100 MB; a ResNet-152's is about 60 kB, and
# the API reads headers to check init_from: a smaller bound.
MAX_HEADER_BYTES = 16 * 1024 * 1024
METADATA = "__metadata__"


def read_safetensors(path: str | Path) -> dict[str, StoredTensor]:
    """The tensors of a ``.safetensors`` file, by name; each is read from disk on ``load()``.

    Raises:
        WeightsFileError: not a safetensors file, or a header entry that does not fit the file.
    """
    path = Path(path)
    header, data_start = read_header(path)
    size = path.stat().st_size - data_start
    tensors: dict[str, StoredTensor] = {}
    spans = []
    for name, entry in header.items():
        if name == METADATA:
            continue
        dtype, shape, (begin, end) = _checked_entry(name, entry, size)
        spans.append((begin, end, name))
        tensors[name] = StoredTensor(
            shape, _reader(path, data_start + begin, dtype, shape, bf16=entry["dtype"] == "BF16")
        )
    spans.sort()
    for (_, end, first), (begin, _, second) in itertools.pairwise(spans):
        if begin < end:
            raise WeightsFileError(f"{path.name}: tensors {first!r} and {second!r} overlap")
    return tensors


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header and the offset where the tensors' bytes begin."""
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise WeightsFileError(f"{path.name}: too short for a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES or length > path.stat().st_size - 8:
            raise WeightsFileError(f"{path.name}: not a safetensors file (header length {length})")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WeightsFileError(f"{path.name}: not a safetensors file (no JSON header)") from None
    if not isinstance(header, dict):
        raise WeightsFileError(f"{path.name}: the safetensors header is not a JSON object")
    return header, 8 + length


def looks_like_safetensors(path: Path) -> bool:
    """Whether the file starts as a safetensors file does (a length, then ``{``)."""
    with path.open("rb") as f:
        prefix = f.read(9)
    if len(prefix) < 9 or prefix[8:9] != b"{":
        return False
    (length,) = struct.unpack("<Q", prefix[:8])
    return length <= min(MAX_HEADER_BYTES, path.stat().st_size - 8)


def _checked_entry(
    name: str, entry: Any, size: int
) -> tuple[np.dtype[Any], tuple[int, ...], tuple[int, int]]:
    if not isinstance(entry, dict) or entry.get("dtype") not in DTYPES:
        raise WeightsFileError(
            f"tensor {name!r}: dtype {entry.get('dtype') if isinstance(entry, dict) else entry!r} "
            f"is not one of {', '.join(DTYPES)}"
        )
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not (isinstance(shape, list) and all(_natural(d) for d in shape)):
        raise WeightsFileError(f"tensor {name!r}: shape {shape!r} is not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_natural, offsets))):
        raise WeightsFileError(f"tensor {name!r}: data_offsets {offsets!r} are not two offsets")
    dtype = np.dtype(DTYPES[entry["dtype"]])
    begin, end = offsets
    if not begin <= end <= size or end - begin != math.prod(shape) * dtype.itemsize:
        raise WeightsFileError(
            f"tensor {name!r}: bytes [{begin}, {end}) do not hold a {entry['dtype']} tensor of "
            f"shape {shape} inside the file's {size} bytes of data"
        )
    return dtype, tuple(shape), (begin, end)


def _natural(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _reader(
    path: Path, offset: int, dtype: np.dtype[Any], shape: tuple[int, ...], *, bf16: bool
) -> Any:
    def read() -> np.ndarray:
        with path.open("rb") as f:
            f.seek(offset)
            array = np.fromfile(f, dtype=dtype, count=math.prod(shape)).reshape(shape)
        return bfloat16_to_float32(array) if bf16 else array.astype(dtype.newbyteorder("="))

    return read


def write_safetensors(
    path: str | Path,
    tensors: Mapping[str, np.ndarray],
    *,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``tensors`` (any of the format's dtypes but BF16) as a ``.safetensors`` file.

    The header is padded with spaces to a multiple of 8 bytes, as the reference writer does, so
    every tensor starts aligned.
    """
    path = Path(path)
    header: dict[str, Any] = {}
    if metadata:
        header[METADATA] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name, value in tensors.items():
        array = np.asarray(value, order="C")  # ascontiguousarray would make a scalar 1-D
        code = _CODES.get((array.dtype.kind, array.dtype.itemsize))
        if code is None:
            raise ValueError(f"tensor {name!r}: dtype {array.dtype} has no safetensors name")
        data = array.astype(DTYPES[code], copy=False).tobytes()
        header[name] = {
            "dtype": code,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)
    return path
