"""A weights file, recognised by its content, checked against an architecture without Keras.

:func:`open_weights_file` tells the formats apart by their first bytes (the suffix is not
trusted) and reads the tensors' names and shapes, no values:

=================================  ==========  ==================================================
file                               source      how its tensors are named
=================================  ==========  ==================================================
``.safetensors``                   torchvision  ``layer1.0.conv1.weight`` …
``.pth`` (PyTorch ≥ 1.6 zip)       torchvision  the same (read without PyTorch, see ``torch_zip``)
``.h5`` (Keras 2, published)       keras        ``conv2_block1_1_conv/kernel`` …
``.weights.h5`` (Keras 3)          keras        by position only (``layers/conv2d_3/vars/0``)
``.keras`` (a model of ours)       model        ``stage1_block1_conv1/0`` …
=================================  ==========  ==================================================

:meth:`WeightsFile.check` says whether the file fits an architecture (every tensor where ours
expects it, of the right shape, none left over) — the API's check of ``init_from`` at the door —
and :meth:`WeightsFile.layers` converts its values to our layers' weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from core.models.layout import HEAD, weight_shapes
from core.models.specs import ArchSpec
from core.models.weights import keras_h5, torch_zip
from core.models.weights.plans import (
    LAYOUTS,
    PREPROCESSING,
    Layout,
    Plan,
    Preprocessing,
    Source,
    compare_named,
    compare_shapes,
    make_plan,
    source_shapes,
    supports,
)
from core.models.weights.safetensors import looks_like_safetensors, read_safetensors
from core.models.weights.tensors import StoredTensor, WeightsFileError

Format = Literal["safetensors", "pth", "keras-h5", "keras-weights-h5", "keras-model"]
# The head of each source, to read the number of classes from: (tensor, axis of the classes).
_HEADS: dict[str, tuple[str, int]] = {
    "torchvision": ("fc.weight", 0),
    "keras": ("predictions/kernel", 1),
    "model": (f"{HEAD}/0", 1),
}
PREPROCESS = "preprocess"


@dataclass
class WeightsFile:
    path: Path
    format: Format
    source: Source
    tensors: dict[str, StoredTensor]
    # a .keras model's config: its layout and normalisation are read from it
    model_config: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def named(self) -> bool:
        """Whether the tensors carry their layers' names (Keras 3 weight files do not)."""
        return self.format != "keras-weights-h5"

    @property
    def head_classes(self) -> int | None:
        """Classes of the file's classifier; None for a file without one (``_notop``)."""
        if not self.named:
            kernels = [t.shape for t in self.tensors.values() if len(t.shape) == 2]
            return kernels[0][1] if len(kernels) == 1 else None
        name, axis = _HEADS[self.source]
        tensor = self.tensors.get(name)
        return None if tensor is None or len(tensor.shape) != 2 else tensor.shape[axis]

    @property
    def layout(self) -> Layout | None:
        """The stride placement and padding the weights were trained with (None: unknown)."""
        if self.source in LAYOUTS:
            return LAYOUTS[self.source]
        return _model_layout(self.model_config) if self.model_config else None

    @property
    def preprocessing(self) -> Preprocessing | None:
        """The source's input normalisation, for our ``per_channel`` mode (None: a model
        of ours carries its own in its ``preprocess`` layer)."""
        return PREPROCESSING.get(self.source)

    @property
    def normalization(self) -> str | None:
        """The normalisation mode a model fine-tuned from this file must use."""
        if self.source in PREPROCESSING:
            return "per_channel"
        return _model_normalization(self.model_config) if self.model_config else None

    def required_options(self, spec: ArchSpec) -> dict[str, str]:
        """The run options a model started from this file must have for the weights to compute
        what they were trained to: stride placement (bottleneck nets), padding, normalisation."""
        options: dict[str, str] = {}
        layout = self.layout
        if layout is not None:
            if spec.has_stride_choice:
                options["stride_in"] = layout.stride_in
            options["padding"] = layout.padding
        if self.normalization is not None:
            options["normalization"] = self.normalization
        return options

    def plan(self, spec: ArchSpec) -> Plan:
        return make_plan(self.source, spec, head=self.head_classes is not None)

    def check(self, spec: ArchSpec) -> None:
        """Raise unless the file's tensors are exactly those of ``spec`` (any head size).

        Raises:
            WeightsFileError: naming the architecture and what does not fit.
        """
        why = supports(self.source, spec)
        if why:
            raise WeightsFileError(f"{self.path.name}: {why}")
        ours = weight_shapes(spec, num_classes=self.head_classes)
        expected = source_shapes(self.plan(spec), ours)
        found = {
            name: t.shape
            for name, t in self.tensors.items()
            if not (self.source == "model" and name.startswith(f"{PREPROCESS}/"))
        }
        problems = compare_named(expected, found) if self.named else compare_shapes(expected, found)
        if problems:
            raise WeightsFileError(
                f"{self.path.name} ({self.source} weights) does not fit {spec.name}: "
                + "; ".join(problems)
            )

    def layers(self, spec: ArchSpec, named: dict[str, StoredTensor] | None = None) -> Weights:
        """Our layers' weights, converted from the file's values (checked first).

        Args:
            spec: the architecture to fill.
            named: the tensors by name when the file does not name them (a Keras 3 weights
                file, named by the importer through the Keras applications model).
        """
        self.check(spec)
        tensors = named if named is not None else self.tensors
        if not self.named and named is None:
            raise WeightsFileError(f"{self.path.name}: its tensors need naming first")
        plan = self.plan(spec)
        layers: dict[str, list[np.ndarray]] = {}
        for layer, takes in plan.items():
            values = []
            for take in takes:
                value = tensors[take.name].load().astype(np.float32)
                if take.minus is not None:
                    value = value - tensors[take.minus].load().astype(np.float32)
                if take.plus:
                    value = value + np.float32(take.plus)
                if take.transpose is not None:
                    value = value.transpose(take.transpose)
                if take.flip_axis is not None:
                    value = np.flip(value, axis=take.flip_axis)
                values.append(np.ascontiguousarray(value))
            layers[layer] = values
        preprocess = None
        if self.source == "model":
            stored = [f"{PREPROCESS}/0", f"{PREPROCESS}/1"]
            if all(n in tensors for n in stored):
                preprocess = [tensors[n].load() for n in stored]
        return Weights(layers=layers, preprocess=preprocess, head_classes=self.head_classes)


@dataclass
class Weights:
    """Our layers' weights as a file gave them."""

    layers: dict[str, list[np.ndarray]]
    preprocess: list[np.ndarray] | None  # a model of ours: its preprocess layer's mean and std
    head_classes: int | None


def open_weights_file(path: str | Path) -> WeightsFile:
    """Recognise a weights file by its content and list its tensors (names and shapes only).

    Raises:
        WeightsFileError: no such file, or not one of the formats above.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"{path.name}: no such file")
    if looks_like_safetensors(path):
        return WeightsFile(path, "safetensors", "torchvision", read_safetensors(path))
    if keras_h5.looks_like_keras_archive(path):
        config = keras_h5.keras_archive_config(path)
        tensors = keras_h5.read_keras_archive(path)
        return WeightsFile(path, "keras-model", "model", tensors, model_config=config)
    if torch_zip.looks_like_pth(path):
        return WeightsFile(path, "pth", "torchvision", torch_zip.read_pth(path))
    if keras_h5.looks_like_hdf5(path):
        if keras_h5.h5_layout(path) == "named":
            return WeightsFile(path, "keras-h5", "keras", keras_h5.read_named_h5(path))
        return WeightsFile(path, "keras-weights-h5", "keras", keras_h5.read_positional_h5(path))
    if path.suffix in (".pth", ".pt", ".bin"):
        torch_zip.read_pth(path)  # raises, saying how to convert a legacy PyTorch file
    raise WeightsFileError(
        f"{path.name}: not a weights file this service reads (.safetensors, a PyTorch .pth "
        "zip, a Keras .h5 or .weights.h5, or a .keras model)"
    )


def _model_layers(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        str(entry.get("name") or entry.get("config", {}).get("name")): entry
        for entry in keras_h5.model_layers(config)
    }


def _model_layout(config: dict[str, Any]) -> Layout:
    """A model of ours: symmetric padding if it pads explicitly (the builder's ``*_pad``
    layers); the stride on the 1×1 if a bottleneck (a ``conv3``) strides its first conv."""
    layers = _model_layers(config)
    padded = any(
        name.endswith("_pad") and entry.get("class_name") == "ZeroPadding2D"
        for name, entry in layers.items()
    )
    first = layers.get("stage2_block1_conv1", {}).get("config", {})
    bottleneck = "stage2_block1_conv3" in layers
    strided = list(first.get("strides", [1, 1])) == [2, 2]
    return Layout("1x1" if bottleneck and strided else "3x3", "symmetric" if padded else "same")


def _model_normalization(config: dict[str, Any]) -> str | None:
    entry = _model_layers(config).get(PREPROCESS)
    mode = (entry or {}).get("config", {}).get("mode")
    return str(mode) if mode else None
