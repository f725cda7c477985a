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

Why a thread and not ``celery beat`` (``-B``): a sweep task would wait in the queue behind the
very training jobs that keep every worker busy, and every ``-B`` worker would run its own beat.
The thread does no more than a few indexed queries; the training itself runs in the pool
process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from jobs.records import session_scope
from jobs.records.lifecycle import Job, JobLifecycle, ReclaimOutcome
from worker.runtime import describe_error

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 1.0


def requeue_stale(
    sessions: sessionmaker[Session],
    jobs: JobLifecycle[Job],
    *,
    stale_after_s: float,
    send: Callable[[str], object],
) -> dict[str, ReclaimOutcome]:
    """Reclaim every job of one kind whose heartbeat is stale; ``send`` the task of requeued ones.

    Args:
        sessions: The worker's session factory.
        jobs: The kind of job (``RUN_JOBS``, ``EVALUATION_JOBS``).
        stale_after_s: How old a heartbeat must be for its worker to count as dead.
        send: Enqueues a job's task again, given its id.

    Returns:
        What happened to each stale job.
    """
    with session_scope(sessions) as session:
        ids = jobs.stale_ids(session, stale_after_s=stale_after_s)
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
