"""The worker's side of the one job lifecycle (:mod:`jobs.records.lifecycle`), for every job it
runs — training runs, evaluations and batch predictions alike.

- :func:`claim_job`: claim the job, or take it over if the worker that held it died; a second
  delivery of the same message does nothing.
- :class:`JobHeartbeat`: the one heartbeat. It beats on a thread for as long as the work runs,
  and notices when the job was taken from this worker (its attempt fenced out by a reclaim, or
  the job finished or cancelled by someone else): it sets :attr:`JobHeartbeat.lost`, which
  stops the work — training cancels within a batch, an evaluation stops between batches — and
  the worker records nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Generic, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from jobs.records import RecordNotFound, session_scope
from jobs.records.lifecycle import Job, JobLifecycle, ReclaimOutcome
from worker.runtime import describe_error, worker_name

log = logging.getLogger(__name__)

T = TypeVar("T")


def claim_job(
    sessions: sessionmaker[Session],
    jobs: JobLifecycle[Job],
    job_id: str,
    *,
    stale_after_s: float,
    read: Callable[[Job], T],
) -> tuple[T, int] | None:
    """Claim a job for this process, reclaiming it first if its worker died.

    If the claim fails the job is running, finished or cancelled. A running job whose heartbeat
    went stale lost its worker (``kill -9``, OOM): it is put back to ``queued`` and claimed
    again here, in the same transaction; otherwise (its worker is alive, it finished, it was
    cancelled, it is out of attempts) this delivery does nothing. Every claim counts an attempt.

    Args:
        sessions: The worker's session factory.
        jobs: The job's lifecycle (``RUN_JOBS``, ``EVALUATION_JOBS``).
        job_id: The job.
        stale_after_s: How old a heartbeat must be for its worker to count as dead.
        read: What the work needs from the claimed row, read in the claim's transaction.

    Returns:
        What ``read`` returned and the attempt now held (every later write is fenced by it), or
        ``None`` when this delivery has nothing to do.
    """
    me = worker_name()
    noun = jobs.noun
    with session_scope(sessions) as session:
        try:
            attempt = jobs.claim(session, job_id, worker_host=me)
            if attempt is None:
                outcome = jobs.reclaim_stale(session, job_id, stale_after_s=stale_after_s)
                status = jobs.get(session, job_id).status
                if outcome is ReclaimOutcome.NOT_STALE:
                    why = "its worker is alive" if status == jobs.running else status.value
                    log.info("%s %s: not claimed (%s); nothing to do", noun, job_id, why)
                    return None
                if outcome is not ReclaimOutcome.REQUEUED:  # out of attempts, or cancelled
                    log.warning(
                        "%s %s: not claimed: its worker stopped beating and it is now %s",
                        noun,
                        job_id,
                        status.value,
                    )
                    return None
                log.warning("%s %s: its worker stopped beating; taking it over", noun, job_id)
                attempt = jobs.claim(session, job_id, worker_host=me)
        except RecordNotFound:
            log.info("%s %s: no such %s (deleted?); nothing to do", noun, job_id, noun)
            return None
        if attempt is None:  # pragma: no cover - another worker won the race after the reclaim
            return None
        job = jobs.get(session, job_id)
        log.info("%s %s: attempt %d of %d on %s", noun, job_id, attempt, job.max_attempts, me)
        return read(job), attempt


class JobLost(Exception):
    """The job was taken from this worker: stop, and record nothing."""


class JobHeartbeat(Generic[Job]):
    """Beats for one claimed job on a daemon thread while the ``with`` block runs.

    Each beat is :meth:`JobLifecycle.beat` fenced by the attempt held. A failed beat (the
    database away for a moment) is logged and the next one tried: a missed beat or two must not
    stop the work, only a long silence marks the worker dead. A beat that finds the job no
    longer running in this attempt sets :attr:`lost` and beating stops; so does :meth:`lose`,
    for the work's own writes (a progress report, an epoch) that find the same.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        jobs: JobLifecycle[Job],
        job_id: str,
        *,
        attempt: int,
        interval_s: float,
    ) -> None:
        self.sessions = sessions
        self.jobs: JobLifecycle[Job] = jobs
        self.job_id = job_id
        self.attempt = attempt
        self.interval_s = interval_s
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> JobHeartbeat[Job]:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join(timeout=max(5.0, 2 * self.interval_s))

    def lose(self, where: str) -> None:
        """Note that the job is no longer this worker's (found by ``where``): stop the work."""
        if not self.lost.is_set():
            log.warning(
                "%s %s: attempt %d no longer holds it (%s): it was taken from this worker; "
                "stopping",
                self.jobs.noun,
                self.job_id,
                self.attempt,
                where,
            )
            self.lost.set()

    def check(self) -> None:
        """Raise :class:`JobLost` if the job was taken from this worker."""
        if self.lost.is_set():
            raise JobLost(f"{self.jobs.noun} {self.job_id}: attempt {self.attempt} lost it")

    def until_lost(self, items: Iterable[T]) -> Iterator[T]:
        """``items``, one by one, raising :class:`JobLost` before the next once the job is lost:
        work that loops over batches stops within one batch."""
        for item in items:
            self.check()
            yield item

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._done.wait(self.interval_s):
            now = time.monotonic()
            if now - last > 2 * self.interval_s:
                # Native code holding the GIL (library loading, graph building) starves this
                # thread; stale_after_seconds must leave room for it.
                log.warning("%s %s: heartbeat %.1f s late", self.jobs.noun, self.job_id, now - last)
            last = now
            try:
                with session_scope(self.sessions) as session:
                    alive = self.jobs.beat(session, self.job_id, attempt=self.attempt)
            except Exception as exc:
                log.warning(
                    "%s %s: beat failed: %s", self.jobs.noun, self.job_id, describe_error(exc)
                )
                continue
            if not alive:
                self.lose("heartbeat")
                return
