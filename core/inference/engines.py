"""The engine that runs a :class:`~core.inference.Predictor`'s forward pass.

- ``keras``: the Keras model itself (a ``tf.function`` with a fixed signature under TensorFlow,
  Keras' compiled ``predict_on_batch`` under other backends);
- ``onnx``: ONNX Runtime on the model's float32 ONNX export (:mod:`core.inference.export`);
- ``savedmodel``: the exported SavedModel's ``serving_default`` signature;
- ``auto``: export once, keep the engines that agree with Keras on a probe batch (same top-1
  label, probabilities within :data:`AGREE_ATOL`), time them at batch 1 and at the serving batch,
  and run the fastest. Exports compute in float32: for a mixed-precision model they must agree
  with its float32 twin (and, as every export is checked, with the model as trained within
  bfloat16's or float16's rounding), so such a model's answers may move by that rounding.
  On this project's 2-core CPU ONNX Runtime was the fastest at batch 1, 16 and 64 for
  ResNet-20 and ResNet-56 (docs/benchmarks.md, "The model call's engine").

Exports are written once into ``cache_dir`` (beside the model file when it is loaded from one,
named by the file's digest) and reused by every later load of the same file.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

log = logging.getLogger(__name__)

ENGINES = ("auto", "keras", "onnx", "savedmodel")
# ``auto`` weighs these: SavedModel runs on the same TensorFlow runtime as Keras' tf.function and
# costs the slowest export, so it is served only when asked for.
AUTO_CANDIDATES = ("keras", "onnx")
AGREE_ATOL = 1e-4
PROBE_IMAGES = 16
TIMING_SECONDS = 0.15
STALE_STAGING_S = 3600.0

Forward = Callable[[np.ndarray], np.ndarray]


class EngineError(ValueError):
    """An engine asked for cannot run this model here; the message says why."""


@dataclass
class Engine:
    """The chosen forward pass, and how it was chosen (for logs and model descriptions)."""

    name: str
    forward: Forward
    report: dict[str, Any] = field(default_factory=dict)


def make_engine(
    model: keras.Model,
    shape: tuple[int, int, int],
    *,
    engine: str = "keras",
    cache_dir: str | Path | None = None,
    threads: int | None = None,
    batch_size: int = 64,
) -> Engine:
    """The forward pass of ``model`` on ``engine`` (see the module's docstring).

    Args:
        model: the Keras model (any precision policy: exports compute in float32).
        shape: its input shape (H, W, C).
        engine: ``auto``, ``keras``, ``onnx`` or ``savedmodel``.
        cache_dir: where exports are kept; default: a temporary folder removed with the engine.
        threads: ONNX Runtime's intra-op threads, for a process whose cores other work needs
            too (a server's event loop, its clients): the pool's threads then sleep between
            calls instead of spinning (default: ONNX Runtime's own choice, every core,
            spinning; best for a process that only runs the model).
        batch_size: the largest batch the caller sends (``auto`` times this size too).

    Raises:
        EngineError: an unknown engine, or one that cannot run or does not reproduce the model
            (``auto`` falls back to Keras instead and says why in ``report``).
    """
    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}.")
    keras_engine = Engine("keras", keras_forward(model, shape))
    if engine == "keras":
        return keras_engine
    folder = _cache_folder(cache_dir)
    probe = np.random.default_rng(0).uniform(0, 255, (PROBE_IMAGES, *shape)).astype(np.float32)
    names = AUTO_CANDIDATES if engine == "auto" else (engine,)
    engines, skipped = [], {}
    for name in names:
        if name == "keras":  # the model as trained: the reference itself
            engines.append(keras_engine)
            continue
        try:
            candidate = _exported(name, model, folder, threads)
            _check_agrees(name, np.asarray(candidate.forward(probe)), _float32_output(model, probe))
            engines.append(candidate)
        except EngineError as exc:
            if engine != "auto":
                raise
            skipped[name] = str(exc)
    if len(engines) == 1:
        chosen = engines[0]
        chosen.report = {"chosen": chosen.name, "asked": engine, "skipped": skipped}
        return _keep_alive(chosen, folder)
    timings = {e.name: _time(e.forward, probe, batch_size) for e in engines}
    chosen = min(engines, key=lambda e: sum(timings[e.name].values()))
    chosen.report = {"chosen": chosen.name, "asked": engine, "ms": timings, "skipped": skipped}
    log.info("engine %s chosen: %s", chosen.name, chosen.report)
    return _keep_alive(chosen, folder)


def keras_forward(model: keras.Model, shape: tuple[int, int, int]) -> Forward:
    """float32 ``(B, H, W, C)`` in, probabilities out (array-like), compiled by the backend.

    Under TensorFlow a ``tf.function`` with a fixed ``(None, H, W, C)`` signature: traced once,
    whatever the batch size."""
    if keras.backend.backend() != "tensorflow":
        return model.predict_on_batch
    import tensorflow as tf

    return tf.function(  # returns tensors: np.asarray them
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec((None, *shape), tf.float32, name="image")],
    )


def _exported(name: str, model: keras.Model, folder: _Folder, threads: int | None) -> Engine:
    if keras.backend.backend() != "tensorflow":
        raise EngineError(f"the {name} engine needs TensorFlow to export the model; this "
                          f"process runs Keras on {keras.backend.backend()!r}.")  # fmt: skip
    target = folder.path / ("model.onnx" if name == "onnx" else "savedmodel")
    if not target.exists():
        _export_atomically(name, model, target)
    return Engine(name, _onnx(target, threads) if name == "onnx" else _saved_model(target))


def _export_atomically(name: str, model: keras.Model, target: Path) -> None:
    """Export beside ``target`` and rename: a concurrent loader sees all of it or none."""
    from core.inference.export import ExportError, export_model

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(target.parent, name)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    except OSError as exc:
        raise EngineError(f"the {name} engine: could not keep its export: {exc}") from exc
    try:
        export_model(model, "onnx" if name == "onnx" else "savedmodel", staging / target.name)
        (staging / target.name).replace(target)
    except ExportError as exc:
        raise EngineError(f"the {name} engine: {exc}") from exc
    except OSError as exc:
        if not target.exists():  # another loader may have won the rename
            raise EngineError(f"the {name} engine: could not keep its export: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove_stale_staging(folder: Path, name: str) -> None:
    """Staging folders an export left when its process was killed mid-way (a full-size model
    each); an hour old, no export in progress still writes there."""
    cutoff = time.time() - STALE_STAGING_S
    for stale in folder.glob(f".{name}-*"):
        with contextlib.suppress(OSError):
            if stale.stat().st_mtime < cutoff:
                shutil.rmtree(stale, ignore_errors=True)


def _onnx(path: Path, threads: int | None) -> Forward:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise EngineError(f"the onnx engine needs onnxruntime: {exc}") from exc
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Spinning threads burn a core waiting for the next call. Under a server on 2 cores,
        # two threads that sleep served 1.16-1.23x the images/s of one thread with minimal
        # clients and the same with httpx clients; two that spin lost 10 % with httpx
        # (docs/benchmarks.md, "The model thread takes its own batches").
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    in_name, out_name = session.get_inputs()[0].name, session.get_outputs()[0].name
    return lambda x: session.run([out_name], {in_name: np.ascontiguousarray(x, np.float32)})[0]


def _saved_model(path: Path) -> Forward:
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    (input_name,) = serve.structured_input_signature[1]

    def forward(x: np.ndarray) -> np.ndarray:
        outputs = serve(**{input_name: tf.constant(x, tf.float32)})
        return np.asarray(next(iter(outputs.values())))

    forward.loaded = serve  # type: ignore[attr-defined]  # keeps the loaded graph alive
    return forward


def _float32_output(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """What an export must reproduce: the model's float32 twin (the model itself if float32;
    the export module checks the twin against a mixed model within bfloat16's rounding)."""
    from core.inference.float32 import float32_model

    return np.asarray(float32_model(model)(x, training=False))


def _check_agrees(name: str, got: np.ndarray, want: np.ndarray) -> None:
    if got.shape != want.shape:
        raise EngineError(f"the {name} engine returned shape {got.shape}, Keras {want.shape}.")
    diff = float(np.abs(got - want).max()) if got.size else 0.0
    if not np.isfinite(diff) or diff > AGREE_ATOL:
        raise EngineError(f"the {name} engine differs from Keras by {diff:.2e} (> {AGREE_ATOL}).")
    if not np.array_equal(got.argmax(axis=1), want.argmax(axis=1)):
        raise EngineError(f"the {name} engine's top-1 labels differ from Keras'.")


def _time(forward: Forward, probe: np.ndarray, batch_size: int) -> dict[str, float]:
    """Milliseconds per call at batch 1 and at the serving batch (the probe, repeated)."""
    timings = {}
    for batch in sorted({1, batch_size}):
        x = np.resize(probe, (batch, *probe.shape[1:]))
        forward(x)
        calls, started = 0, time.perf_counter()
        while calls < 3 or time.perf_counter() - started < TIMING_SECONDS:
            forward(x)
            calls += 1
        timings[str(batch)] = 1000 * (time.perf_counter() - started) / calls
    return timings


@dataclass
class _Folder:
    path: Path
    temporary: bool


def _cache_folder(cache_dir: str | Path | None) -> _Folder:
    if cache_dir is not None:
        return _Folder(Path(cache_dir), temporary=False)
    return _Folder(Path(tempfile.mkdtemp(prefix="resnet-engines-")), temporary=True)


def _keep_alive(engine: Engine, folder: _Folder) -> Engine:
    if folder.temporary:
        weakref.finalize(engine, shutil.rmtree, folder.path, True)
    return engine
