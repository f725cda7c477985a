"""Training runs: create, read, cancel and delete them; what their worker writes as they train.

The run's job lifecycle (claim, beat, stale, reclaim, finish, fail-unsent) is
:data:`jobs.records.lifecycle.RUN_JOBS` (:mod:`jobs.records.repository` lists its steps under
the names callers know, such as ``claim_run``). What only runs have is here: progress, epochs,
and cancelling on request.

A run's life::

    create_run ─▶ queued ──claim_run──▶ running ──finish_run──▶ succeeded | failed | cancelled
                    │  ▲                    │
        request_cancel  └─reclaim_stale_run─┘  (the worker's heartbeat stopped: crash, OOM kill)
                    ▼
                cancelled

A trial of an adaptive search (:mod:`jobs.records.trials`) may also wait ``paused``: recorded
so while no slot is free, or paused by its worker at a rung; its search queues it again
(promoted: the worker resumes it from its checkpoint) or stops it early (``request_cancel``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, case, delete, func, inspect, select, update
from sqlalchemy.orm import Session

from core.training.hooks import EPOCH_METRICS
from jobs.records.errors import RecordConflict, RecordNotFound
from jobs.records.lifecycle import RUN_JOBS
from jobs.records.models import (
    TERMINAL_RUN_STATUSES,
    Artifact,
    EpochMetric,
    Evaluation,
    ModelVersion,
    Run,
    RunStatus,
    utcnow,
)
from jobs.records.sql import (
    changed,
    dialect_insert,
    ensure_exists,
    float_or_none,
    get_row,
    newest_first,
)


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
    workers: int = 1,
    distribution: Mapping[str, Any] | None = None,
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
        workers: How many workers train it together; above 1 they meet in its slots
            (:mod:`jobs.records.slots`).
        distribution: Above one worker, the plan it trains by
            (:class:`core.training.distribution_plan.DistributionPlan`, as a dict).

    Returns:
        The new run, status ``queued``.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
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
        workers=workers,
        distribution=dict(distribution) if distribution is not None else None,
    )
    session.add(run)
    session.flush()
    return run


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
    return newest_first(session, Run, *conditions, limit=limit, offset=offset)


def count_runs_by_status(session: Session) -> dict[RunStatus, int]:
    """How many runs are in each status (every status present, 0 for none)."""
    rows = session.execute(select(Run.status, func.count()).group_by(Run.status)).all()
    counts = dict.fromkeys(RunStatus, 0)
    for status, count in rows:
        counts[RunStatus(status)] = int(count)
    return counts


def update_progress(
    session: Session, run_id: str, progress: Mapping[str, Any], *, attempt: int | None = None
) -> bool:
    """Store a running run's progress and bump its heartbeat.

    Args:
        session: The session.
        run_id: The run.
        progress: JSON-ready: ``epoch``, ``epochs``, ``batch``, ``batches``, ``fraction``,
            ``eta_seconds``, ``images_per_second``, ...
        attempt: The writer's attempt (see :meth:`~jobs.records.lifecycle.JobLifecycle.held`).

    Returns:
        ``False`` if the run is not running (it was cancelled, reclaimed or finished) or is in
        another attempt: the caller should stop.
    """
    return bool(
        changed(
            session,
            update(Run)
            .where(*RUN_JOBS.held(run_id, attempt))
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
            in that attempt (see :meth:`JobLifecycle.held`).

    Returns:
        Whether the epoch was recorded.

    Raises:
        RecordNotFound: No such run.
    """
    if "epoch" not in record:
        raise ValueError(f"An epoch record needs an 'epoch', got keys {sorted(record)}")
    epoch = int(record["epoch"])
    now = utcnow()
    where = RUN_JOBS.held(run_id, attempt) if attempt is not None else [Run.id == run_id]
    if not changed(
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
        ensure_exists(session, Run, run_id)
        return False
    values = {name: float_or_none(record.get(name)) for name in EPOCH_METRICS}
    stmt = dialect_insert(session, EpochMetric).values(
        run_id=run_id, epoch=epoch, recorded_at=now, **values
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[EpochMetric.run_id, EpochMetric.epoch],
        set_={**values, "recorded_at": now},
    )
    session.execute(stmt)
    return True


def list_epochs(session: Session, run_id: str) -> list[EpochMetric]:
    """A run's epoch records in order."""
    return list(
        session.scalars(
            select(EpochMetric).where(EpochMetric.run_id == run_id).order_by(EpochMetric.epoch)
        )
    )


def request_cancel(session: Session, run_id: str) -> Run:
    """Cancel a run: a queued or paused one at once, a running one by asking its worker to stop.

    A running run gets ``cancel_requested``; its worker sees it (:func:`is_cancel_requested`),
    stops, and finishes it as ``cancelled``. Cancelling a cancelled run changes nothing.

    Raises:
        RecordNotFound: No such run.
        RecordConflict: The run already succeeded or failed.
    """
    now = utcnow()
    # A run may move between the statements (claimed, reclaimed): try again from its new state.
    for _ in range(5):
        if changed(
            session,
            update(Run)
            .where(Run.id == run_id, Run.status.in_([RunStatus.QUEUED, RunStatus.PAUSED]))
            .values(status=RunStatus.CANCELLED, cancel_requested=True, finished_at=now),
        ):
            break
        if changed(
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
    return get_row(session, Run, run_id)


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
        attempt: The attempt the caller holds.

    Returns:
        ``False`` if the run was not running (already finished by another delivery, or
        reclaimed): nothing changed.

    Raises:
        ValueError: ``status`` is not a terminal status.
        RecordNotFound: No such run.
    """
    values: dict[str, Any] = {"error": error}
    if metrics is not None:
        values["metrics"] = dict(metrics)
    return RUN_JOBS.finish(session, run_id, status=status, attempt=attempt, values=values)


def delete_run(session: Session, run_id: str) -> None:
    """Delete a run with its epochs, evaluations and artifact records (the caller frees the
    files, :mod:`jobs.records.run_files`, once this is committed).

    Raises:
        RecordNotFound: No such run.
        RecordConflict: The run is running (cancel it first), or live model versions were
            promoted from it (delete them first): deleting it would lose them silently.
    """
    # One statement decides, so a promotion cannot slip in between a check and the delete:
    # on SQLite it runs under the write lock; on PostgreSQL the row lock taken first makes a
    # concurrent promotion (whose foreign key check locks the run's row) wait, then fail.
    session.execute(select(Run.id).where(Run.id == run_id).with_for_update())
    live_versions = select(ModelVersion.id).where(
        ModelVersion.run_id == run_id, ModelVersion.deleted_at.is_(None)
    )
    if not changed(
        session,
        delete(Run).where(
            Run.id == run_id, Run.status != RunStatus.RUNNING, ~live_versions.exists()
        ),
    ):
        ensure_exists(session, Run, run_id)
        backing = session.execute(
            select(ModelVersion.name, ModelVersion.version)
            .where(ModelVersion.run_id == run_id, ModelVersion.deleted_at.is_(None))
            .order_by(ModelVersion.name, ModelVersion.version)
        ).all()
        if backing:
            named = ", ".join(f"{name} version {version}" for name, version in backing)
            raise RecordConflict(
                f"Run {run_id!r} backs model versions {named}: delete those versions before the run"
            )
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
