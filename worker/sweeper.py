"""Notice runs and evaluations whose worker died and queue them again.

A worker killed mid-run (``kill -9``, the OOM killer, a lost host) leaves its run ``running``
with a heartbeat that stops. The broker does not bring the message back soon: Redis holds it
unacknowledged for the visibility timeout (longer than the longest run, so that a live run is
never handed to a second worker), and the embedded filesystem queue has already deleted it. So
every worker runs a sweeper in its main process: once when it is ready (a restarted worker
picks up what its predecessor was doing) and then every ``stale_after_seconds / 2``. For each
job whose heartbeat is older than ``stale_after_seconds`` — runs and evaluations (batch
predictions among them) alike, through the one job lifecycle — ``reclaim_stale`` decides:
queued again, failed after its ``max_attempts``, or cancelled if a cancel was pending; a
requeued job's task is sent again, after the commit. Sweepers on several workers may race: the
reclaim is one conditional UPDATE, so one of them wins and sends.

The same sweep sends again the task of a job that has been ``queued`` for ``stale_after_seconds``
while the broker holds no message for it (a lost message; see :mod:`worker.waiting`).

Why a thread and not ``celery beat`` (``-B``): a sweep task would wait in the queue behind the
very training jobs that keep every worker busy, and every ``-B`` worker would run its own beat.
The thread does no more than a few indexed queries; the training itself runs in the pool
process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session, sessionmaker

from jobs.records import session_scope
from jobs.records.gangs import broken_gangs, requeue_gang
from jobs.records.lifecycle import Job, JobLifecycle, ReclaimOutcome
from jobs.records.models import Run, RunStatus, utcnow
from jobs.records.slots import release_stale_slots
from worker.runtime import describe_error

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 1.0


def requeue_stale(
    sessions: sessionmaker[Session],
    jobs: JobLifecycle[Job],
    *,
    stale_after_s: float,
    send: Callable[[str], object],
    only: ColumnElement[bool] | None = None,
) -> dict[str, ReclaimOutcome]:
    """Reclaim every job of one kind whose heartbeat is stale; ``send`` the task of requeued ones.

    Args:
        sessions: The worker's session factory.
        jobs: The kind of job (``RUN_JOBS``, ``EVALUATION_JOBS``).
        stale_after_s: How old a heartbeat must be for its worker to count as dead.
        send: Enqueues a job's task again, given its id.
        only: Only the jobs that match this (one-worker runs: gangs are :func:`requeue_gangs`').

    Returns:
        What happened to each stale job.
    """
    with session_scope(sessions) as session:
        ids = jobs.stale_ids(session, stale_after_s=stale_after_s, only=only)
    outcomes: dict[str, ReclaimOutcome] = {}
    for job_id in ids:
        with session_scope(sessions) as session:
            # One transaction each: a race with another sweeper loses cleanly.
            outcome = jobs.reclaim_stale(session, job_id, stale_after_s=stale_after_s)
        outcomes[job_id] = outcome
        if outcome is ReclaimOutcome.NOT_STALE:
            continue
        log.warning("%s %s: its worker stopped beating: %s", jobs.noun, job_id, outcome.value)
        if outcome is ReclaimOutcome.REQUEUED:
            # Committed above: the worker that takes it sees it queued.
            send(job_id)
    return outcomes


def requeue_gangs(
    sessions: sessionmaker[Session],
    *,
    stale_after_s: float,
    send: Callable[[str, int], object],
) -> list[str]:
    """Stop the multi-worker runs whose gang is broken and queue them again; free the stale
    slots of the runs still waiting for their gang.

    A gang's survivors notice a dead member themselves (:mod:`worker.gang`); this finds the
    gangs none of whose workers survived, and the slots of workers that died while waiting
    (their task messages died with them: one is sent again for each slot freed).

    Args:
        send: Enqueues a run's task again, given its id and how many messages.

    Returns:
        The ids of the runs queued again or whose freed slots got a message.
    """
    touched: list[str] = []
    with session_scope(sessions) as session:
        broken = broken_gangs(session, stale_after_s=stale_after_s)
    for run_id, attempt, why in broken:
        with session_scope(sessions) as session:
            outcome = requeue_gang(session, run_id, attempt=attempt, why=why)
            workers = session.get_one(Run, run_id).workers
        if outcome is ReclaimOutcome.NOT_STALE:
            continue
        log.warning("run %s: its gang broke (%s): %s", run_id, why, outcome.value)
        if outcome is ReclaimOutcome.REQUEUED:
            send(run_id, workers)
            touched.append(run_id)
    with session_scope(sessions) as session:
        released = release_stale_slots(session, stale_after_s=stale_after_s)
        queued = [c.run_id for c in released]
        waiting = {r for r in queued if session.get_one(Run, r).status == RunStatus.QUEUED}
    for claim in released:
        if claim.run_id in waiting:
            log.warning("run %s: slot %d's worker stopped while waiting", claim.run_id, claim.slot)
            send(claim.run_id, 1)
            touched.append(claim.run_id)
    return touched


def resend_lost(
    sessions: sessionmaker[Session],
    jobs: JobLifecycle[Job],
    *,
    waiting: Callable[[], set[str] | None],
    queued_for_s: float,
    send: Callable[[str], object],
) -> list[str]:
    """Send again the task of each job queued for over ``queued_for_s`` whose message the
    broker does not hold.

    Args:
        sessions: The worker's session factory.
        jobs: The kind of job.
        waiting: Reads the ids of the jobs the broker holds a message for; ``None`` when it
            cannot tell (then nothing is resent).
        queued_for_s: How long a job must have been queued (since it was created) before its
            missing message counts as lost rather than not sent yet.
        send: Enqueues a job's task again, given its id.

    Returns:
        The ids of the jobs whose task was sent again.
    """
    job = jobs.model
    cutoff = utcnow() - timedelta(seconds=queued_for_s)
    queued = select(job.id).where(job.status == jobs.queued, job.created_at < cutoff)
    with session_scope(sessions) as session:
        candidates = list(session.scalars(queued.order_by(job.created_at)))
    if not candidates:
        return []
    # The records first, the broker second: a message taken by a worker in between looks lost
    # and is sent twice, which is harmless; the other order could miss a lost one for good.
    held = waiting()
    if held is None:
        return []
    resent = []
    for job_id in candidates:
        if job_id in held:
            continue
        with session_scope(sessions) as session:
            still_queued = session.scalar(queued.where(job.id == job_id)) is not None
        if still_queued:
            log.warning(
                "%s %s: queued but its message is gone: sending it again", jobs.noun, job_id
            )
            send(job_id)
            resent.append(job_id)
    return resent


class Sweeper:
    """Calls a sweep now and then every ``interval_s`` on a daemon thread, until stopped."""

    def __init__(self, sweep: Callable[[], object], *, interval_s: float) -> None:
        self.sweep = sweep
        self.interval_s = max(MIN_INTERVAL_S, interval_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stale-run-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sweep()
            except Exception as exc:  # the database may be down for a while: try again later
                log.warning("stale-run sweep failed: %s", describe_error(exc))
            self._stop.wait(self.interval_s)
