"""One delivery of a training task: claim the run, train it with core, record the outcome.

The protocol is the one job lifecycle's (:mod:`jobs.records.lifecycle`, :mod:`worker.lifecycle`):

- **Claim.** :func:`worker.lifecycle.claim_job`: a conditional UPDATE from ``queued``, or a
  take-over of a run whose worker died (its heartbeat went stale); otherwise (its worker is
  alive, it finished, it was cancelled, it is out of attempts) this delivery does nothing. So a
  second delivery of the same message is harmless, and every claim counts an attempt.
- **Train.** ``core.training.train(..., resume=True)`` into ``<artifact root>/<run_id>``: after a
  crash it continues from the last complete epoch's checkpoint. Each epoch's row is an
  idempotent upsert, so the resumed run still has one row per epoch. An epoch's write rides
  out a database outage of up to ``stale_after_seconds`` (retried), and the finishing
  transaction writes the epochs of the history that have no row: a row that no write got through
  for (an epoch checkpointed by an attempt that then failed) is there at the end.
- **Alive.** The job's heartbeat (:class:`worker.lifecycle.JobHeartbeat`) beats every
  ``heartbeat_seconds`` for as long as the task runs (data loading, building the model and the
  final evaluation send no progress); progress reports beat too. If a beat, a progress report
  or an epoch finds the run no longer ``running`` in this attempt (it was reclaimed because this
  worker looked dead), training stops within a batch and this delivery records nothing.
- **Trials.** A run of an adaptive search (ASHA, median stopping: :mod:`worker.trials`)
  reports each epoch; at a rung it may pause (training stops after the rung's checkpoint and the
  run becomes ``paused`` until the search promotes it: a later delivery resumes it) or be
  stopped early (the search's cancel, recorded with its reason). A finished trial lets the
  search fill the slot it freed.
- **Outcome.** completed → ``succeeded`` with the test metrics and the artifacts; cancelled →
  ``cancelled``; an exception → ``failed`` with ``"Type: message"``. The exception does not
  leave the task: the worker process carries on with the next job.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.environment import describe_environment
from jobs.records import Run, RunStatus, session_scope
from jobs.records.artifacts import add_artifact
from jobs.records.lifecycle import RUN_JOBS
from jobs.records.models import Experiment
from jobs.records.runs import (
    finish_run,
    is_cancel_requested,
    list_epochs,
    record_epoch,
    update_progress,
)
from jobs.settings import Settings
from worker.artifacts import ArtifactFile, ArtifactStore
from worker.data import load_data, weights_path
from worker.lifecycle import JobHeartbeat, claim_job
from worker.runtime import describe_error, jsonable
from worker.trials import advance, pause, report

if TYPE_CHECKING:
    from core.training import EpochRecord, ProgressEvent, TrainHooks, TrainResult

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 1.0  # write progress (and so beat) at most this often
RETRY_PAUSE_S = (0.5, 1.0, 2.0, 4.0)  # between tries of an epoch's write; then 4 s each
# The database errors worth another try: the server went away or is restarting.
_TRANSIENT = (OperationalError, InterfaceError)
CANCEL_CHECK_EVERY_S = 0.5  # ask the database about a cancel at most this often

# Run-level metrics keep the headline numbers; per-class tables and the confusion matrix stay in
# the run's metrics.json (an artifact) and in evaluations.
_SUMMARY_SKIP = {"per_class", "confusion_matrix"}


class RunMonitor:
    """The training hooks of one run, fenced by the run's :class:`JobHeartbeat`.

    The hooks run on the training thread between batches: each does at most one short
    transaction, and progress and cancel checks are rate-limited. Database trouble in a
    progress report or cancel check is logged and ridden out (the next one may get through);
    an epoch that cannot be recorded fails the run. A write that finds the run no longer this
    attempt's marks it lost, and :meth:`should_cancel` then stops training within a batch.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        run_id: str,
        *,
        heartbeat: JobHeartbeat[Run],
        after_epoch: Callable[[], None] | None = None,
        retry_for_s: float = 60.0,
        trial: bool = False,
    ) -> None:
        self.sessions = sessions
        self.run_id = run_id
        self.heartbeat = heartbeat
        self.retry_for_s = retry_for_s
        self.attempt = heartbeat.attempt
        self.after_epoch = after_epoch
        self._last_progress = float("-inf")
        self._last_cancel_check = float("-inf")
        self._cancel = False
        self.trial = trial  # a trial of an adaptive search: report each epoch to it
        self.paused = False  # the search paused it at a rung: stop, and mark the run paused
        self.stopped_early: str | None = None  # the search stopped it: why

    # --- hooks -----------------------------------------------------------------------------

    def hooks(self) -> TrainHooks:
        from core.training import TrainHooks

        return TrainHooks(
            on_epoch=self.on_epoch, on_progress=self.on_progress, should_cancel=self.should_cancel
        )

    def on_epoch(self, record: EpochRecord) -> None:
        recorded = self._record_epoch(record.to_dict())
        if not recorded:
            self.heartbeat.lose("epoch")
            return
        if self.after_epoch is not None:
            self.after_epoch()
        if self.trial:
            self._report(record)

    def _report(self, record: EpochRecord) -> None:
        from jobs.records.trials import Next

        try:
            outcome = report(
                self.sessions, self.run_id, epoch=record.epoch, values=record.to_dict()
            )
        except Exception as exc:  # the next epoch reports the rung it missed
            log.warning("run %s: epoch not reported to its search: %s", self.run_id, exc)
            return
        if outcome.next is Next.PAUSE:
            self.paused = True
        elif outcome.next is Next.STOP:
            self.stopped_early = outcome.reason
            self._cancel = True

    def _record_epoch(self, row: dict[str, Any]) -> bool:
        """Write an epoch's row, trying again while the database is unreachable (a restart, a
        fail-over) for up to ``retry_for_s``; then the error fails the run."""
        deadline = time.monotonic() + self.retry_for_s
        for attempt in range(1_000_000):
            try:
                with session_scope(self.sessions) as session:
                    return record_epoch(session, self.run_id, row, attempt=self.attempt)
            except _TRANSIENT as exc:
                pause = RETRY_PAUSE_S[min(attempt, len(RETRY_PAUSE_S) - 1)]
                if time.monotonic() + pause > deadline:
                    raise
                log.warning(
                    "run %s: epoch %s not recorded yet (%s); trying again in %.1f s",
                    self.run_id, row.get("epoch"), describe_error(exc), pause,
                )  # fmt: skip
                time.sleep(pause)
        raise AssertionError("unreachable")

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
            self.heartbeat.lose("progress")

    def should_cancel(self) -> bool:
        if self.heartbeat.lost.is_set() or self.paused or self.stopped_early:
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
    claimed = claim_job(
        sessions,
        RUN_JOBS,
        run_id,
        stale_after_s=settings.stale_after_seconds,
        read=lambda run: (dict(run.config), run.experiment_id, _standing(run)),
    )
    if claimed is None:
        return "skipped"
    (config_data, experiment_id, standing), attempt = claimed
    trial = standing is not None
    if standing == "pause":  # its worker died at a rung, after the report: it waits there
        pause(sessions, run_id, str(experiment_id), attempt)
        return "paused"
    store = ArtifactStore.from_settings(settings)
    heartbeat = JobHeartbeat(
        sessions, RUN_JOBS, run_id, attempt=attempt, interval_s=settings.heartbeat_seconds
    )
    monitor = RunMonitor(
        sessions,
        run_id,
        heartbeat=heartbeat,
        after_epoch=lambda: store.push_checkpoint(run_id),
        retry_for_s=settings.stale_after_seconds,
        trial=trial,
    )
    lost = heartbeat.lost
    try:
        try:
            with heartbeat:
                result = _train(
                    run_id, config_data, settings=settings, store=store, monitor=monitor
                )
                # Still beating: copying a run up to a URL root can take a while.
                completed = result.status == "completed" and not lost.is_set()
                files = store.publish(run_id) if completed else []
        finally:
            _release_memory()
    except Exception as exc:
        if lost.is_set():
            return "lost"
        log.exception("run %s: failed", run_id)
        outcome = _finish(sessions, run_id, attempt, RunStatus.FAILED, error=describe_error(exc))
        return _advanced(sessions, experiment_id if trial else None, outcome)
    if lost.is_set():
        return "lost"
    paused = result.status == "cancelled" and monitor.paused and not monitor.stopped_early
    # Not paused if the run is no longer this attempt's, or a cancel came first: then a cancel.
    if paused and pause(sessions, run_id, str(experiment_id), attempt):
        log.info("run %s: paused at epoch %d", run_id, result.epochs_completed)
        return "paused"
    if result.status == "cancelled":
        note = monitor.stopped_early or (
            f"cancelled on request after {result.epochs_completed} epoch(s)"
        )
        outcome = _finish(sessions, run_id, attempt, RunStatus.CANCELLED, error=note)
        return _advanced(sessions, experiment_id if trial else None, outcome)
    if not record_success(sessions, run_id, attempt, result, files):
        return "lost"
    store.discard_staging(run_id)
    log.info("run %s: succeeded (%d artifacts)", run_id, len(files))
    return _advanced(sessions, experiment_id if trial else None, "succeeded")


def record_success(
    sessions: sessionmaker[Session],
    run_id: str,
    attempt: int,
    result: TrainResult,
    files: list[ArtifactFile],
) -> bool:
    """Finish a run that trained to the end as ``succeeded``, with its summary and artifacts.

    Returns:
        ``False`` if the run was no longer running in ``attempt``: nothing recorded.
    """
    summary = {k: v for k, v in result.metrics.items() if k not in _SUMMARY_SKIP}
    summary["environment"] = describe_environment()  # names the Keras backend and its versions
    summary.update(
        epochs_completed=result.epochs_completed,
        train_seconds=result.seconds,
        dtype_policy=result.dtype_policy,
    )
    with session_scope(sessions) as session:
        # The epochs missing from the records: one whose write never got through in an earlier
        # attempt, which then failed after checkpointing it, is recorded here. Rows already there
        # stay as written (their recorded_at is when the epoch ended).
        recorded = {row.epoch for row in list_epochs(session, run_id)}
        for record in result.history:
            if record.epoch not in recorded:
                record_epoch(session, run_id, record.to_dict(), attempt=attempt)
        finished = finish_run(
            session, run_id, status=RunStatus.SUCCEEDED, metrics=jsonable(summary), attempt=attempt
        )
        if finished:
            for f in files:
                add_artifact(session, run_id, kind=f.kind, uri=f.uri, path=f.local)
    if not finished:
        log.warning("run %s: finished training but it was no longer running", run_id)
    return bool(finished)


def _standing(run: Run) -> str | None:
    """``None`` for a run that is no trial of an adaptive search, else what it does first
    (read in the claim's transaction)."""
    from sqlalchemy.orm import object_session

    from jobs.records.trials import Rule, standing

    session = object_session(run)
    if run.experiment_id is None or session is None:
        return None
    experiment = session.get(Experiment, run.experiment_id)
    if experiment is None or Rule.of(experiment.spec) is None:
        return None
    return standing(session, run.id).value


def _advanced(sessions: sessionmaker[Session], experiment_id: str | None, outcome: str) -> str:
    """A trial finished: let its search decide and fill the slot (its failure is logged, not
    the run's: the sweeper advances every search again)."""
    if experiment_id is not None:
        try:
            advance(sessions, [experiment_id])
        except Exception as exc:
            log.warning("experiment %s: not advanced: %s", experiment_id, describe_error(exc))
    return outcome


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
    if config.init_from is not None:
        config = config.model_copy(
            update={"init_from": str(weights_path(config.init_from, settings))}
        )
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
    import core.training
    from core.data.pipeline import uses_tf_data

    if uses_tf_data():  # the tf.data pipeline; other backends' NumPy one is light
        import core.data.pipeline_tf  # noqa: F401


def _release_memory() -> None:
    """Free the finished run's graphs and tensors: the pool process lives on for the next job."""
    import sys

    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
    gc.collect()
