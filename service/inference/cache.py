"""Loaded models, kept in memory: loaded once, warmed up, evicted least-recently-used.

A model is loaded on the first request that needs it, in a thread (importing TensorFlow and
reading the ``.keras`` file take seconds; the event loop keeps serving meanwhile). Concurrent
requests for a model that is loading wait for the same load. A loaded model is warmed up (the
:class:`~core.inference.Predictor` traces its ``tf.function`` once; one more call at the full
batch size allocates the buffers the batcher will use) and gets its :class:`DynamicBatcher`.

With ``RESNET_PREDICT_ENGINE=auto`` (the default) a model serves on Keras as soon as it is
loaded, while a background thread exports it, checks each engine against Keras and times them
(:func:`core.inference.engines.make_engine`); the faster one takes over from the next batch.
Exports are kept beside the model file, so later loads only time them. A failed export leaves
the model on Keras and says why in its status.

The cache holds at most ``model_cache_bytes`` of weights: loading past it evicts the least
recently used models (never the one just loaded). An evicted model's batcher finishes what it
has queued first.

Models are keyed by their artifact's location, so the names and versions of one run share a
single copy. A location on shared storage (``gs://…``) is copied to
``<state_dir>/model-cache/<run id>/`` first, with its ``labels.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.training.rundir import LABELS_FILE, MODEL_FILE
from jobs.storage import is_url
from service.inference.batcher import DynamicBatcher
from service.inference.images import InputSpec
from service.inference.metrics import PredictMetrics

if TYPE_CHECKING:
    from core.inference import Predictor
    from jobs.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRef:
    """Which model a request asked for, resolved from the records."""

    run_id: str
    uri: str  # the model artifact: a local path, or a URL on shared storage
    name: str | None  # None: the run was addressed by its id
    version: int | None
    architecture: str


class ModelUnavailable(Exception):
    """A model could not be loaded (its file is missing or refused); the message says why."""


@dataclass
class LoadedModel:
    """A model in memory with its batcher."""

    uri: str
    run_id: str
    predictor: Predictor
    spec: InputSpec
    batcher: DynamicBatcher
    nbytes: int
    load_seconds: float
    # RESNET_PREDICT_ENGINE=auto: {"state": "choosing" | "chosen" | "failed", ...}
    engine_choice: dict[str, Any] | None = field(default=None)

    @property
    def class_names(self) -> list[str]:
        return list(self.predictor.class_names)

    @property
    def num_classes(self) -> int:
        return int(self.predictor.num_classes)

    @property
    def multi_label(self) -> bool:
        return bool(self.predictor.multi_label)

    @property
    def threshold(self) -> float:
        return float(self.predictor.threshold)


class ModelCache:
    """The process's loaded models.

    Args:
        settings: batch size, queue delay and limit, pixel limit, ``model_cache_bytes``, and
            ``state_dir`` for copies of models on shared storage.
        metrics: the prediction metrics.
    """

    def __init__(self, settings: Settings, metrics: PredictMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.capacity = settings.model_cache_bytes
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._loading: dict[str, asyncio.Future[LoadedModel]] = {}
        self._failed: dict[str, str] = {}
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="model-load")
        # RESNET_PREDICT_ENGINE=auto: one choice at a time, in one daemon thread (a server
        # stopping mid-export does not wait for it); None tells it to stop.
        self._choices: queue.SimpleQueue[tuple[LoadedModel, Path] | None] = queue.SimpleQueue()
        self._chooser: threading.Thread | None = None
        self._stopping = False

    @property
    def nbytes(self) -> int:
        return sum(m.nbytes for m in self._models.values())

    def status(self, uri: str) -> dict[str, Any]:
        """``{"state": "loaded" | "loading" | "not_loaded" | "failed", ...}`` of a model."""
        model = self._models.get(uri)
        if model is not None:
            return {
                "state": "loaded",
                "queued": model.batcher.depth,
                "weight_bytes": model.nbytes,
                "load_seconds": round(model.load_seconds, 3),
                "engine": model.predictor.engine.name,
                "engine_choice": model.engine_choice,
            }
        if uri in self._loading:
            return {"state": "loading"}
        if uri in self._failed:
            return {"state": "failed", "error": self._failed[uri]}
        return {"state": "not_loaded"}

    async def get(self, ref: ModelRef) -> LoadedModel:
        """The loaded model for ``ref``, loading it (once, however many ask) if needed.

        Raises:
            ModelUnavailable: it could not be loaded.
        """
        model = self._models.get(ref.uri)
        if model is not None and model.batcher.closed:  # its model thread stopped: reload
            log.warning("the batcher of run %s had stopped; loading the model again", ref.run_id)
            del self._models[ref.uri]
            model = None
        if model is not None:
            self._models.move_to_end(ref.uri)
            return model
        pending = self._loading.get(ref.uri)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[ref.uri] = pending
            asyncio.get_running_loop().create_task(self._load(ref, pending))
        # Shielded: a request that times out does not cancel a load others wait for.
        return await asyncio.shield(pending)

    async def _load(self, ref: ModelRef, done: asyncio.Future[LoadedModel]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            predictor, engines = await loop.run_in_executor(self._loader, self._load_predictor, ref)
        except Exception as exc:
            message = str(exc) if isinstance(exc, ModelUnavailable) else _describe(exc)
            log.warning("model of run %s could not be loaded: %s", ref.run_id, message)
            self._failed[ref.uri] = message
            done.set_exception(ModelUnavailable(message))
            done.exception()  # retrieved: nobody may be waiting any more
            return
        finally:
            self._loading.pop(ref.uri, None)
        s = self.settings
        model = LoadedModel(
            uri=ref.uri,
            run_id=ref.run_id,
            predictor=predictor,
            spec=InputSpec(
                shape=predictor.input_shape,
                resize=predictor.resize_policy,
                max_pixels=s.predict_max_pixels,
            ),
            batcher=DynamicBatcher(
                predictor.probabilities,
                run=ref.run_id,
                max_batch_size=s.predict_max_batch_size,
                max_delay_s=s.predict_max_queue_delay_ms / 1000,
                queue_limit=s.predict_queue_limit,
                metrics=self.metrics,
            ),
            nbytes=_weight_bytes(predictor),
            load_seconds=time.perf_counter() - started,
        )
        if engines is not None:
            self._choose_engine_later(model, engines)
        self._failed.pop(ref.uri, None)
        self._models[ref.uri] = model
        self.metrics.loads.inc()
        log.info(
            "loaded the model of run %s (%d weight bytes) in %.1f s",
            ref.run_id, model.nbytes, model.load_seconds,
        )  # fmt: skip
        await self._evict(keep=ref.uri)
        done.set_result(model)

    def _load_predictor(self, ref: ModelRef) -> tuple[Predictor, Path | None]:
        """Runs in the loader thread: the first call imports TensorFlow. ``auto`` starts on
        Keras; its choice is made in the background (:meth:`_choose_engine_later`) with the
        exports kept in the folder returned (named by the digest of the file loaded)."""
        from core.inference import ModelLoadError, Predictor
        from core.inference.predictor import engine_folder

        limit_compute_threads(self.settings.predict_compute_threads)
        path = local_model_file(self.settings, ref.run_id, ref.uri)
        batch = self.settings.predict_max_batch_size
        engine = self.settings.predict_engine
        try:
            predictor = Predictor.load(
                path, batch_size=batch, engine="keras" if engine == "auto" else engine,
                threads=engine_threads(self.settings.predict_compute_threads),
            )  # fmt: skip
        except ModelLoadError as exc:
            raise ModelUnavailable(str(exc)) from None
        # Warm-up at the largest batch the batcher sends (the constructor ran a batch of one).
        predictor.probabilities(np.zeros((batch, *predictor.input_shape), np.uint8))
        return predictor, engine_folder(path) if engine == "auto" else None

    def _choose_engine_later(self, model: LoadedModel, engines: Path) -> None:
        """Export, check and time the engines in the chooser thread while the model serves
        on Keras; it switches to the chosen one (:meth:`_choose_engine`)."""
        model.engine_choice = {"state": "choosing"}
        if self._chooser is None:
            loop = asyncio.get_running_loop()
            self._chooser = threading.Thread(
                target=self._run_choices, args=(loop,), daemon=True, name="engine-choice"
            )
            self._chooser.start()
        self._choices.put((model, engines))

    def _run_choices(self, loop: asyncio.AbstractEventLoop) -> None:
        while (job := self._choices.get()) is not None and not self._stopping:
            model, engines = job
            try:
                if self._choose_engine(model, engines):
                    # The exported engine holds its own copy of the weights: count it, and
                    # let the cache evict past its budget (on the loop, which owns the cache).
                    model.nbytes += _engine_bytes(engines, model.predictor.engine.name)
                    with contextlib.suppress(RuntimeError):  # the loop has closed
                        loop.call_soon_threadsafe(self._evict_soon, model.uri)
            except BaseException as exc:  # the model keeps serving on Keras; say why
                log.warning("engine choice for run %s failed: %s", model.run_id, _describe(exc))
                model.engine_choice = {"state": "failed", "error": _describe(exc)}

    def _evict_soon(self, keep: str) -> None:
        if keep in self._models:
            asyncio.get_running_loop().create_task(self._evict(keep=keep))

    def _skipped(self, model: LoadedModel, engines: Path) -> bool:
        """Whether the model is no longer worth an engine, said in its status: evicted, or
        its folder gone (a deleted run's folder is not made again by an export)."""
        folder = engines.parent.parent  # <model folder>/engines/<digest>
        if not self._stopping and self._models.get(model.uri) is model and folder.is_dir():
            return False
        model.engine_choice = {"state": "skipped", "reason": "evicted or its file removed"}
        return True

    def _choose_engine(self, model: LoadedModel, engines: Path) -> bool:
        """Whether the model switched to an exported engine."""
        from core.inference.engines import make_engine

        predictor = model.predictor
        started = time.perf_counter()
        if self._skipped(model, engines):
            return False
        engine = make_engine(
            predictor.model, predictor.input_shape, engine="auto",
            cache_dir=engines, batch_size=predictor.batch_size,
            threads=engine_threads(self.settings.predict_compute_threads),
        )  # fmt: skip
        if self._skipped(model, engines):  # evicted or deleted while it exported
            return False
        switched = engine.name != predictor.engine.name
        if switched:
            predictor.use_engine(engine)
        model.engine_choice = {
            "state": "chosen", "seconds": round(time.perf_counter() - started, 3),
            **engine.report,
        }  # fmt: skip
        log.info("run %s now serves on %s: %s", model.run_id, engine.name, engine.report)
        return switched

    async def _evict(self, *, keep: str) -> None:
        while self.nbytes > self.capacity and len(self._models) > 1:
            uri = next(u for u in self._models if u != keep)
            model = self._models.pop(uri)
            self.metrics.evictions.inc()
            log.info("evicting the model of run %s (cache over %d bytes)", model.run_id,
                     self.capacity)  # fmt: skip
            asyncio.get_running_loop().create_task(model.batcher.close())
        self.metrics.cache_bytes.set(self.nbytes)

    async def close(self) -> None:
        """Finish queued work and stop every batcher and the loader."""
        models = list(self._models.values())
        self._models.clear()
        await asyncio.gather(*(m.batcher.close() for m in models), return_exceptions=True)
        self._loader.shutdown(wait=False, cancel_futures=True)
        self._stopping = True
        self._choices.put(None)


def local_model_file(settings: Settings, run_id: str, uri: str) -> Path:
    """The model file of a run on this host: its own path, or for a model on shared storage
    (``gs://…``) a copy in ``<state_dir>/model-cache/<run id>/`` with its ``labels.json``.

    Runs in a worker thread: copying a URL imports TensorFlow (for ``tf.io.gfile``).

    Raises:
        ModelUnavailable: a model on shared storage is not there.
    """
    uri = uri.removeprefix("file://")
    if not is_url(uri):
        return Path(uri)
    import tensorflow as tf

    folder = model_cache_folder(settings, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    parent = uri.rsplit("/", 1)[0]
    if not tf.io.gfile.exists(uri):
        raise ModelUnavailable(f"model file not found: {uri}")
    tf.io.gfile.copy(uri, str(folder / MODEL_FILE), True)
    if tf.io.gfile.exists(f"{parent}/{LABELS_FILE}"):
        tf.io.gfile.copy(f"{parent}/{LABELS_FILE}", str(folder / LABELS_FILE), True)
    return folder / MODEL_FILE


def model_cache_folder(settings: Settings, run_id: str) -> Path:
    """Where this host keeps its copies of a run's files from shared storage (one of the
    run's folders: :func:`jobs.records.run_files.run_folders`, freed with the run)."""
    return (settings.state_dir / "model-cache" / run_id).resolve()


def compute_threads(configured: int | None, *, spare: int = 1) -> int:
    """The intra-op threads to use: ``configured``, else the usable cores but ``spare`` (at
    least 1)."""
    if configured is not None:
        return configured
    return max(1, len(os.sched_getaffinity(0)) - spare)


def engine_threads(configured: int | None) -> int:
    """The intra-op threads of an exported engine (ONNX Runtime): ``configured``, else every
    usable core. Unlike TensorFlow's pool (:func:`limit_compute_threads`), its threads sleep
    between calls, so the event loop gets a core whenever it needs one."""
    return compute_threads(configured, spare=0)


def limit_compute_threads(configured: int | None) -> None:
    """Give TensorFlow's kernels all cores but one, and run ops one at a time (inter-op 1).

    With every core in TensorFlow's pool, its threads and the event loop take turns on the
    same cores and both slow down: on 2 cores, one intra-op thread served 1.6x the images/s of
    two (docs/benchmarks.md). Applied once, before TensorFlow starts; where it has already
    started (another part of the process used it) the setting cannot change and is left.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    threads = compute_threads(configured)
    try:
        if tf.config.threading.get_intra_op_parallelism_threads() != threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
            log.info("prediction: %d TensorFlow compute thread(s)", threads)
    except RuntimeError:  # TensorFlow is already initialised in this process
        log.info("prediction: TensorFlow already initialised; its thread pools are kept")


def _engine_bytes(folder: Path, engine: str) -> int:
    """The size of an exported engine's files (its runtime holds the weights again)."""
    target = folder / ("model.onnx" if engine == "onnx" else "savedmodel")
    files = [target] if target.is_file() else [f for f in target.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files)


def _weight_bytes(predictor: Predictor) -> int:
    return int(
        sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in predictor.model.weights)
    )


def _describe(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:300]
