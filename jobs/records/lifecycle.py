"""The one job lifecycle, for every kind of job a worker runs: training runs and evaluations
(batch predictions are evaluations, in the same table).

A job's life::

    created ─▶ queued ──claim──▶ running ──finish──▶ succeeded | failed | cancelled
                 │  ▲               │
                 │  └reclaim_stale──┘  (its worker stopped beating: crash, OOM kill)
                 ├──fail_unsent──▶ failed  (its task never reached the broker)
                 └──(a run's request_cancel)──▶ cancelled

Written once and parametrised by the job's table (:data:`RUN_JOBS`, :data:`EVALUATION_JOBS`),
so both kinds get the same guarantees and the same return types:

- Every state change that can race — a second delivery of a task, two workers redelivered the
  same message, two sweepers, a cancel while a worker starts — is one conditional ``UPDATE``:
  the database decides who wins, and the losers get ``None``/``False`` and do nothing.
- Every claim increments ``attempts`` and hands the worker that number; every later write of
  that worker (beat, progress, finish) is fenced by it, so a worker that stalled long enough
  to have its job reclaimed and claimed elsewhere cannot write over the newer attempt.
- A stale job that has used ``max_attempts`` (a column of both tables) is failed instead of
  queued again, so a job that always kills its worker stops being retried.
- Jobs that can be cancelled (runs, ``cancel_requested``) are never claimed or requeued once
  a cancel is pending; a stale one is marked cancelled.

Plain functions over a :class:`~sqlalchemy.orm.Session`: the caller owns the transaction.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, String, and_, literal, or_, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import InstrumentedAttribute, Session

from jobs.records.models import Evaluation, EvaluationStatus, Run, RunStatus, utcnow
from jobs.records.sql import changed, ensure_exists, get_row

Job = TypeVar("Job", Run, Evaluation)


class ReclaimOutcome(enum.StrEnum):
    """What :meth:`JobLifecycle.reclaim_stale` did."""

    REQUEUED = "requeued"  # back to queued: claim it or enqueue it again
    GAVE_UP = "gave_up"  # out of attempts: marked failed
    CANCELLED = "cancelled"  # a cancel was pending when the worker died: marked cancelled
    NOT_STALE = "not_stale"  # not running, or its worker is alive: nothing to do


class JobLifecycle(Generic[Job]):
    """Claim, beat, find stale, reclaim, finish and fail-unsent for the jobs of one table.

    Args:
        model: The job's table; it has ``status``, ``attempts``, ``max_attempts``,
            ``heartbeat_at``, ``started_at``, ``finished_at``, ``worker_host`` and ``error``.
        statuses: Its status enum: ``queued``, ``running``, and the terminal ones a worker may
            finish it as (``succeeded``, ``failed``, and ``cancelled`` where it exists).
        noun: What people call one job (``"run"``), for messages and logs.
        cancel_requested: The table's "a client asked to cancel" column, if its jobs can be
            cancelled (they then have a ``cancelled`` status too).
    """

    def __init__(
        self,
        model: type[Job],
        statuses: type[RunStatus] | type[EvaluationStatus],
        *,
        noun: str,
        cancel_requested: InstrumentedAttribute[bool] | None = None,
    ) -> None:
        self.model: type[Job] = model
        self.noun = noun
        self.queued = statuses("queued")
        self.running = statuses("running")
        self.failed = statuses("failed")
        # A pending cancel keeps a job from being claimed or requeued, and ends a stale one.
        self._cancel_requested = cancel_requested
        self.cancelled = statuses("cancelled") if cancel_requested is not None else None
        # A paused run (a search's trial between rungs) is neither held by a worker nor done.
        waiting = {self.queued, self.running, *(s for s in statuses if s.value == "paused")}
        self.finished = frozenset(s for s in statuses if s not in waiting)

    def __repr__(self) -> str:
        return f"JobLifecycle({self.model.__name__})"

    # --- reads -----------------------------------------------------------------------------

    def get(self, session: Session, job_id: str) -> Job:
        """The job with this id, read afresh from the database.

        Raises:
            RecordNotFound: No such job.
        """
        return get_row(session, self.model, job_id)

    def held(self, job_id: str, attempt: int | None) -> list[ColumnElement[bool]]:
        """WHERE clauses for a write by the worker holding a job: still running and, when the
        worker says which attempt it holds, still in that attempt."""
        clauses = [self.model.id == job_id, self.model.status == self.running]
        if attempt is not None:
            clauses.append(self.model.attempts == attempt)
        return clauses

    def stale_ids(
        self, session: Session, *, stale_after_s: float, only: ColumnElement[bool] | None = None
    ) -> list[str]:
        """The ids of running jobs whose heartbeat is older than ``stale_after_s`` (or missing),
        oldest job first; with ``only``, those that also match it."""
        query = select(self.model.id).where(self._stale(stale_after_s))
        if only is not None:
            query = query.where(only)
        return list(session.scalars(query.order_by(self.model.created_at)))

    # --- the worker's writes ---------------------------------------------------------------

    def claim(self, session: Session, job_id: str, *, worker_host: str) -> int | None:
        """Take a queued job for this worker: one conditional UPDATE.

        The job becomes ``running`` with ``attempts`` incremented and a fresh heartbeat only if
        it is still queued (and no cancel is pending); a second delivery of the same task, or a
        second worker racing for it, gets ``None`` and must do nothing.

        Returns:
            The attempt now held (1 the first time), or ``None``.

        Raises:
            RecordNotFound: No such job (deleted before a worker picked it up).
        """
        now = utcnow()
        job = self.model
        if not changed(
            session,
            update(job)
            .where(job.id == job_id, job.status == self.queued, *self._no_cancel_pending())
            .values(
                status=self.running,
                started_at=now,
                heartbeat_at=now,
                attempts=job.attempts + 1,
                worker_host=worker_host,
                error=None,
            ),
        ):
            ensure_exists(session, job, job_id)
            return None
        # This transaction holds the row (its write lock) until commit: nobody else moved it.
        return int(session.scalars(select(job.attempts).where(job.id == job_id)).one())

    def beat(self, session: Session, job_id: str, *, attempt: int | None = None) -> bool:
        """Mark a running job's worker alive.

        Returns:
            ``False`` when the job is no longer running, or no longer in ``attempt``: it was
            taken from this worker (reclaimed, finished, cancelled), which must stop.
        """
        return bool(
            changed(
                session,
                update(self.model).where(*self.held(job_id, attempt)).values(heartbeat_at=utcnow()),
            )
        )

    def finish(
        self,
        session: Session,
        job_id: str,
        *,
        status: RunStatus | EvaluationStatus | str,
        attempt: int | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> bool:
        """End a running job (in ``attempt``, if given): one conditional UPDATE.

        Args:
            session: The session.
            job_id: The job.
            status: One of the table's terminal statuses.
            attempt: The attempt the caller holds.
            values: The other columns to set with it (``error``, ``metrics``, ...).

        Returns:
            ``False`` if the job was not running in that attempt (another delivery finished it,
            or it was reclaimed): nothing changed.

        Raises:
            ValueError: ``status`` is not a terminal status of the table.
            RecordNotFound: No such job.
        """
        terminal = next((s for s in self.finished if s.value == status), None)
        if terminal is None:
            article = "an" if self.noun[0] in "aeiou" else "a"
            raise ValueError(
                f"Cannot finish {article} {self.noun} as {str(status)!r}. Expected one of "
                f"{sorted(s.value for s in self.finished)}"
            )
        update_values = {**(values or {}), "status": terminal, "finished_at": utcnow()}
        if not changed(
            session,
            update(self.model).where(*self.held(job_id, attempt)).values(**update_values),
        ):
            ensure_exists(session, self.model, job_id)
            return False
        return True

    # --- recovery --------------------------------------------------------------------------

    def reclaim_stale(
        self, session: Session, job_id: str, *, stale_after_s: float
    ) -> ReclaimOutcome:
        """Recover a job whose worker stopped sending heartbeats.

        For a task redelivered after a worker crash (``acks_late``): its :meth:`claim` fails
        because the job still says ``running``; this decides whether that is a live worker
        (the heartbeat is fresh: leave it) or a dead one. A dead one's job goes back to
        ``queued`` — the caller then claims it, which counts the new attempt, or sends its task
        again — unless it has used ``max_attempts`` (it fails with "gave up after N attempts")
        or a cancel was pending (it is cancelled). The sweeper calls it on :meth:`stale_ids`.

        Each outcome is one conditional UPDATE, so concurrent reclaimers cannot both win.

        Args:
            session: The session.
            job_id: The job.
            stale_after_s: How old a heartbeat must be to count as dead; several heartbeat
                periods.

        Raises:
            RecordNotFound: No such job.
        """
        now = utcnow()
        job = self.model
        stale = and_(job.id == job_id, self._stale(stale_after_s))
        why = f"the worker stopped (no heartbeat for {stale_after_s:g} s)"
        if self.cancelled is not None and changed(
            session,
            update(job)
            .where(stale, *self._cancel_pending())
            .values(status=self.cancelled, finished_at=now, error=f"cancelled: {why}"),
        ):
            return ReclaimOutcome.CANCELLED
        gave_up = (
            literal("gave up after ", String)
            + sql_cast(job.attempts, String)
            + literal(f" attempts: {why}", String)
        )
        if changed(
            session,
            update(job)
            .where(stale, job.attempts >= job.max_attempts)
            .values(status=self.failed, finished_at=now, error=gave_up),
        ):
            return ReclaimOutcome.GAVE_UP
        if changed(
            session,
            update(job)
            .where(stale, job.attempts < job.max_attempts, *self._no_cancel_pending())
            .values(status=self.queued),
        ):
            return ReclaimOutcome.REQUEUED
        ensure_exists(session, job, job_id)
        return ReclaimOutcome.NOT_STALE

    def fail_unsent(self, session: Session, job_id: str, error: str) -> bool:
        """Mark a queued job failed because its task could not be sent to the broker.

        One conditional UPDATE from ``queued``: a job a worker somehow already claimed, or a
        client already cancelled, is left alone (``False``).
        """
        return bool(
            changed(
                session,
                update(self.model)
                .where(self.model.id == job_id, self.model.status == self.queued)
                .values(status=self.failed, finished_at=utcnow(), error=error),
            )
        )

    # --- clauses ---------------------------------------------------------------------------

    def _stale(self, stale_after_s: float) -> ColumnElement[bool]:
        cutoff = utcnow() - timedelta(seconds=stale_after_s)
        beat = self.model.heartbeat_at
        return and_(self.model.status == self.running, or_(beat.is_(None), beat < cutoff))

    def _cancel_pending(self) -> list[ColumnElement[bool]]:
        flag = self._cancel_requested
        return [] if flag is None else [flag.is_(True)]

    def _no_cancel_pending(self) -> list[ColumnElement[bool]]:
        flag = self._cancel_requested
        return [] if flag is None else [flag.is_(False)]


RUN_JOBS = JobLifecycle(Run, RunStatus, noun="run", cancel_requested=Run.cancel_requested)
EVALUATION_JOBS = JobLifecycle(Evaluation, EvaluationStatus, noun="evaluation")
