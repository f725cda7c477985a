"""Export a trained model for serving outside this library: TF SavedModel, ONNX, or ``.keras``.

Every export takes the model's own input — float32 pixels in [0, 255], shape (batch, H, W, C) —
since normalisation lives inside the model (the ``preprocess`` layer, exported as it is), and
returns the probabilities.

**Precision.** Exports are float32 graphs. A model trained in mixed precision
(``mixed_bfloat16``, ``mixed_float16``) is first cast to its float32 twin
(:func:`core.inference.float32.float32_model`: same weights, float32 math), because a 16-bit
graph does not run everywhere: ONNX Runtime's CPU provider refuses a bfloat16 ``Conv``
(``InvalidGraph: Type 'tensor(bfloat16)' … of operator (Conv) … is invalid``, issue 16).

**Verification.** Unless ``verify=False``, the export is loaded back in the runtime that serves
it (``tf.saved_model.load``'s ``serving_default`` signature, an ONNX Runtime CPU session, a
safe-mode Keras load) and run on a probe batch; its output must match the float32 Keras model
to :data:`VERIFY_ATOL`, and, for a mixed model, the model as trained to the rounding its
precision allows (:data:`MIXED_VERIFY_ATOL`). Every failure — a conversion, a runtime that
refuses the graph, an output that differs — is an :class:`ExportError` naming the format.

ONNX goes through ``tf2onnx.convert.from_function`` of a ``tf.function`` of the model, which
handles every layer the builder uses (the custom ``Preprocess`` and ``ZeroPadShortcut``
included). tf2onnx and onnxruntime are the optional ``export`` extra; without them (or if
tf2onnx cannot be imported alongside the installed TensorFlow/protobuf) the ONNX export raises
:class:`ExportError` saying so. Checked with TensorFlow 2.21, Keras 3.15, tf2onnx 1.17,
protobuf 7.36, onnx 1.23, onnxruntime 1.32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from core.environment import BackendError, require_tensorflow
from core.inference.float32 import FLOAT32, float32_model, source_precision
from core.inference.formats import ExportFormat

SERVING_SIGNATURE = "serving_default"
SAVED_MODEL_INPUT = "image"
SAVED_MODEL_OUTPUT = "output_0"
ONNX_INPUT = "image"
ONNX_OUTPUT = "probabilities"
ONNX_OPSET = 17
# An export against the float32 Keras model: the same math in another runtime.
VERIFY_ATOL = 1e-4
# The float32 export against the mixed model it was cast from: the mixed model's own rounding
# (bfloat16 keeps 8 significant bits, float16 11). A probability differing by more means the
# cast lost something, not precision.
MIXED_VERIFY_ATOL = {"mixed_bfloat16": 0.05, "mixed_float16": 0.01}

_LABELS = {
    ExportFormat.SAVEDMODEL: "SavedModel",
    ExportFormat.ONNX: "ONNX",
    ExportFormat.KERAS: "Keras",
}


class ExportError(RuntimeError):
    """An export could not be made or does not reproduce the Keras model; the message says why
    and names the format."""


class ExportUnavailable(ExportError):
    """This installation lacks the format's converter or runtime (tf2onnx, onnxruntime)."""


@dataclass(frozen=True)
class Exported:
    """An export and what its verification measured.

    Attributes:
        format: ``savedmodel``, ``onnx`` or ``keras``.
        path: the SavedModel folder, the ``.onnx`` or the ``.keras`` file.
        trained_precision: the policy the model computed in (``float32``, ``mixed_bfloat16``…);
            the export computes in float32 either way.
        max_abs_diff: largest probability difference from the float32 Keras model on the probe
            batch (None: not verified).
        max_abs_diff_trained: the same against the model as trained (equal to ``max_abs_diff``
            for a float32 model).
    """

    format: str
    path: Path
    trained_precision: str
    max_abs_diff: float | None
    max_abs_diff_trained: float | None

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts for an ``export.json`` or the CLI's ``--json``."""
        return {
            "format": self.format,
            "path": str(self.path),
            "trained_precision": self.trained_precision,
            "compute_precision": FLOAT32,
            "verified_max_abs_diff": {
                "float32_keras_model": self.max_abs_diff,
                "trained_keras_model": self.max_abs_diff_trained,
            },
        }


def export_model(
    model: keras.Model,
    fmt: ExportFormat | str,
    out: str | Path,
    *,
    verify: bool = True,
    opset: int = ONNX_OPSET,
) -> Exported:
    """Write ``model`` as a float32 export in format ``fmt`` at ``out``, and verify it.

    Args:
        model: the Keras model (any precision policy).
        fmt: ``savedmodel`` (``out`` a folder, created), ``onnx`` (``out`` a ``.onnx`` file) or
            ``keras`` (``out`` a ``.keras`` file).
        out: where to write.
        verify: load the export back in its runtime and compare it with the Keras model.
        opset: the ONNX opset to target.

    Raises:
        ExportError: the format is unknown, the export failed, its runtime refused it, or its
            output differs from the model's.
    """
    try:
        fmt = ExportFormat(fmt)
    except ValueError:
        raise ExportError(
            f"unknown export format {fmt!r}; expected one of {[f.value for f in ExportFormat]}."
        ) from None
    label = _LABELS[fmt]
    out = Path(out)
    with _as_export_error(label, "reading the model's precision"):
        trained = source_precision(model)
    with _as_export_error(label, "casting the model to float32"):
        model32 = float32_model(model)
    write, run = _FORMATS[fmt]
    with _as_export_error(label, "writing the export"):
        write(model32, out, opset)
    if not verify:
        return Exported(fmt.value, out, trained, None, None)
    x = _probe_batch(model)
    with _as_export_error(label, "loading and running the export to verify it"):
        got = run(out, x)
    diff = _check_close(label, got, _keras_output(model32, x), VERIFY_ATOL, "the float32 model")
    diff_trained = diff
    if model32 is not model:
        diff_trained = _check_close(
            label, got, _keras_output(model, x), MIXED_VERIFY_ATOL.get(trained, VERIFY_ATOL),
            f"the {trained} model it was cast from",
        )  # fmt: skip
    return Exported(fmt.value, out, trained, diff, diff_trained)


def export_saved_model(model: keras.Model, out_dir: str | Path, *, verify: bool = True) -> Exported:
    """A TF SavedModel folder for TF Serving / ``tf.saved_model.load`` (see :func:`export_model`).

    Its ``serving_default`` signature takes ``image`` (float32, (None, H, W, C)) and returns
    ``{"output_0": probabilities}``.
    """
    return export_model(model, ExportFormat.SAVEDMODEL, out_dir, verify=verify)


def export_onnx(
    model: keras.Model, out_path: str | Path, *, opset: int = ONNX_OPSET, verify: bool = True
) -> Exported:
    """An ONNX model: input ``image`` (float32, (N, H, W, C)), output ``probabilities`` (see
    :func:`export_model`)."""
    return export_model(model, ExportFormat.ONNX, out_path, verify=verify, opset=opset)


def export_keras(model: keras.Model, out_path: str | Path, *, verify: bool = True) -> Exported:
    """The float32 model as a ``.keras`` file (see :func:`export_model`)."""
    return export_model(model, ExportFormat.KERAS, out_path, verify=verify)


# --- the formats: how each is written, and run back ------------------------------------------


def _write_saved_model(model: keras.Model, out: Path, opset: int) -> None:
    require_tensorflow("SavedModel export")
    model.export(str(out), format="tf_saved_model", verbose=False)


def _run_saved_model(out: Path, x: np.ndarray) -> np.ndarray:
    tf = require_tensorflow("SavedModel export")
    serve = tf.saved_model.load(str(out)).signatures[SERVING_SIGNATURE]
    outputs = serve(**{SAVED_MODEL_INPUT: tf.constant(x)})
    if list(outputs) != [SAVED_MODEL_OUTPUT]:
        raise ExportError(f"SavedModel: expected the one output {SAVED_MODEL_OUTPUT!r}; got "
                          f"{list(outputs)}.")  # fmt: skip
    return np.asarray(outputs[SAVED_MODEL_OUTPUT].numpy())


def _write_onnx(model: keras.Model, out: Path, opset: int) -> None:
    tf = require_tensorflow("ONNX export")
    try:
        import tf2onnx
    except Exception as exc:  # an incompatible protobuf fails with TypeError/AttributeError too
        raise ExportUnavailable(
            f"ONNX export needs tf2onnx (pip install 'resnet-service[export]'); "
            f"importing it failed: {type(exc).__name__}: {exc}"
        ) from exc
    shape = tuple(model.input_shape[1:])
    signature = [tf.TensorSpec((None, *shape), tf.float32, name=ONNX_INPUT)]
    # A plain tf.function of the Keras 3 model: the same graph the SavedModel and Predictor run.
    forward = tf.function(lambda x: model(x, training=False))
    proto, _ = tf2onnx.convert.from_function(forward, input_signature=signature, opset=opset)
    _rename_output(proto, ONNX_OUTPUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(proto.SerializeToString())


def _run_onnx(out: Path, x: np.ndarray) -> np.ndarray:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ExportUnavailable(
            "ONNX export: verifying it needs onnxruntime (pip install 'resnet-service[export]'), "
            f"which cannot be imported: {exc}"
        ) from exc
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run([ONNX_OUTPUT], {ONNX_INPUT: x})
    return np.asarray(got)


def _write_keras(model: keras.Model, out: Path, opset: int) -> None:
    if out.suffix != ".keras":
        raise ExportError(f"Keras export: the file must end in .keras; got {out.name!r}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)


def _run_keras(out: Path, x: np.ndarray) -> np.ndarray:
    from core.inference.predictor import load_keras_model  # the loader the service uses

    return _keras_output(load_keras_model(out), x)


_FORMATS: dict[
    ExportFormat,
    tuple[Callable[[keras.Model, Path, int], None], Callable[[Path, np.ndarray], np.ndarray]],
] = {
    ExportFormat.SAVEDMODEL: (_write_saved_model, _run_saved_model),
    ExportFormat.ONNX: (_write_onnx, _run_onnx),
    ExportFormat.KERAS: (_write_keras, _run_keras),
}


# --- helpers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _as_export_error(label: str, stage: str) -> Iterator[None]:
    """Any exception (tf2onnx's, onnxruntime's, TensorFlow's) as an ExportError naming the
    format: callers catch one type whatever the runtime underneath raised."""
    try:
        yield
    except ExportError:
        raise
    except BackendError as exc:  # no TensorFlow under this Keras backend
        raise ExportUnavailable(f"{label} export: {exc}") from exc
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:500]
        raise ExportError(f"{label} export failed {stage}: {type(exc).__name__}: {first}") from exc


def _rename_output(proto: Any, name: str) -> None:
    """Give the graph's single output a stable name (tf2onnx names it after a TF tensor)."""
    graph = proto.graph
    if len(graph.output) != 1:
        raise ExportError(f"ONNX: expected one output; got {[o.name for o in graph.output]}.")
    old = graph.output[0].name
    for node in graph.node:
        node.input[:] = [name if i == old else i for i in node.input]
        node.output[:] = [name if o == old else o for o in node.output]
    graph.output[0].name = name


def _probe_batch(model: keras.Model) -> np.ndarray:
    shape = tuple(model.input_shape[1:])
    return np.random.default_rng(0).uniform(0, 255, (2, *shape)).astype(np.float32)


def _keras_output(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)), dtype=np.float32)


def _check_close(label: str, got: np.ndarray, want: np.ndarray, atol: float, what: str) -> float:
    """The largest difference; ExportError above ``atol`` (NaN included: it is never close)."""
    if got.shape != want.shape:
        raise ExportError(f"{label} output has shape {got.shape}; {what}'s has {want.shape}.")
    diff = float(np.max(np.abs(got.astype(np.float32) - want)))
    if not diff <= atol:
        raise ExportError(
            f"{label} export differs from {what} by up to {diff:.3g} (allowed: {atol:g})."
        )
    return diff
