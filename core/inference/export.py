"""Export a trained model for serving outside Keras: TF SavedModel and ONNX.

Both exports take the model's own input — float32 pixels in [0, 255], shape (batch, H, W, C) —
since normalisation lives inside the model, and both are checked against the Keras model on a
random batch before they are returned.

ONNX status (checked with TensorFlow 2.21, Keras 3.15, tf2onnx 1.17, protobuf 7.36, onnx 1.23,
onnxruntime 1.32): converting a ``tf.function`` of the model with
``tf2onnx.convert.from_function`` works for every layer the builder uses, including the custom
``Preprocess`` and ``ZeroPadShortcut`` layers, and matches Keras to ~1e-7. tf2onnx is an optional
dependency (the ``export`` extra); without it, or if it cannot be imported alongside the installed
TensorFlow/protobuf, :func:`export_onnx` raises :class:`ExportError` saying so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np

from core.environment import require_tensorflow

SERVING_SIGNATURE = "serving_default"
ONNX_INPUT = "image"
ONNX_OUTPUT = "probabilities"
ONNX_OPSET = 17
VERIFY_ATOL = 1e-4


class ExportError(RuntimeError):
    """An export could not be made or does not reproduce the Keras model; the message says why."""


def export_saved_model(model: keras.Model, out_dir: str | Path, *, verify: bool = True) -> Path:
    """Write a TF SavedModel for TF Serving / ``tf.saved_model.load``.

    The ``serving_default`` signature takes ``image`` (float32, (None, H, W, C)) and returns
    ``{"output_0": probabilities}``.

    Args:
        model: the Keras model.
        out_dir: directory to write (created; must not hold another SavedModel).
        verify: reload the export and check its signature reproduces the model's output.

    Raises:
        ExportError: the export failed or its output differs from the model's.
    """
    tf = require_tensorflow("SavedModel export")
    out_dir = Path(out_dir)
    try:
        model.export(str(out_dir), format="tf_saved_model", verbose=False)
    except Exception as exc:
        raise ExportError(f"SavedModel export to {out_dir} failed: {exc}") from exc
    if verify:
        serve = tf.saved_model.load(str(out_dir)).signatures[SERVING_SIGNATURE]
        x = _probe_batch(model)
        outputs = serve(tf.constant(x))
        if len(outputs) != 1:
            raise ExportError(f"expected one output from the SavedModel; got {list(outputs)}.")
        _check_close("SavedModel", next(iter(outputs.values())).numpy(), _keras_output(model, x))
    return out_dir


def export_onnx(
    model: keras.Model, out_path: str | Path, *, opset: int = ONNX_OPSET, verify: bool = True
) -> Path:
    """Write an ONNX model: input ``image`` (float32, (N, H, W, C)), output ``probabilities``.

    Args:
        model: the Keras model (TensorFlow backend).
        out_path: the ``.onnx`` file to write.
        opset: the ONNX opset to target.
        verify: run the export with onnxruntime, when it is installed, and check it reproduces
            the model's output.

    Raises:
        ExportError: tf2onnx is missing or cannot be imported, the conversion failed, or the
            result differs from the model's output.
    """
    tf = require_tensorflow("ONNX export")
    try:
        import tf2onnx
    except Exception as exc:  # an incompatible protobuf fails with TypeError/AttributeError too
        raise ExportError(
            f"ONNX export needs tf2onnx (pip install 'resnet-service[export]'); "
            f"importing it failed: {type(exc).__name__}: {exc}"
        ) from exc

    out_path = Path(out_path)
    shape = tuple(model.input_shape[1:])
    signature = [tf.TensorSpec((None, *shape), tf.float32, name=ONNX_INPUT)]
    # A plain tf.function of the Keras 3 model: the same graph the SavedModel and Predictor run.
    forward = tf.function(lambda x: model(x, training=False))
    try:
        proto, _ = tf2onnx.convert.from_function(forward, input_signature=signature, opset=opset)
    except Exception as exc:
        raise ExportError(
            f"tf2onnx could not convert the model: {type(exc).__name__}: {exc}"
        ) from exc
    _rename_output(proto, ONNX_OUTPUT)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(proto.SerializeToString())
    if verify:
        try:
            import onnxruntime as ort
        except ImportError:
            return out_path
        session = ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"])
        x = _probe_batch(model)
        (got,) = session.run([ONNX_OUTPUT], {ONNX_INPUT: x})
        _check_close("ONNX", got, _keras_output(model, x))
    return out_path


def _rename_output(proto: Any, name: str) -> None:
    """Give the graph's single output a stable name (tf2onnx names it after a TF tensor)."""
    graph = proto.graph
    if len(graph.output) != 1:
        raise ExportError(f"expected one ONNX output; got {[o.name for o in graph.output]}.")
    old = graph.output[0].name
    for node in graph.node:
        node.input[:] = [name if i == old else i for i in node.input]
        node.output[:] = [name if o == old else o for o in node.output]
    graph.output[0].name = name


def _probe_batch(model: keras.Model) -> np.ndarray:
    shape = tuple(model.input_shape[1:])
    return np.random.default_rng(0).uniform(0, 255, (2, *shape)).astype(np.float32)


def _keras_output(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(x, training=False))


def _check_close(what: str, got: np.ndarray, want: np.ndarray) -> None:
    if got.shape != want.shape:
        raise ExportError(f"{what} output has shape {got.shape}; the model's has {want.shape}.")
    diff = float(np.max(np.abs(got - want)))
    if diff > VERIFY_ATOL:
        raise ExportError(f"{what} output differs from the Keras model's by up to {diff:.3g}.")
