"""One delivery of a training task: claim the run, train it with core, record the outcome.

The protocol (see :mod:`jobs.records.repository`):

- **Claim.** ``claim_run`` is a conditional UPDATE from ``queued``. If it fails the run is
  running, finished or cancelled. A running run whose heartbeat went stale lost its worker
  (``kill -9``, OOM): ``reclaim_stale_run`` puts it back to ``queued`` and it is claimed again
  here, in the same transaction; otherwise (its worker is alive, it finished, it was cancelled,
  it is out of attempts) this delivery does nothing. So a second delivery of the same message is
  harmless, and every claim counts an attempt.
- **Train.** ``core.training.train(..., resume=True)`` into ``<artifact root>/<run_id>``: after a
  crash it continues from the last complete epoch's checkpoint. Each epoch's row is an
  idempotent upsert, so the resumed run still has one row per epoch.
- **Alive.** A heartbeat thread beats every ``heartbeat_seconds`` for as long as the task runs
  (data loading, building the model and the final evaluation send no progress); progress
  reports beat too. If a beat or a progress report finds the run no longer ``running`` (it was
  reclaimed because this worker looked dead), training stops and this delivery records nothing.
- **Outcome.** completed → ``succeeded`` with the test metrics and the artifacts; cancelled →
  ``cancelled``; an exception → ``failed`` with ``"Type: message"``. The exception does not
  leave the task: the worker process carries on with the next job.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from core.environment import describe_environment
from jobs.records import RecordNotFound, RunStatus, session_scope
from jobs.records.repository import (
    ReclaimOutcome,
    add_artifact,
    claim_run,
    finish_run,
    get_run,
    heartbeat,
    is_cancel_requested,
    reclaim_stale_run,
    record_epoch,
    update_progress,
)
from jobs.settings import Settings
from worker.artifacts import ArtifactStore
from worker.data import load_data
from worker.runtime import describe_error, jsonable, worker_name

if TYPE_CHECKING:
    from core.training import EpochRecord, ProgressEvent, TrainHooks, TrainResult

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 1.0  # write progress (and so beat) at most this often
CANCEL_CHECK_EVERY_S = 0.5  # ask the database about a cancel at most this often

# Run-level metrics keep the headline numbers; per-class tables and the confusion matrix stay in
# the run's metrics.json (an artifact) and in evaluations.
_SUMMARY_SKIP = {"per_class", "confusion_matrix"}


def claim(
    sessions: sessionmaker[Session], run_id: str, *, stale_after_s: float
) -> tuple[dict[str, Any], int] | None:
    """Claim the run for this process, reclaiming it first if its worker died.

    Returns:
        The run's stored config and this claim's attempt number (every later write is fenced
        by it), or ``None`` when this delivery has nothing to do.
    """
    me = worker_name()
    with session_scope(sessions) as session:
        try:
            claimed = claim_run(session, run_id, worker_host=me)
            if not claimed:
                outcome = reclaim_stale_run(session, run_id, stale_after_s=stale_after_s)
                if outcome is ReclaimOutcome.NOT_STALE:
                    status = get_run(session, run_id).status
                    why = "its worker is alive" if status == RunStatus.RUNNING else status.value
                    log.info("run %s: not claimed (%s); nothing to do", run_id, why)
                    return None
                if outcome is not ReclaimOutcome.REQUEUED:  # out of attempts, or cancelled
                    log.warning(
                        "run %s: not claimed: its worker stopped beating and it is now %s",
                        run_id,
                        get_run(session, run_id).status.value,
                    )
                    return None
                log.warning("run %s: its worker stopped beating; taking it over", run_id)
                claimed = claim_run(session, run_id, worker_host=me)
        except RecordNotFound:
            log.info("run %s: no such run (deleted?); nothing to do", run_id)
            return None
        if not claimed:  # pragma: no cover - another worker won the race after the reclaim
            return None
        run = get_run(session, run_id)
        log.info("run %s: attempt %d of %d on %s", run_id, run.attempts, run.max_attempts, me)
        return dict(run.config), run.attempts


class RunMonitor:
    """The training hooks of one run, and the heartbeat thread that keeps it alive.

    The hooks run on the training thread between batches: each does at most one short
    transaction, and progress and cancel checks are rate-limited. Database trouble in a
    progress report, cancel check or heartbeat is logged and ridden out (the next one may get
    through); an epoch that cannot be recorded fails the run.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        run_id: str,
        *,
        attempt: int,
        heartbeat_s: float,
        after_epoch: Callable[[], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.run_id = run_id
        self.attempt = attempt
        self.heartbeat_s = heartbeat_s
        self.after_epoch = after_epoch
        self.lost = threading.Event()  # the run is no longer ours: stop, record nothing
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_progress = float("-inf")
        self._last_cancel_check = float("-inf")
        self._cancel = False

    # --- heartbeat -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._beat, name=f"heartbeat-{self.run_id}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _beat(self) -> None:
        last = time.monotonic()
        while not self._done.wait(self.heartbeat_s):
            now = time.monotonic()
            if now - last > 2 * self.heartbeat_s:
                # Native code holding the GIL (library loading, graph building) starves this
                # thread; stale_after_seconds must leave room for it.
                log.warning("run %s: heartbeat %.1f s late", self.run_id, now - last)
            last = now
            try:
                with session_scope(self.sessions) as session:
                    alive = heartbeat(session, self.run_id, attempt=self.attempt)
            except Exception as exc:
                log.warning("run %s: heartbeat failed: %s", self.run_id, describe_error(exc))
                continue
            if not alive:
                self._lose("heartbeat")
                return

    def _lose(self, where: str) -> None:
        if not self.lost.is_set():
            log.warning(
                "run %s: no longer running (%s): it was taken from this worker; stopping",
                self.run_id,
                where,
            )
            self.lost.set()

    # --- hooks -----------------------------------------------------------------------------

    def hooks(self) -> TrainHooks:
        from core.training import TrainHooks

        return TrainHooks(
            on_epoch=self.on_epoch, on_progress=self.on_progress, should_cancel=self.should_cancel
        )

    def on_epoch(self, record: EpochRecord) -> None:
        with session_scope(self.sessions) as session:
            recorded = record_epoch(session, self.run_id, record.to_dict(), attempt=self.attempt)
        if not recorded:
            self._lose("epoch")
            return
        if self.after_epoch is not None:
            self.after_epoch()

    def on_progress(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_EVERY_S and event.batch != event.batches:
            return
        self._last_progress = now
        progress = {
            "epoch": event.epoch,
            "epochs": event.epochs,
            "batch": event.batch,
            "batches": event.batches,
            "fraction": event.fraction,
            "loss": event.loss,
            "accuracy": event.accuracy,
            "images_per_second": event.images_per_second,
            "eta_seconds": event.eta_seconds,
        }
        try:
            with session_scope(self.sessions) as session:
                running = update_progress(
                    session, self.run_id, jsonable(progress), attempt=self.attempt
                )
        except Exception as exc:
            log.warning("run %s: progress not recorded: %s", self.run_id, describe_error(exc))
            return
        if not running:
            self._lose("progress")

    def should_cancel(self) -> bool:
        if self.lost.is_set():
            return True
        now = time.monotonic()
        if now - self._last_cancel_check >= CANCEL_CHECK_EVERY_S:
            self._last_cancel_check = now
            try:
                with session_scope(self.sessions) as session:
                    self._cancel = is_cancel_requested(session, self.run_id)
            except Exception as exc:
                log.warning("run %s: cancel check failed: %s", self.run_id, describe_error(exc))
        return self._cancel


def run_training(run_id: str, *, settings: Settings, sessions: sessionmaker[Session]) -> str:
    """Handle one delivery of ``worker.train_run``.

    Returns:
        What happened: ``succeeded``, ``cancelled``, ``failed``, ``skipped`` (nothing to do) or
        ``lost`` (the run was taken from this worker mid-way).

    Raises:
        sqlalchemy.exc.OperationalError: the database could not be reached to claim or to
            finish the run (the task retries; a run left ``running`` is reclaimed once its
            heartbeat is stale).
    """
    # Import TensorFlow before the claim: loading its libraries holds the GIL for seconds, which
    # would starve the heartbeat thread of a claimed run (a first task of a fresh pool process).
    _preload()
    claimed = claim(sessions, run_id, stale_after_s=settings.stale_after_seconds)
    if claimed is None:
        return "skipped"
    config_data, attempt = claimed
    store = ArtifactStore.from_settings(settings)
    monitor = RunMonitor(
        sessions,
        run_id,
        attempt=attempt,
        heartbeat_s=settings.heartbeat_seconds,
        after_epoch=lambda: store.push_checkpoint(run_id),
    )
    monitor.start()
    try:
        try:
            result = _train(run_id, config_data, settings=settings, store=store, monitor=monitor)
            # Still beating: copying a run up to a URL root can take a while.
            completed = result.status == "completed" and not monitor.lost.is_set()
            files = store.publish(run_id) if completed else []
        finally:
            monitor.stop()
            _release_memory()
    except Exception as exc:
        if monitor.lost.is_set():
            return "lost"
        log.exception("run %s: failed", run_id)
        return _finish(sessions, run_id, attempt, RunStatus.FAILED, error=describe_error(exc))
    if monitor.lost.is_set():
        return "lost"
    if result.status == "cancelled":
        note = f"cancelled on request after {result.epochs_completed} epoch(s)"
        return _finish(sessions, run_id, attempt, RunStatus.CANCELLED, error=note)
    summary = {k: v for k, v in result.metrics.items() if k not in _SUMMARY_SKIP}
    summary["environment"] = describe_environment()
    summary.update(
        epochs_completed=result.epochs_completed,
        train_seconds=result.seconds,
        dtype_policy=result.dtype_policy,
    )
    with session_scope(sessions) as session:
        finished = finish_run(
            session, run_id, status=RunStatus.SUCCEEDED, metrics=jsonable(summary), attempt=attempt
        )
        if finished:
            for f in files:
                add_artifact(session, run_id, kind=f.kind, uri=f.uri, path=f.local)
    if not finished:
        log.warning("run %s: finished training but it was no longer running", run_id)
        return "lost"
    store.discard_staging(run_id)
    log.info("run %s: succeeded (%d artifacts)", run_id, len(files))
    return "succeeded"


def _train(
    run_id: str,
    config_data: dict[str, Any],
    *,
    settings: Settings,
    store: ArtifactStore,
    monitor: RunMonitor,
) -> TrainResult:
    from core.training import TrainConfig, train

    config = TrainConfig.model_validate(config_data)
    dataset = load_data(config.data, settings)
    if store.pull_checkpoint(run_id):
        log.info("run %s: fetched its last checkpoint from %s", run_id, store.run_uri(run_id))
    out_dir = store.workdir(run_id)
    log.info("run %s: training %s on %s into %s", run_id, config.architecture, config.data, out_dir)
    return train(config, out_dir, hooks=monitor.hooks(), dataset=dataset, resume=True)


def _finish(
    sessions: sessionmaker[Session],
    run_id: str,
    attempt: int,
    status: RunStatus,
    *,
    error: str | None,
) -> str:
    with session_scope(sessions) as session:
        finished = finish_run(session, run_id, status=status, error=error, attempt=attempt)
    if not finished:
        log.warning("run %s: not running any more; %s not recorded", run_id, status.value)
        return "lost"
    log.info("run %s: %s%s", run_id, status.value, f" ({error})" if error else "")
    return status.value


def _preload() -> None:
    import core.data.pipeline
    import core.training  # noqa: F401


def _release_memory() -> None:
    """Free the finished run's graphs and tensors: the pool process lives on for the next job."""
    import sys

    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
    gc.collect()
