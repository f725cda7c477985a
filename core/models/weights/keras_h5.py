"""Keras' weight files, read with h5py alone (no TensorFlow), in their three layouts.

- **Named** (Keras 2's ``save_weights("x.h5")``, the files Keras publishes for
  ``keras.applications``): a group per layer, listed in the root's ``layer_names``, each naming
  its datasets in ``weight_names`` (``conv1_conv/kernel:0``). Tensors are returned as
  ``"conv1_conv/kernel"``. A whole-model ``.h5`` keeps the same under ``model_weights``.
- **Positional** (Keras 3's ``save_weights("x.weights.h5")``): ``layers/<class>_<n>/vars/<i>``,
  the n-th layer of that class in the model's layer order. Layer names are not stored: only the
  model that wrote the file can name its tensors (:mod:`core.models.weights.importer` builds the
  Keras applications model for that); here they are returned under their paths.
- **A ``.keras`` model**: a zip of ``config.json`` and a positional ``model.weights.h5``. The
  config lists the layers in order with their classes, which names every path: tensors are
  returned as ``"<layer name>/<index>"``.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core.models.weights.tensors import StoredTensor, WeightsFileError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def looks_like_hdf5(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(8) == HDF5_SIGNATURE


def looks_like_keras_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
    return {"config.json", "model.weights.h5"} <= names


def h5_layout(path: Path) -> str:
    """``"named"`` or ``"positional"``: which of Keras' layouts an HDF5 file holds."""
    import h5py

    with h5py.File(path, "r") as f:
        root = f.get("model_weights", f)
        if "layer_names" in root.attrs:
            return "named"
        if "layers" in f:
            return "positional"
    raise WeightsFileError(f"{path.name}: an HDF5 file, but not one Keras wrote weights into")


def read_named_h5(path: str | Path) -> dict[str, StoredTensor]:
    """A Keras 2 / legacy weights file's tensors as ``"layer/weight"`` (``conv1_conv/kernel``)."""
    import h5py

    path = Path(path)
    tensors: dict[str, StoredTensor] = {}
    with h5py.File(path, "r") as f:
        base = "model_weights/" if "model_weights" in f else ""
        root = f[base] if base else f
        for layer in map(_text, root.attrs.get("layer_names", [])):
            group = root[layer]
            for weight in map(_text, group.attrs.get("weight_names", [])):
                dataset = group[weight]
                # "conv1_conv/kernel:0" (Keras 2) or "conv1_conv/kernel" (Keras 3's writer)
                short = weight.rsplit("/", 1)[-1].split(":", 1)[0]
                tensors[f"{layer}/{short}"] = StoredTensor(
                    tuple(dataset.shape), _dataset_reader(path, f"{base}{layer}/{weight}")
                )
    return tensors


def read_positional_h5(path: str | Path) -> dict[str, StoredTensor]:
    """A Keras 3 ``.weights.h5`` file's tensors under their paths (``layers/conv2d_3/vars/0``)."""
    import h5py

    path = Path(path)
    tensors: dict[str, StoredTensor] = {}
    with h5py.File(path, "r") as f:

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                tensors[name] = StoredTensor(tuple(obj.shape), _dataset_reader(path, name))

        f.visititems(visit)
    return tensors


def _dataset_reader(path: Path, name: str) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        import h5py

        with h5py.File(path, "r") as f:
            return np.asarray(f[name])

    return read


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- .keras archives ------------------------------------------------------------------------


def keras_archive_config(path: str | Path) -> dict[str, Any]:
    """The model config (``config.json``) of a ``.keras`` file."""
    with zipfile.ZipFile(path) as archive:
        try:
            config = json.loads(archive.read("config.json"))
        except (KeyError, ValueError):
            raise WeightsFileError(f"{Path(path).name}: no readable config.json") from None
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise WeightsFileError(f"{Path(path).name}: config.json is not a Keras model config")
    return config


def model_layers(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The layer entries of a functional model's config, in the model's layer order."""
    layers = config["config"].get("layers")
    if not isinstance(layers, list):
        raise WeightsFileError("the .keras model is not a functional model (no layer list)")
    return [entry for entry in layers if isinstance(entry, dict)]


def read_keras_archive(path: str | Path) -> dict[str, StoredTensor]:
    """A ``.keras`` model's weights as ``"<layer name>/<index>"``, named through its config.

    Keras 3 stores the n-th layer of class C (in layer order) as ``layers/<c>_<n>`` with
    ``<c>`` the class name in snake case (the first one without ``_0``): the config's layer
    list gives both, so no model needs building to name the weights.
    """
    path = Path(path)
    config = keras_archive_config(path)
    paths: dict[str, str] = {}
    seen: dict[str, int] = {}
    for entry in model_layers(config):
        key = _snake_case(str(entry.get("class_name", "")))
        seen[key] = seen.get(key, -1) + 1
        stored = key if seen[key] == 0 else f"{key}_{seen[key]}"
        name = entry.get("name") or entry.get("config", {}).get("name")
        paths[f"layers/{stored}"] = str(name)

    tensors: dict[str, StoredTensor] = {}
    for stored_name, shape in _archive_shapes(path).items():
        parts = stored_name.split("/")  # layers/<stored>/vars/<i>
        if len(parts) != 4 or parts[2] != "vars" or "/".join(parts[:2]) not in paths:
            continue
        name = f"{paths['/'.join(parts[:2])]}/{parts[3]}"
        tensors[name] = StoredTensor(shape, _archive_reader(path, stored_name))
    return tensors


class _Window(io.RawIOBase):
    """The bytes ``[start, start + size)`` of a file, as a file: an uncompressed zip member
    read in place (h5py reads only what it needs, seeking freely), never copied whole."""

    def __init__(self, path: Path, start: int, size: int) -> None:
        self._file = path.open("rb")
        self._start, self._size, self._pos = start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        want = max(0, min(len(buffer), self._size - self._pos))
        self._file.seek(self._start + self._pos)
        data = self._file.read(want)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        self._file.close()
        super().close()


def _archive_h5(path: Path) -> Any:
    """``model.weights.h5`` inside a ``.keras`` zip, opened where it lies (Keras stores it
    uncompressed; a compressed one is refused rather than inflated in memory)."""
    import h5py

    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("model.weights.h5")
        if info.compress_type != zipfile.ZIP_STORED:
            raise WeightsFileError(
                f"{path.name}: model.weights.h5 is compressed, which Keras never does"
            )
        with path.open("rb") as f:  # the data follow the member's local header
            f.seek(info.header_offset)
            local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            raise WeightsFileError(f"{path.name}: a zip whose model.weights.h5 is unreadable")
        name_length, extra_length = (
            int.from_bytes(local[26:28], "little"),
            int.from_bytes(local[28:30], "little"),
        )
        start = info.header_offset + 30 + name_length + extra_length
    return h5py.File(_Window(path, start, info.file_size), "r")


def _archive_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    import h5py

    shapes: dict[str, tuple[int, ...]] = {}
    with _archive_h5(path) as f:
        f.visititems(
            lambda n, o: (
                shapes.__setitem__(n, tuple(o.shape)) if isinstance(o, h5py.Dataset) else None
            )
        )
    return shapes


def _archive_reader(path: Path, name: str) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        with _archive_h5(path) as f:
            return np.asarray(f[name])

    return read


def _snake_case(name: str) -> str:
    """Keras' ``naming.to_snake_case``: ``BatchNorm`` → ``batch_norm``, ``Conv2D`` → ``conv2d``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()
