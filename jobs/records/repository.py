"""The few functions that change the records, shared by the service and the worker.

Plain functions over a :class:`~sqlalchemy.orm.Session`; the caller owns the transaction
(:func:`jobs.records.db.session_scope`). State changes that can race — a second delivery of a
task, a cancel while a worker starts, two workers redelivered the same message — are single
conditional ``UPDATE`` statements: the database decides which caller wins, and the losers get
``False`` and do nothing.

A run's life::

    create_run ─▶ queued ──claim_run──▶ running ──finish_run──▶ succeeded | failed | cancelled
                    │  ▲                    │
        request_cancel  └─reclaim_stale_run─┘  (the worker's heartbeat stopped: crash, OOM kill)
                    ▼
                cancelled

Every attempt (claim) increments ``attempts``; when a run whose heartbeat went stale has used
``max_attempts`` attempts, :func:`reclaim_stale_run` fails it instead of queueing it again, so
a job that always kills its worker stops being retried.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Executable,
    String,
    and_,
    case,
    delete,
    exists,
    func,
    insert,
    inspect,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from core.training.hooks import EPOCH_METRICS
from jobs.records.errors import RecordConflict, RecordNotFound
from jobs.records.models import (
    TERMINAL_RUN_STATUSES,
    ApiKey,
    Artifact,
    ArtifactKind,
    Base,
    DatasetRecord,
    EpochMetric,
    Evaluation,
    EvaluationStatus,
    Experiment,
    ExperimentKind,
    ModelVersion,
    Run,
    RunStatus,
    Scope,
    utcnow,
)

__all__ = [
    "API_KEY_PREFIX",
    "ReclaimOutcome",
    "add_artifact",
    "authenticate",
    "claim_evaluation",
    "claim_run",
    "create_api_key",
    "create_evaluation",
    "create_run",
    "delete_run",
    "evaluation_heartbeat",
    "finish_evaluation",
    "finish_run",
    "get_evaluation",
    "get_run",
    "hash_api_key",
    "heartbeat",
    "is_cancel_requested",
    "list_epochs",
    "list_evaluations",
    "list_runs",
    "reclaim_stale_evaluation",
    "reclaim_stale_run",
    "record_epoch",
    "register_dataset",
    "request_cancel",
    "revoke_api_key",
    "stale_evaluation_ids",
    "stale_run_ids",
    "update_progress",
]

API_KEY_PREFIX = "rsk_"
API_KEY_DISPLAY_CHARS = 8
# authenticate() writes last_used_at at most this often per key, not on every request.
LAST_USED_RESOLUTION = timedelta(seconds=60)

_M = TypeVar("_M", bound=Base)


class ReclaimOutcome(enum.StrEnum):
    """What :func:`reclaim_stale_run` did."""

    REQUEUED = "requeued"  # back to queued: claim it (claim_run) or enqueue it again
    GAVE_UP = "gave_up"  # out of attempts: marked failed
    CANCELLED = "cancelled"  # a cancel was pending when the worker died: marked cancelled
    NOT_STALE = "not_stale"  # not running, or its worker is alive: nothing to do


# --- helpers ---------------------------------------------------------------------------------


def _changed(session: Session, statement: Executable) -> int:
    """Run a Core UPDATE/DELETE and return how many rows it changed."""
    result = session.execute(statement, execution_options={"synchronize_session": False})
    return cast(CursorResult[Any], result).rowcount


def _get(session: Session, model: type[_M], record_id: str | int, *, fresh: bool = True) -> _M:
    # populate_existing: a conditional UPDATE just changed the row behind the identity map.
    row = session.get(model, record_id, populate_existing=fresh)
    if row is None:
        raise RecordNotFound(model.__name__, record_id)
    return row


def _ensure_run(session: Session, run_id: str) -> None:
    if not session.scalar(select(exists().where(Run.id == run_id))):
        raise RecordNotFound("Run", run_id)


def _insert(session: Session, model: type[Base]) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_update`` on SQLite and PostgreSQL."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(model)
    if name == "sqlite":
        return sqlite.insert(model)
    raise NotImplementedError(
        f"Unsupported database dialect: {name!r}. Expected sqlite or postgresql"
    )


def _stale(cutoff: datetime) -> ColumnElement[bool]:
    return and_(
        Run.status == RunStatus.RUNNING,
        or_(Run.heartbeat_at.is_(None), Run.heartbeat_at < cutoff),
    )


# --- runs ------------------------------------------------------------------------------------


def create_run(
    session: Session,
    *,
    architecture: str,
    dataset: str,
    config: Mapping[str, Any],
    api_key_id: str | None = None,
    max_attempts: int = 3,
    dataset_id: str | None = None,
    out_dir: str | None = None,
) -> Run:
    """Add a queued run; enqueue its task only after the session commits.

    Args:
        session: The session; the run is flushed (it has its id) but not committed.
        architecture: The model name, e.g. ``"resnet20"``.
        dataset: The data spec the config trains on.
        config: The full validated training config, JSON-ready (``TrainConfig.model_dump()``).
            Its ``epochs``, if present, becomes ``epochs_planned``.
        api_key_id: The key that asked for it, if any.
        max_attempts: How many times a worker may start it before a crash loop is given up on.
        dataset_id: The registered dataset, if the spec names one.
        out_dir: Where its files go (a directory or a URI prefix).

    Returns:
        The new run, status ``queued``.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    epochs = config.get("epochs")
    run = Run(
        architecture=architecture,
        dataset=dataset,
        dataset_id=dataset_id,
        config=dict(config),
        api_key_id=api_key_id,
        status=RunStatus.QUEUED,
        cancel_requested=False,
        attempts=0,
        max_attempts=max_attempts,
        epochs_planned=epochs if isinstance(epochs, int) else None,
        epochs_completed=0,
        out_dir=out_dir,
    )
    session.add(run)
    session.flush()
    return run


def get_run(session: Session, run_id: str) -> Run:
    """The run with this id, read afresh from the database.

    Raises:
        RecordNotFound: No such run.
    """
    return _get(session, Run, run_id)


def list_runs(
    session: Session,
    *,
    status: RunStatus | str | None = None,
    architecture: str | None = None,
    dataset: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Run], int]:
    """A page of runs, newest first, and how many match the filters in all."""
    if limit < 0 or offset < 0:
        raise ValueError(f"limit and offset must not be negative, got {limit} and {offset}")
    conditions: list[ColumnElement[bool]] = []
    if status is not None:
        conditions.append(Run.status == RunStatus(status))
    if architecture is not None:
        conditions.append(Run.architecture == architecture)
    if dataset is not None:
        conditions.append(Run.dataset == dataset)
    total = session.scalar(select(func.count()).select_from(Run).where(*conditions)) or 0
    rows = session.scalars(
        select(Run)
        .where(*conditions)
        .order_by(Run.created_at.desc(), Run.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return list(rows), int(total)


def claim_run(session: Session, run_id: str, *, worker_host: str) -> bool:
    """Take a queued run for this worker: one conditional UPDATE.

    The run becomes ``running`` with ``attempts`` incremented and a fresh heartbeat only if it
    is still queued and nobody asked to cancel it; a second delivery of the same task, or a
    second worker racing for it, gets ``False`` and must do nothing.

    Raises:
        RecordNotFound: No such run (deleted before a worker picked it up).
    """
    now = utcnow()
    changed = _changed(
        session,
        update(Run)
        .where(
            Run.id == run_id,
            Run.status == RunStatus.QUEUED,
            Run.cancel_requested.is_(False),
        )
        .values(
            status=RunStatus.RUNNING,
            started_at=now,
            heartbeat_at=now,
            attempts=Run.attempts + 1,
            worker_host=worker_host,
            error=None,
        ),
    )
    if not changed:
        _ensure_run(session, run_id)
    return bool(changed)


def reclaim_stale_run(session: Session, run_id: str, *, stale_after_s: float) -> ReclaimOutcome:
    """Recover a run whose worker stopped sending heartbeats.

    For a task redelivered after a worker crash (``acks_late``): its :func:`claim_run` fails
    because the run still says ``running``; this decides whether that is a live worker (the
    heartbeat is fresh: leave it) or a dead one. A dead one's run goes back to ``queued`` —
    the caller then claims it, which counts the new attempt — unless it has used all its
    attempts (it fails with "gave up after N attempts") or a cancel was pending (it is
    cancelled). A periodic sweeper can call it on :func:`stale_run_ids` and re-enqueue the
    ``REQUEUED`` ones.

    Each outcome is one conditional UPDATE, so concurrent reclaimers cannot both win.

    Args:
        session: The session.
        run_id: The run.
        stale_after_s: How old a heartbeat must be to count as dead; several heartbeat periods
            (the worker beats at least once per progress report).

    Raises:
        RecordNotFound: No such run.
    """
    now = utcnow()
    stale = and_(Run.id == run_id, _stale(now - timedelta(seconds=stale_after_s)))
    if _changed(
        session,
        update(Run)
        .where(stale, Run.cancel_requested.is_(True))
        .values(
            status=RunStatus.CANCELLED,
            finished_at=now,
            error=f"cancelled: the worker stopped (no heartbeat for {stale_after_s:g} s)",
        ),
    ):
        return ReclaimOutcome.CANCELLED
    gave_up = _gave_up(Run.attempts, stale_after_s)
    if _changed(
        session,
        update(Run)
        .where(stale, Run.attempts >= Run.max_attempts)
        .values(status=RunStatus.FAILED, finished_at=now, error=gave_up),
    ):
        return ReclaimOutcome.GAVE_UP
    if _changed(
        session,
        update(Run)
        .where(stale, Run.attempts < Run.max_attempts, Run.cancel_requested.is_(False))
        .values(status=RunStatus.QUEUED),
    ):
        return ReclaimOutcome.REQUEUED
    _ensure_run(session, run_id)
    return ReclaimOutcome.NOT_STALE


def _gave_up(attempts: Any, stale_after_s: float) -> ColumnElement[str]:
    """The error of a record given up on, computed in SQL from its attempts column."""
    return (
        literal("gave up after ", String)
        + sql_cast(attempts, String)
        + literal(f" attempts: the worker stopped (no heartbeat for {stale_after_s:g} s)", String)
    )


def stale_run_ids(session: Session, *, stale_after_s: float) -> list[str]:
    """The ids of running runs whose heartbeat is older than ``stale_after_s`` (or missing)."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    return list(session.scalars(select(Run.id).where(_stale(cutoff)).order_by(Run.created_at)))


def _ours(run_id: str, attempt: int | None) -> list[Any]:
    """WHERE clauses for writes by the worker holding a run: still running, and (when the
    worker says which attempt it is) still its attempt. A worker that stalled long enough for
    its run to be reclaimed and claimed again elsewhere must not write over the new attempt."""
    clauses: list[Any] = [Run.id == run_id, Run.status == RunStatus.RUNNING]
    if attempt is not None:
        clauses.append(Run.attempts == attempt)
    return clauses


def heartbeat(session: Session, run_id: str, *, attempt: int | None = None) -> bool:
    """Mark a running run's worker alive. ``False``: the run is no longer running, or no
    longer in this ``attempt`` (stop)."""
    return bool(
        _changed(session, update(Run).where(*_ours(run_id, attempt)).values(heartbeat_at=utcnow()))
    )


def update_progress(
    session: Session, run_id: str, progress: Mapping[str, Any], *, attempt: int | None = None
) -> bool:
    """Store a running run's progress and bump its heartbeat.

    Args:
        session: The session.
        run_id: The run.
        progress: JSON-ready: ``epoch``, ``epochs``, ``batch``, ``batches``, ``fraction``,
            ``eta_seconds``, ``images_per_second``, ...

        attempt: The writer's attempt (see :func:`_ours`).

    Returns:
        ``False`` if the run is not running (it was cancelled, reclaimed or finished) or is in
        another attempt: the caller should stop.
    """
    return bool(
        _changed(
            session,
            update(Run)
            .where(*_ours(run_id, attempt))
            .values(progress=dict(progress), heartbeat_at=utcnow()),
        )
    )


def record_epoch(
    session: Session, run_id: str, record: Mapping[str, Any], *, attempt: int | None = None
) -> bool:
    """Store a finished epoch; recording the same epoch again overwrites it.

    An upsert on (run, epoch), so a run resumed from a checkpoint after a crash never
    duplicates an epoch. ``epochs_completed`` becomes the highest epoch recorded, and the
    heartbeat is bumped.

    Args:
        session: The session.
        run_id: The run.
        record: ``EpochRecord.to_dict()``: ``epoch`` (1-based) and any of ``loss``,
            ``accuracy``, ``val_loss``, ``val_accuracy``, ``learning_rate``, ``seconds``,
            ``images_per_second``; other keys are ignored.
        attempt: The writer's attempt: with it, nothing is written unless the run is running
            in that attempt (see :func:`_ours`).

    Returns:
        Whether the epoch was recorded.

    Raises:
        RecordNotFound: No such run.
    """
    if "epoch" not in record:
        raise ValueError(f"An epoch record needs an 'epoch', got keys {sorted(record)}")
    epoch = int(record["epoch"])
    now = utcnow()
    where = _ours(run_id, attempt) if attempt is not None else [Run.id == run_id]
    if not _changed(
        session,
        update(Run)
        .where(*where)
        .values(
            epochs_completed=case(
                (Run.epochs_completed < epoch, epoch), else_=Run.epochs_completed
            ),
            heartbeat_at=case((Run.status == RunStatus.RUNNING, now), else_=Run.heartbeat_at),
        ),
    ):
        _ensure_run(session, run_id)
        return False
    values = {name: _float_or_none(record.get(name)) for name in EPOCH_METRICS}
    stmt = _insert(session, EpochMetric).values(
        run_id=run_id, epoch=epoch, recorded_at=now, **values
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[EpochMetric.run_id, EpochMetric.epoch],
        set_={**values, "recorded_at": now},
    )
    session.execute(stmt)
    return True


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def list_epochs(session: Session, run_id: str) -> list[EpochMetric]:
    """A run's epoch records in order."""
    return list(
        session.scalars(
            select(EpochMetric).where(EpochMetric.run_id == run_id).order_by(EpochMetric.epoch)
        )
    )


def request_cancel(session: Session, run_id: str) -> Run:
    """Cancel a run: a queued one at once, a running one by asking its worker to stop.

    A running run gets ``cancel_requested``; its worker sees it (:func:`is_cancel_requested`),
    stops, and finishes it as ``cancelled``. Cancelling a cancelled run changes nothing.

    Raises:
        RecordNotFound: No such run.
        RecordConflict: The run already succeeded or failed.
    """
    now = utcnow()
    # A run may move between the statements (claimed, reclaimed): try again from its new state.
    for _ in range(5):
        if _changed(
            session,
            update(Run)
            .where(Run.id == run_id, Run.status == RunStatus.QUEUED)
            .values(status=RunStatus.CANCELLED, cancel_requested=True, finished_at=now),
        ):
            break
        if _changed(
            session,
            update(Run)
            .where(Run.id == run_id, Run.status == RunStatus.RUNNING)
            .values(cancel_requested=True),
        ):
            break
        status = session.scalar(select(Run.status).where(Run.id == run_id))
        if status is None:
            raise RecordNotFound("Run", run_id)
        if status == RunStatus.CANCELLED:
            break
        if status in TERMINAL_RUN_STATUSES:
            raise RecordConflict(f"Run {run_id!r} already {status.value}: it cannot be cancelled")
    return _get(session, Run, run_id)


def is_cancel_requested(session: Session, run_id: str) -> bool:
    """Whether the run should stop: a cancel was asked for, or it is already cancelled.

    Raises:
        RecordNotFound: No such run.
    """
    row = session.execute(
        select(Run.cancel_requested, Run.status).where(Run.id == run_id)
    ).one_or_none()
    if row is None:
        raise RecordNotFound("Run", run_id)
    return bool(row.cancel_requested) or row.status == RunStatus.CANCELLED


def finish_run(
    session: Session,
    run_id: str,
    *,
    status: RunStatus | str,
    error: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    attempt: int | None = None,
) -> bool:
    """End a running run: one conditional UPDATE from ``running`` (in ``attempt``, if given).

    Args:
        session: The session.
        run_id: The run.
        status: ``succeeded``, ``failed`` or ``cancelled``.
        error: What went wrong, for ``failed`` (and why, for ``cancelled``).
        metrics: The test-metrics summary, JSON-ready.

    Returns:
        ``False`` if the run was not running (already finished by another delivery, or
        reclaimed): nothing changed.

    Raises:
        ValueError: ``status`` is not a terminal status.
        RecordNotFound: No such run.
    """
    status = RunStatus(status)
    if status not in TERMINAL_RUN_STATUSES:
        raise ValueError(
            f"Cannot finish a run as {status.value!r}. Expected one of "
            f"{sorted(s.value for s in TERMINAL_RUN_STATUSES)}"
        )
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error}
    if metrics is not None:
        values["metrics"] = dict(metrics)
    changed = _changed(
        session,
        update(Run).where(*_ours(run_id, attempt)).values(**values),
    )
    if not changed:
        _ensure_run(session, run_id)
    return bool(changed)


def delete_run(session: Session, run_id: str) -> None:
    """Delete a run with its epochs, evaluations and artifact records (not the files).

    Raises:
        RecordNotFound: No such run.
        RecordConflict: The run is running: cancel it first.
    """
    if not _changed(session, delete(Run).where(Run.id == run_id, Run.status != RunStatus.RUNNING)):
        _ensure_run(session, run_id)
        raise RecordConflict(f"Run {run_id!r} is running: cancel it before deleting it")
    # The database cascaded to the child rows; forget the copies the session still holds
    # (reading their state dicts, which never loads from the database).
    for obj in list(session.identity_map.values()):
        state = inspect(obj).dict
        if (
            (isinstance(obj, Run) and state.get("id") == run_id)
            or (
                isinstance(obj, EpochMetric | Evaluation | Artifact)
                and state.get("run_id") == run_id
            )
        ) and obj in session:  # expunging a run expunges its loaded children with it
            session.expunge(obj)


# --- evaluations -----------------------------------------------------------------------------


def create_evaluation(
    session: Session, *, run_id: str, split: str, dataset: str | None = None
) -> Evaluation:
    """Add a queued evaluation of a run's model on a split.

    Raises:
        RecordNotFound: No such run.
    """
    _ensure_run(session, run_id)
    evaluation = Evaluation(
        run_id=run_id, split=split, dataset=dataset, status=EvaluationStatus.QUEUED
    )
    session.add(evaluation)
    session.flush()
    return evaluation


def get_evaluation(session: Session, evaluation_id: str) -> Evaluation:
    """The evaluation with this id. Raises :class:`RecordNotFound` if there is none."""
    return _get(session, Evaluation, evaluation_id)


def list_evaluations(session: Session, run_id: str) -> list[Evaluation]:
    """A run's evaluations, oldest first."""
    return list(
        session.scalars(
            select(Evaluation)
            .where(Evaluation.run_id == run_id)
            .order_by(Evaluation.created_at, Evaluation.id)
        )
    )


def claim_evaluation(session: Session, evaluation_id: str, *, worker_host: str) -> int | None:
    """Take a queued evaluation (conditional UPDATE): it becomes ``running`` with a fresh
    heartbeat and ``attempts`` incremented.

    Returns:
        The attempt now held (1 the first time); ``None`` if the evaluation was not queued
        (a second delivery, or someone else has it): do nothing.

    Raises:
        RecordNotFound: No such evaluation.
    """
    now = utcnow()
    changed = _changed(
        session,
        update(Evaluation)
        .where(Evaluation.id == evaluation_id, Evaluation.status == EvaluationStatus.QUEUED)
        .values(
            status=EvaluationStatus.RUNNING,
            started_at=now,
            heartbeat_at=now,
            attempts=Evaluation.attempts + 1,
            worker_host=worker_host,
        ),
    )
    if not changed:
        _get(session, Evaluation, evaluation_id, fresh=False)
        return None
    return int(
        session.scalars(select(Evaluation.attempts).where(Evaluation.id == evaluation_id)).one()
    )


def _evaluation_ours(evaluation_id: str, attempt: int | None) -> list[Any]:
    clauses: list[Any] = [
        Evaluation.id == evaluation_id,
        Evaluation.status == EvaluationStatus.RUNNING,
    ]
    if attempt is not None:
        clauses.append(Evaluation.attempts == attempt)
    return clauses


def evaluation_heartbeat(session: Session, evaluation_id: str, *, attempt: int) -> bool:
    """Mark a running evaluation's worker alive. ``False``: no longer running in ``attempt``."""
    return bool(
        _changed(
            session,
            update(Evaluation)
            .where(*_evaluation_ours(evaluation_id, attempt))
            .values(heartbeat_at=utcnow()),
        )
    )


def _stale_evaluation(cutoff: datetime) -> ColumnElement[bool]:
    return and_(
        Evaluation.status == EvaluationStatus.RUNNING,
        or_(Evaluation.heartbeat_at.is_(None), Evaluation.heartbeat_at < cutoff),
    )


def stale_evaluation_ids(session: Session, *, stale_after_s: float) -> list[str]:
    """Running evaluations whose heartbeat is older than ``stale_after_s`` (or missing)."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    query = select(Evaluation.id).where(_stale_evaluation(cutoff)).order_by(Evaluation.created_at)
    return list(session.scalars(query))


def reclaim_stale_evaluation(
    session: Session, evaluation_id: str, *, stale_after_s: float, max_attempts: int
) -> ReclaimOutcome:
    """Recover an evaluation whose worker stopped beating, as :func:`reclaim_stale_run` does
    for runs: back to ``queued`` (the caller sends its task again), or ``failed`` once it has
    had ``max_attempts``. Each outcome is one conditional UPDATE.

    Raises:
        RecordNotFound: No such evaluation.
    """
    now = utcnow()
    stale = and_(
        Evaluation.id == evaluation_id, _stale_evaluation(now - timedelta(seconds=stale_after_s))
    )
    gave_up = _gave_up(Evaluation.attempts, stale_after_s)
    if _changed(
        session,
        update(Evaluation)
        .where(stale, Evaluation.attempts >= max_attempts)
        .values(status=EvaluationStatus.FAILED, finished_at=now, error=gave_up),
    ):
        return ReclaimOutcome.GAVE_UP
    if _changed(
        session,
        update(Evaluation)
        .where(stale, Evaluation.attempts < max_attempts)
        .values(status=EvaluationStatus.QUEUED),
    ):
        return ReclaimOutcome.REQUEUED
    _get(session, Evaluation, evaluation_id, fresh=False)
    return ReclaimOutcome.NOT_STALE


# Headline columns and the metric keys they come from: single-label names first, then the
# multi-label ones (subset accuracy; CP/CR/CF1 are the per-class-averaged precision/recall/F1).
_EVALUATION_COLUMNS = {
    "accuracy": ("accuracy", "subset_accuracy"),
    "precision_macro": ("precision_macro", "CP"),
    "recall_macro": ("recall_macro", "CR"),
    "f1_macro": ("f1_macro", "CF1"),
    "loss": ("loss",),
    "seconds": ("seconds",),
    "images_per_second": ("images_per_second",),
}


def finish_evaluation(
    session: Session,
    evaluation_id: str,
    *,
    status: EvaluationStatus | str,
    metrics: Mapping[str, Any] | None = None,
    error: str | None = None,
    predictions_uri: str | None = None,
    predictions_count: int | None = None,
    attempt: int | None = None,
) -> bool:
    """End a running evaluation (conditional UPDATE from ``running``).

    Args:
        session: The session.
        evaluation_id: The evaluation.
        status: ``succeeded`` or ``failed``.
        metrics: What core's evaluation returned (JSON-ready), stored whole; its accuracy,
            macro precision/recall/F1, loss, seconds and images per second also fill the
            columns of the same names.
        error: What went wrong, for ``failed``.
        predictions_uri: Where the worker stored the predictions the metrics came from.
        predictions_count: How many images they cover.
        attempt: The attempt the caller holds: a worker whose evaluation was reclaimed and
            taken by another must not finish it.

    Returns:
        ``False`` if the evaluation was not running: nothing changed.

    Raises:
        ValueError: ``status`` is not ``succeeded`` or ``failed``.
        RecordNotFound: No such evaluation.
    """
    status = EvaluationStatus(status)
    if status not in (EvaluationStatus.SUCCEEDED, EvaluationStatus.FAILED):
        raise ValueError(f"Cannot finish an evaluation as {status.value!r}")
    values: dict[str, Any] = {
        "status": status,
        "finished_at": utcnow(),
        "error": error,
        "predictions_uri": predictions_uri,
        "predictions_count": predictions_count,
    }
    if metrics is not None:
        values["metrics"] = dict(metrics)
        for column, keys in _EVALUATION_COLUMNS.items():
            found = next((metrics[k] for k in keys if metrics.get(k) is not None), None)
            values[column] = _float_or_none(found)
    changed = _changed(
        session,
        update(Evaluation).where(*_evaluation_ours(evaluation_id, attempt)).values(**values),
    )
    if not changed:
        _get(session, Evaluation, evaluation_id, fresh=False)
    return bool(changed)


# --- artifacts and datasets ------------------------------------------------------------------


def _file_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            size += len(chunk)
            digest.update(chunk)
    return size, digest.hexdigest()


def add_artifact(
    session: Session,
    run_id: str,
    *,
    kind: ArtifactKind | str,
    uri: str,
    path: str | Path | None = None,
) -> Artifact:
    """Record a file a run produced; recording the same (run, kind, uri) again updates it.

    Args:
        session: The session.
        run_id: The run.
        kind: ``model``, ``checkpoint``, ``tensorboard``, ``history``, ``metrics``, ``export``.
        uri: Where it is (a path or a URI).
        path: A local copy to take the size and SHA-256 from (a regular file); none for a
            directory such as TensorBoard logs.

    Raises:
        RecordNotFound: No such run.
    """
    kind = ArtifactKind(kind)
    _ensure_run(session, run_id)
    size: int | None = None
    sha256: str | None = None
    if path is not None and Path(path).is_file():
        size, sha256 = _file_digest(Path(path))
    values = {"size_bytes": size, "sha256": sha256, "created_at": utcnow()}
    stmt = _insert(session, Artifact).values(run_id=run_id, kind=kind, uri=uri, **values)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[Artifact.run_id, Artifact.kind, Artifact.uri], set_=values
        )
    )
    artifact = session.scalars(
        select(Artifact)
        .where(Artifact.run_id == run_id, Artifact.kind == kind, Artifact.uri == uri)
        .execution_options(populate_existing=True)
    ).one()
    return artifact


def register_dataset(
    session: Session,
    *,
    name: str,
    kind: str,
    location: str,
    class_names: Sequence[str] = (),
    counts: Mapping[str, Any] | None = None,
    num_images: int = 0,
) -> DatasetRecord:
    """Add a dataset, or update the one of the same name."""
    dataset = session.scalars(select(DatasetRecord).where(DatasetRecord.name == name)).one_or_none()
    if dataset is None:
        dataset = DatasetRecord(name=name)
        session.add(dataset)
    dataset.kind = kind
    dataset.location = location
    dataset.class_names = list(class_names)
    dataset.counts = dict(counts or {})
    dataset.num_images = num_images
    session.flush()
    return dataset


# --- API keys --------------------------------------------------------------------------------


def hash_api_key(secret: str) -> str:
    """The SHA-256 hex digest under which a key's secret is stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(
    session: Session, name: str, scopes: Iterable[Scope | str]
) -> tuple[ApiKey, str]:
    """Make a key; the secret is returned once and only its hash is stored.

    Returns:
        The key row and its secret, ``"rsk_"`` followed by 43 URL-safe characters.

    Raises:
        ValueError: An unknown scope.
    """
    wanted = list(dict.fromkeys(scopes))
    unknown = [s for s in wanted if s not in {m.value for m in Scope}]
    if unknown:
        raise ValueError(f"Unknown scopes: {unknown!r}. Expected any of {[m.value for m in Scope]}")
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        name=name,
        prefix=secret[:API_KEY_DISPLAY_CHARS],
        key_hash=hash_api_key(secret),
        scopes=[Scope(s).value for s in wanted],
    )
    session.add(key)
    session.flush()
    return key, secret


def authenticate(session: Session, secret: str) -> ApiKey | None:
    """The unrevoked key whose secret this is, or ``None``; notes when it was last used."""
    if not secret.startswith(API_KEY_PREFIX):
        return None
    key = session.scalars(
        select(ApiKey).where(ApiKey.key_hash == hash_api_key(secret))
    ).one_or_none()
    if key is None or key.revoked_at is not None:
        return None
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        key.last_used_at = now
        session.flush()
    return key


def revoke_api_key(session: Session, key_id: str) -> ApiKey:
    """Revoke a key (idempotent); it no longer authenticates.

    Raises:
        RecordNotFound: No such key.
    """
    key = _get(session, ApiKey, key_id, fresh=False)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key


# --- model versions --------------------------------------------------------------------------

__all__ += [
    "get_model_artifact",
    "get_model_version",
    "list_model_versions",
    "list_models",
    "promote_run",
]


def get_model_artifact(session: Session, run_id: str) -> Artifact | None:
    """The run's ``model`` artifact (the newest, if it was recorded more than once), or ``None``."""
    return session.scalars(
        select(Artifact)
        .where(Artifact.run_id == run_id, Artifact.kind == ArtifactKind.MODEL)
        .order_by(Artifact.created_at.desc(), Artifact.id.desc())
        .limit(1)
    ).one_or_none()


def promote_run(session: Session, run_id: str, name: str) -> ModelVersion:
    """Make a succeeded run the next version of the model ``name`` (1 for a new name).

    The next number is taken in the INSERT itself (``MAX(version) + 1``), so two promotions
    cannot both get it: on SQLite the statement holds the write lock; on PostgreSQL the loser
    of a race hits the unique (name, version) constraint and gets :class:`RecordConflict`.

    Args:
        session: The session; the version is flushed, not committed.
        run_id: A run that succeeded and recorded its model.
        name: The model's name; checking its spelling is the caller's job.

    Raises:
        RecordNotFound: No such run.
        RecordConflict: The run has not succeeded, has no model artifact, or a concurrent
            promotion took the version number.
    """
    run = _get(session, Run, run_id)
    if run.status != RunStatus.SUCCEEDED:
        raise RecordConflict(
            f"Run {run_id!r} is {run.status.value}: only a succeeded run can be promoted"
        )
    if get_model_artifact(session, run_id) is None:
        raise RecordConflict(f"Run {run_id!r} recorded no model artifact: nothing to promote")
    next_version = (
        select(func.coalesce(func.max(ModelVersion.version), 0) + 1)
        .where(ModelVersion.name == name)
        .scalar_subquery()
    )
    try:
        new_id = session.execute(
            insert(ModelVersion)
            .values(name=name, version=next_version, run_id=run_id, created_at=utcnow())
            .returning(ModelVersion.id)
        ).scalar_one()
    except IntegrityError:
        raise RecordConflict(
            f"Another promotion of {name!r} took the next version at the same time; try again"
        ) from None
    return _get(session, ModelVersion, new_id)


def list_models(session: Session) -> list[ModelVersion]:
    """The newest version of every model, by name (their runs loaded too)."""
    newest = (
        select(ModelVersion.name, func.max(ModelVersion.version).label("version"))
        .group_by(ModelVersion.name)
        .subquery()
    )
    return list(
        session.scalars(
            select(ModelVersion)
            .join(
                newest,
                and_(ModelVersion.name == newest.c.name, ModelVersion.version == newest.c.version),
            )
            .options(selectinload(ModelVersion.run))
            .order_by(ModelVersion.name)
        )
    )


def list_model_versions(session: Session, name: str) -> list[ModelVersion]:
    """Every version of the model ``name``, newest first (empty if there is no such model)."""
    return list(
        session.scalars(
            select(ModelVersion)
            .where(ModelVersion.name == name)
            .options(selectinload(ModelVersion.run))
            .order_by(ModelVersion.version.desc())
        )
    )


def get_model_version(session: Session, name: str, version: int | None = None) -> ModelVersion:
    """Version ``version`` of the model ``name``; its newest version when ``version`` is None.

    Raises:
        RecordNotFound: No such model, or no such version of it.
    """
    query = select(ModelVersion).where(ModelVersion.name == name)
    if version is None:
        query = query.order_by(ModelVersion.version.desc()).limit(1)
    else:
        query = query.where(ModelVersion.version == version)
    found = session.scalars(query.options(selectinload(ModelVersion.run))).one_or_none()
    if found is None:
        raise RecordNotFound("Model", name if version is None else f"{name} version {version}")
    return found


# --- experiments -----------------------------------------------------------------------------

__all__ += [
    "attach_to_experiment",
    "cancel_experiment",
    "create_experiment",
    "finished_runs_like",
    "get_experiment",
    "list_experiment_runs",
    "list_experiments",
]


def create_experiment(
    session: Session,
    *,
    name: str,
    kind: ExperimentKind | str,
    spec: Mapping[str, Any],
    api_key_id: str | None = None,
) -> Experiment:
    """Add an experiment with no cells yet; add its runs with :func:`attach_to_experiment`.

    Args:
        session: The session; the experiment is flushed (it has its id), not committed.
        name: For people.
        kind: ``grid`` or ``random``.
        spec: The validated request, JSON-ready.
        api_key_id: The key that asked for it.
    """
    experiment = Experiment(
        name=name, kind=ExperimentKind(kind), spec=dict(spec), cells=[], api_key_id=api_key_id
    )
    session.add(experiment)
    session.flush()
    return experiment


def attach_to_experiment(
    session: Session, experiment: Experiment, run: Run, *, cell: Mapping[str, Any]
) -> None:
    """Make ``run`` a cell of ``experiment``; ``cell`` says what it varies (seed, params)."""
    run.experiment_id = experiment.id
    experiment.cells = [*experiment.cells, {**cell, "run_id": run.id}]
    session.flush()


def get_experiment(session: Session, experiment_id: str) -> Experiment:
    """The experiment with this id.

    Raises:
        RecordNotFound: No such experiment.
    """
    return _get(session, Experiment, experiment_id)


def list_experiments(
    session: Session, *, limit: int = 50, offset: int = 0
) -> tuple[list[Experiment], int]:
    """A page of experiments, newest first, and how many there are."""
    total = session.scalar(select(func.count()).select_from(Experiment)) or 0
    rows = session.scalars(
        select(Experiment)
        .order_by(Experiment.created_at.desc(), Experiment.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return list(rows), int(total)


def list_experiment_runs(session: Session, experiment_id: str) -> list[Run]:
    """The experiment's runs, oldest first (deleted runs are simply absent)."""
    return list(
        session.scalars(
            select(Run).where(Run.experiment_id == experiment_id).order_by(Run.created_at, Run.id)
        )
    )


def cancel_experiment(session: Session, experiment_id: str) -> tuple[Experiment, list[str]]:
    """Cancel every run of the experiment that has not finished; note when it was cancelled.

    Queued runs are cancelled at once, running ones asked to stop (:func:`request_cancel`);
    finished ones are left as they are. Cancelling again changes nothing.

    Returns:
        The experiment and the ids of the runs this call cancelled or asked to stop.

    Raises:
        RecordNotFound: No such experiment.
    """
    _changed(
        session,
        update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.cancelled_at.is_(None))
        .values(cancelled_at=utcnow()),
    )
    experiment = _get(session, Experiment, experiment_id)
    pending = session.scalars(
        select(Run.id).where(
            Run.experiment_id == experiment_id,
            Run.status.in_([RunStatus.QUEUED, RunStatus.RUNNING]),
            Run.cancel_requested.is_(False),
        )
    ).all()
    cancelled = []
    for run_id in pending:
        try:
            request_cancel(session, run_id)
        except (RecordConflict, RecordNotFound):  # it finished or was deleted meanwhile
            continue
        cancelled.append(run_id)
    return experiment, cancelled


def finished_runs_like(
    session: Session,
    *,
    architecture: str,
    dataset: str,
    exclude: str | None = None,
    limit: int = 20,
) -> list[Run]:
    """The newest succeeded runs of an architecture on a dataset (candidate twins of a run)."""
    query = select(Run).where(
        Run.architecture == architecture,
        Run.dataset == dataset,
        Run.status == RunStatus.SUCCEEDED,
    )
    if exclude is not None:
        query = query.where(Run.id != exclude)
    return list(session.scalars(query.order_by(Run.finished_at.desc(), Run.id).limit(limit)))
