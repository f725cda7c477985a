"""Published weights into our models: a file's weights set layer by layer, its preprocessing
carried by the model's ``preprocess`` layer, so the model reproduces the source's outputs on
raw [0, 255] RGB pixels.

- :func:`import_model`: a whole model from a weights file (``resnet weights import``).
- :func:`init_from_weights`: a model built for a run, started from a file (``init_from``): the
  head is kept when it has the run's classes and left new otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from core.models.builder import build_model
from core.models.layout import HEAD
from core.models.specs import ArchSpec, parse_architecture
from core.models.weights.files import PREPROCESS, Weights, WeightsFile, open_weights_file
from core.models.weights.plans import Source
from core.models.weights.tensors import StoredTensor, WeightsFileError

log = logging.getLogger(__name__)

# keras.applications' constructors by depth: they name a Keras 3 weights file's tensors.
_KERAS_APPLICATIONS = {50: "ResNet50", 101: "ResNet101", 152: "ResNet152"}


@dataclass
class Applied:
    """What :func:`apply_weights` did."""

    copied: list[str]
    new: list[str]  # layers left as initialised (a head of another size)


def read_weights(
    path: str | Path, spec: ArchSpec, *, source: Source | None = None
) -> tuple[WeightsFile, Weights]:
    """Open, check and convert a weights file for ``spec``.

    Raises:
        WeightsFileError: the file is not of ``source`` (when given), or does not fit ``spec``.
    """
    file = open_weights_file(path)
    _check_source(file, source)
    return file, convert(file, spec)


def convert(file: WeightsFile, spec: ArchSpec) -> Weights:
    """The file's weights as our layers' (checked against ``spec`` first)."""
    named = None if file.named else _name_by_keras_applications(file, spec)
    return file.layers(spec, named)


def _check_source(file: WeightsFile, source: Source | None) -> None:
    if source is not None and source != file.source:
        raise WeightsFileError(f"{file.path.name} holds {file.source} weights, not {source}")


def layout_for(file: WeightsFile, spec: ArchSpec) -> ArchSpec:
    """``spec`` with the stride placement and padding the file's weights were trained with."""
    layout = file.layout
    if layout is None:
        return spec
    stride_in = layout.stride_in if spec.has_stride_choice else None
    return spec.with_layout(stride_in=stride_in, padding=layout.padding)


def import_model(
    path: str | Path,
    arch: str,
    *,
    source: Source | None = None,
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
) -> keras.Model:
    """A model of ``arch`` holding a published file's weights and preprocessing.

    Args:
        path: the weights file (see :mod:`core.models.weights.files`).
        arch: e.g. ``resnet50``; its stride placement and padding are the file's.
        source: ``"keras"`` or ``"torchvision"`` to insist on one (default: recognised).
        input_shape: default 224×224×3.
        num_classes: the head's size when the file has no head (``_notop``); that head is
            newly initialised. A file with a head keeps it, and its size.

    Raises:
        WeightsFileError: the file does not fit ``arch``, or ``num_classes`` contradicts it.
    """
    file = open_weights_file(path)
    _check_source(file, source)
    spec = layout_for(file, parse_architecture(arch))
    weights = convert(file, spec)
    classes = file.head_classes
    if classes is not None and num_classes not in (None, classes):
        raise WeightsFileError(
            f"{file.path.name} has a head of {classes} classes, not {num_classes}"
        )
    model = build_model(
        spec,
        input_shape=input_shape,
        num_classes=classes or num_classes or 1000,
        normalization=file.normalization or "per_channel",
    )
    applied = apply_weights(model, weights)
    set_preprocessing(model, file, weights)
    if applied.new:
        log.warning("%s has no head: %s left newly initialised", file.path.name, applied.new)
    return model


def init_from_weights(model: keras.Model, path: str | Path, spec: ArchSpec) -> Applied:
    """Start ``model`` (built for a run of ``spec``) from a published weights file.

    The run's config must already have the file's layout and normalisation (the service fills
    them in; see :meth:`WeightsFile.required_options`): a mismatch is an error, not a silent
    change of the function the weights compute.
    """
    file, weights = read_weights(path, spec)
    layer = model.get_layer(PREPROCESS)
    expected = file.required_options(spec)
    actual = {"stride_in": spec.stride_in, "padding": spec.padding, "normalization": layer.mode}
    wrong = {k: v for k, v in expected.items() if actual[k] != v}
    if wrong:
        raise WeightsFileError(
            f"{file.path.name} holds {file.source} weights, trained with "
            + ", ".join(f"{k}={v!r}" for k, v in wrong.items())
            + "; the run has "
            + ", ".join(f"{k}={actual[k]!r}" for k in wrong)
        )
    applied = apply_weights(model, weights)
    set_preprocessing(model, file, weights)
    log.info(
        "started from %s: %d layers copied, new: %s", file.path.name, len(applied.copied),
        applied.new or "none",
    )  # fmt: skip
    return applied


def apply_weights(model: keras.Model, weights: Weights) -> Applied:
    """Set every layer the weights name; a head of another size is left as initialised.

    Raises:
        WeightsFileError: a layer of the weights the model lacks, or of another shape (the
            file was checked against the spec: only a model built otherwise gets here).
    """
    applied = Applied([], [])
    for name, values in weights.layers.items():
        try:
            layer = model.get_layer(name)
        except ValueError:
            raise WeightsFileError(
                f"the model has no layer {name!r} for the file's weights"
            ) from None
        shapes = [tuple(w.shape) for w in layer.weights]
        if shapes != [v.shape for v in values]:
            if name == HEAD:
                applied.new.append(name)
                continue
            raise WeightsFileError(
                f"layer {name!r} is {shapes}, the file's {[v.shape for v in values]}"
            )
        layer.set_weights(values)
        applied.copied.append(name)
    if HEAD not in weights.layers:
        applied.new.append(HEAD)
    return applied


def set_preprocessing(model: keras.Model, file: WeightsFile, weights: Weights) -> None:
    """The source's input normalisation into the model's ``preprocess`` layer."""
    layer = model.get_layer(PREPROCESS)
    if file.preprocessing is not None:
        if layer.mode != "per_channel":
            raise WeightsFileError(
                f"{file.source} weights need normalization 'per_channel'; the model has "
                f"{layer.mode!r}"
            )
        layer.set_statistics(
            np.asarray(file.preprocessing.mean), np.asarray(file.preprocessing.std)
        )
    elif weights.preprocess is not None and [tuple(w.shape) for w in layer.weights] == [
        v.shape for v in weights.preprocess
    ]:
        layer.set_weights(weights.preprocess)


def _constant(value: np.ndarray) -> Callable[[], np.ndarray]:
    return lambda: value


def _name_by_keras_applications(file: WeightsFile, spec: ArchSpec) -> dict[str, StoredTensor]:
    """A Keras 3 ``.weights.h5`` file names its tensors by position: load it into the Keras
    applications model that wrote it and read them back by layer name."""
    file.check(spec)  # the same tensors' shapes, before building anything
    constructor = getattr(keras.applications, _KERAS_APPLICATIONS[spec.depth])
    classes = file.head_classes
    source = constructor(
        weights=None,
        include_top=classes is not None,
        classes=classes or 1000,
        input_shape=None if classes is None else (224, 224, 3),
    )
    try:
        source.load_weights(str(file.path))
    except ValueError as exc:
        raise WeightsFileError(
            f"{file.path.name}: not the weights of keras.applications.{constructor.__name__} "
            f"({exc})"
        ) from None
    named: dict[str, StoredTensor] = {}
    for layer in source.layers:
        for weight in layer.weights:
            value = np.asarray(weight.numpy())
            named[f"{layer.name}/{weight.name}"] = StoredTensor(value.shape, _constant(value))
    return named
