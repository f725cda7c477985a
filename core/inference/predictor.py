"""Serve a trained model: load it safely, turn images into labelled probabilities.

Only the Keras 3 ``.keras`` format is loaded, always in safe mode: legacy HDF5 files and models
with ``Lambda`` layers can carry Python code that runs on load, so they are refused before any
deserialisation. The trainer writes ``labels.json`` beside ``model.keras``::

    {"class_names": ["airplane", "automobile", ...], "multi_label": false}
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from PIL import Image

from core.images import ImageDecodeError, decode_image, resize_for_model, to_array
from core.models import CUSTOM_OBJECTS, Preprocess
from core.ranking import ranked_labels
from core.training.rundir import LABELS_FILE

if TYPE_CHECKING:
    from core.inference.engines import Engine

# A .keras archive's config.json is kilobytes even for ResNet-1202; refuse anything absurd.
MAX_CONFIG_BYTES = 64 * 1024 * 1024
ENGINES_DIR = "engines"

Prediction = dict[str, Any]


class ModelLoadError(ValueError):
    """A model file was refused or could not be loaded; the message says why."""


class Predictor:
    """Labelled predictions from a classifier whose input is pixels in [0, 255].

    Under TensorFlow the forward pass is a ``tf.function`` with a fixed ``(None, H, W, C)``
    float32 signature, traced once at construction (the warm-up), so later calls of any batch
    size do not retrace; under other backends (JAX) it is Keras' compiled ``predict_on_batch``.

    Args:
        model: a model from :func:`core.models.build_model` (or any one input, one output
            classifier with a fixed input size).
        class_names: one name per output; default ``"0"`` … ``"K-1"``.
        multi_label: whether outputs are independent (sigmoid) probabilities; default: read from
            the activation of the ``probabilities`` layer.
        threshold: the default multi-label decision threshold.
        batch_size: the largest batch sent through the model at once.
        engine: what runs the forward pass: ``keras`` (default), ``onnx``, ``savedmodel`` or
            ``auto`` (the fastest of those that reproduce Keras: :mod:`core.inference.engines`).
        engine_dir: where the engines' exports are kept (``load`` puts them beside the file).
        threads: intra-op threads for an exported engine (default: its runtime's choice).
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        class_names: Sequence[str] | None = None,
        multi_label: bool | None = None,
        threshold: float = 0.5,
        batch_size: int = 64,
        engine: str = "keras",
        engine_dir: str | Path | None = None,
        threads: int | None = None,
    ) -> None:
        in_shape = model.input_shape
        if not isinstance(in_shape, tuple) or len(in_shape) != 4 or None in in_shape[1:]:
            raise ValueError(f"expected a model with one (None, H, W, C) input; got {in_shape}.")
        shape = (int(in_shape[1]), int(in_shape[2]), int(in_shape[3]))
        out_shape = model.output_shape
        if not isinstance(out_shape, tuple) or len(out_shape) != 2:
            raise ValueError(f"expected a model with one (None, K) output; got {out_shape}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
        self.model = model
        self.input_shape = shape
        self.num_classes = int(out_shape[1])
        self.class_names = _check_names(class_names, self.num_classes)
        self.multi_label = _resolve_multi_label(model, multi_label)
        self.threshold = float(threshold)
        self.batch_size = int(batch_size)
        self.resize_policy = next(
            (layer.resize for layer in model.layers if isinstance(layer, Preprocess)), "direct"
        )
        from core.inference.engines import make_engine

        self.engine = make_engine(
            model, shape, engine=engine, cache_dir=engine_dir, threads=threads,
            batch_size=self.batch_size,
        )  # fmt: skip
        self._forward = self.engine.forward
        self._forward(np.zeros((1, *shape), np.float32))  # warm-up: trace and run once

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        class_names: Sequence[str] | None = None,
        multi_label: bool | None = None,
        threshold: float = 0.5,
        batch_size: int = 64,
        engine: str = "keras",
        threads: int | None = None,
    ) -> Predictor:
        """Load a ``.keras`` model in safe mode, with the labels from its ``labels.json``.

        Explicit ``class_names``/``multi_label`` take precedence over the sidecar file. An
        exported engine's files are kept beside the model, in ``engines/<digest of the file>/``,
        and reused by later loads of the same file.

        Raises:
            ModelLoadError: the path is missing, not a ``.keras`` archive (``.h5``/``.hdf5`` are
                refused), contains a ``Lambda`` layer, fails to load, or its labels do not fit.
        """
        path = Path(path)
        model = load_keras_model(path)
        sidecar = _read_labels(path.with_name(LABELS_FILE))
        if class_names is None:
            class_names = sidecar.get("class_names")
        if multi_label is None:
            multi_label = sidecar.get("multi_label")
        try:
            return cls(
                model,
                class_names=class_names,
                multi_label=multi_label,
                threshold=threshold,
                batch_size=batch_size,
                engine=engine,
                engine_dir=None if engine == "keras" else engine_folder(path),
                threads=threads,
            )
        except ValueError as exc:
            raise ModelLoadError(f"{path.name}: {exc}") from exc

    @property
    def channels(self) -> int:
        return self.input_shape[2]

    def use_engine(self, engine: Engine) -> None:
        """Run the forward pass on ``engine`` from the next call on (e.g. one that
        :func:`~core.inference.engines.make_engine` chose in the background while this
        predictor served on Keras). It is warmed up first; the switch itself is one
        assignment, so calls in flight finish on the engine they started on."""
        engine.forward(np.zeros((1, *self.input_shape), np.float32))
        self.engine = engine
        self._forward = engine.forward

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Raw model output for a (B, H, W, C) batch at the model's input size, as (B, K) float32.

        Pixels are in [0, 255] (uint8 or float); large batches run ``batch_size`` at a time.
        """
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[1:] != self.input_shape:
            raise ValueError(
                f"expected a batch of shape (B, {', '.join(map(str, self.input_shape))}); "
                f"got {batch.shape}. Use predict_arrays for images of other sizes."
            )
        out = [
            np.asarray(self._forward(np.asarray(chunk, np.float32)))
            for chunk in _chunks(batch, self.batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.num_classes), np.float32)

    def probabilities_of(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """:meth:`probabilities` of images of any size, brought to the model's input as
        :meth:`predict_arrays` brings them: (B, K) float32."""
        return self.probabilities(self._batch(images))

    def predict_arrays(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        top_k: int = 5,
        *,
        threshold: float | None = None,
    ) -> list[list[Prediction]]:
        """Labelled predictions for images given as arrays of pixels in [0, 255].

        Args:
            images: a (B, H, W, C) array, or a list of (H, W) / (H, W, C) arrays of any size and
                1, 3 or 4 channels; those not at the model's size are brought to it with the
                model's resize policy (uint8 pixels; floats are rounded and clipped first).
            top_k: single-label: the ``top_k`` most probable classes, best first.
            threshold: multi-label: every label with probability >= threshold (default: the
                predictor's), best first, however many; ``top_k`` does not apply.

        Returns:
            One list per image of ``{"label", "index", "probability"}``.
        """
        return self._label(self.probabilities_of(images), top_k, threshold)

    def predict_bytes(
        self,
        blobs: Sequence[bytes],
        top_k: int = 5,
        *,
        threshold: float | None = None,
    ) -> list[list[Prediction]]:
        """Labelled predictions for encoded images (JPEG, PNG, ...); see :meth:`predict_arrays`.

        Raises:
            ImageDecodeError: an image could not be decoded; the message gives its position.
        """
        arrays = []
        for i, data in enumerate(blobs):
            try:
                arrays.append(decode_image(data, channels=self.channels))
            except ImageDecodeError as exc:
                raise ImageDecodeError(f"image {i}: {exc}") from None
        return self.predict_arrays(arrays, top_k, threshold=threshold)

    def _batch(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Bring images to one (B, H, W, C) batch at the model's input size."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            if images.shape[1:] == self.input_shape:
                return images
            items: Sequence[np.ndarray] = list(images)
        elif isinstance(images, np.ndarray):
            raise ValueError(
                f"expected a (B, H, W, C) array or a list of images; got {images.shape}."
            )
        else:
            items = images
        if len(items) == 0:
            return np.zeros((0, *self.input_shape), np.float32)
        return np.stack([self._fit(np.asarray(img)) for img in items])

    def _fit(self, img: np.ndarray) -> np.ndarray:
        if img.ndim == 2:
            img = img[..., None]
        if img.ndim != 3 or img.shape[-1] not in (1, 3, 4) or 0 in img.shape:
            raise ValueError(f"expected an (H, W), (H, W, 1|3|4) image; got shape {img.shape}.")
        if img.shape == self.input_shape:
            return img.astype(np.float32)
        if img.dtype != np.uint8:
            img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        if img.shape[-1] != self.channels:
            # Grey↔RGB and RGBA go through the same conversions as decoded files.
            pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
            img = to_array(pil, self.channels)
        return resize_for_model(img, self.input_shape, self.resize_policy).astype(np.float32)

    def _label(
        self, probs: np.ndarray, top_k: int, threshold: float | None
    ) -> list[list[Prediction]]:
        if not self.multi_label and top_k < 1:
            raise ValueError(f"top_k must be >= 1; got {top_k}.")
        cut = self.threshold if threshold is None else float(threshold)
        return [
            ranked_labels(
                p, self.class_names, multi_label=self.multi_label, top_k=top_k, threshold=cut
            )
            for p in probs
        ]


def _chunks(batch: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for i in range(0, len(batch), size):
        yield batch[i : i + size]


def _check_names(names: Sequence[str] | None, k: int) -> list[str]:
    if names is None:
        return [str(i) for i in range(k)]
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValueError("class_names must be a list of strings.")
    if len(names) != k:
        raise ValueError(f"the model has {k} outputs but {len(names)} class names were given.")
    return list(names)


def _resolve_multi_label(model: keras.Model, given: bool | None) -> bool:
    """The caller's or sidecar's answer, checked against the output activation when it is known."""
    try:
        activation = getattr(model.get_layer("probabilities"), "activation", None)
    except ValueError:
        activation = None
    name = getattr(activation, "__name__", None)
    inferred = {"sigmoid": True, "softmax": False}.get(name or "")
    if given is None:
        return bool(inferred)
    if inferred is not None and bool(given) != inferred:
        raise ValueError(f"multi_label={given} contradicts the model's {name} output layer.")
    return bool(given)


def engine_folder(model_path: Path) -> Path:
    """Where a model file's engine exports live: named by its content, so a replaced file
    never meets an export of the old one."""
    digest = hashlib.sha256()
    with model_path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return model_path.parent / ENGINES_DIR / digest.hexdigest()[:20]


def load_keras_model(path: str | Path) -> keras.Model:
    """Load a ``.keras`` model in safe mode, refusing HDF5 files and ``Lambda`` layers first.

    Raises:
        ModelLoadError: the path is missing, not a ``.keras`` archive, contains a ``Lambda``
            layer, or fails to load.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        raise ModelLoadError(
            f"{path.name}: legacy HDF5 models are not loaded (they cannot be loaded safely); "
            "re-save the model in the .keras format."
        )
    if suffix != ".keras":
        raise ModelLoadError(f"{path.name}: expected a .keras model file; got {suffix!r}.")
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    _refuse_unsafe_config(path)
    try:
        model: keras.Model = keras.saving.load_model(
            path, custom_objects=CUSTOM_OBJECTS, compile=False, safe_mode=True
        )
    except Exception as exc:
        raise ModelLoadError(f"{path.name}: could not load the model: {exc}") from exc
    return model


def _refuse_unsafe_config(path: Path) -> None:
    """Read the archive's config without building anything; refuse Lambda layers up front."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("config.json")
            if info.file_size > MAX_CONFIG_BYTES:
                raise ModelLoadError(f"{path.name}: config.json is too large ({info.file_size} B).")
            config = json.loads(archive.read(info))
    except ModelLoadError:
        raise
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise ModelLoadError(f"{path.name}: not a valid .keras archive ({exc}).") from None
    lambdas = sorted(_find_layers(config, "Lambda"))
    if lambdas:
        raise ModelLoadError(
            f"{path.name}: contains Lambda layer(s) {', '.join(lambdas)}; Lambda layers hold "
            "arbitrary Python code and are not loaded. Replace them with a registered layer."
        )


def _find_layers(node: Any, class_name: str) -> Iterator[str]:
    """Names of every (nested) layer config of the given class."""
    if isinstance(node, dict):
        if node.get("class_name") == class_name:
            yield str((node.get("config") or {}).get("name", "?"))
        for value in node.values():
            yield from _find_layers(value, class_name)
    elif isinstance(node, list):
        for value in node:
            yield from _find_layers(value, class_name)


def _read_labels(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path.name}: could not read labels: {exc}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path.name}: expected a JSON object with 'class_names'.")
    multi_label = data.get("multi_label")
    if multi_label is not None and not isinstance(multi_label, bool):
        raise ModelLoadError(f"{path.name}: 'multi_label' must be true or false.")
    return {"class_names": data.get("class_names"), "multi_label": multi_label}
