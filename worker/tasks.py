"""The worker's tasks, by explicit name; each takes an id and re-reads the records.

- ``worker.train_run(run_id)``: claim the run (or take over one whose worker died), train it
  with core, record epochs, progress and the outcome (:mod:`worker.training`). A run across
  N workers has N messages of it; each delivery takes one of its slots (:mod:`worker.gang`).
- ``worker.evaluate_run(evaluation_id)``: score a run's model on a split
  (:mod:`worker.evaluation`).
- ``worker.requeue_stale_runs()``: queue again the runs whose worker stopped beating, and send
  again the task of a queued job whose message was lost (:mod:`worker.sweeper`). Every worker
  already does this on start-up and periodically on a thread of its main process; the task is
  there to trigger a sweep by hand.

Tasks are acknowledged late and the pool process is expected to die sometimes (OOM, a crash
in native code): a message redelivered after that finds its run still ``running`` with a
fresh heartbeat and does nothing; the sweeper queues the run again once the heartbeat is
stale, and the new attempt resumes from the last checkpoint. A run that kills its worker every
time ends ``failed`` after ``max_attempts`` claims. Evaluations go through the same job
lifecycle (:mod:`worker.lifecycle`): claimed, beaten, swept and taken over the same way (an
evaluation starts over: it has no checkpoint).

Only the pool process that runs a task imports TensorFlow (on its first task).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_ready, worker_shutdown, worker_shutting_down
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from jobs.queue import EVALUATE_TASK, SWEEP_TASK, TRAIN_TASK
from jobs.records import Run, session_scope
from jobs.records.lifecycle import EVALUATION_JOBS, RUN_JOBS
from jobs.settings import get_settings
from worker import exit_guard
from worker.celery_app import app
from worker.evaluation import run_evaluation
from worker.gang import run_gang_slot
from worker.runtime import sessions
from worker.sweeper import Sweeper, requeue_gangs, requeue_stale, resend_lost
from worker.training import run_training
from worker.trials import advance_all
from worker.waiting import waiting_job_ids

log = logging.getLogger(__name__)

# The database unreachable while claiming or recording: try the delivery again later.
_RETRY: dict[str, Any] = {
    "autoretry_for": (OperationalError,),
    "retry_backoff": 5,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 10,
}


@app.task(name=TRAIN_TASK, **_RETRY)
def train_run(run_id: str) -> str:
    """Train a queued run: alone (:func:`worker.training.run_training`), or as one slot of a
    run across several workers (:func:`worker.gang.run_gang_slot`)."""
    settings = get_settings()
    db = sessions(settings.db_url)
    if _workers(db, run_id) > 1:
        return run_gang_slot(run_id, settings=settings, sessions=db, send=send_train_times)
    return run_training(run_id, settings=settings, sessions=db)


@app.task(name=EVALUATE_TASK, **_RETRY)
def evaluate_run(evaluation_id: str) -> str:
    """Evaluate a finished run; see :func:`worker.evaluation.run_evaluation`."""
    settings = get_settings()
    return run_evaluation(evaluation_id, settings=settings, sessions=sessions(settings.db_url))


def send_train(run_id: str) -> None:
    """Enqueue ``worker.train_run`` for a run (already committed as queued): once per worker
    it needs (``runs.workers``), as the API does."""
    send_train_times(run_id, _workers(sessions(get_settings().db_url), run_id))


def send_train_times(run_id: str, times: int) -> None:
    """Enqueue ``worker.train_run`` for a run ``times`` times (a gang's slots)."""
    for _ in range(max(1, times)):
        app.send_task(TRAIN_TASK, kwargs={"run_id": run_id})


def _workers(db: sessionmaker[Session], run_id: str) -> int:
    """How many workers the run needs (1 when it is gone: the delivery then finds nothing)."""
    with session_scope(db) as session:
        workers = session.scalar(select(Run.workers).where(Run.id == run_id))
    return int(workers or 1)


def send_evaluate(evaluation_id: str) -> None:
    """Enqueue ``worker.evaluate_run`` for an evaluation (already committed as queued)."""
    app.send_task(EVALUATE_TASK, kwargs={"evaluation_id": evaluation_id})


def sweep() -> list[str]:
    """One sweep: the ids of the runs and evaluations queued again."""
    settings = get_settings()
    db = sessions(settings.db_url)
    stale_after_s = settings.stale_after_seconds
    # Runs across several workers are stopped and queued again as a gang, slots and all.
    requeued = requeue_gangs(db, stale_after_s=stale_after_s, send=send_train_times)
    one_worker = Run.workers == 1
    outcomes = requeue_stale(
        db, RUN_JOBS, stale_after_s=stale_after_s, send=send_train, only=one_worker
    )
    outcomes |= requeue_stale(db, EVALUATION_JOBS, stale_after_s=stale_after_s, send=send_evaluate)
    requeued += [job_id for job_id, outcome in outcomes.items() if outcome == "requeued"]
    # Lost messages: read the broker once for both kinds of job, and only if one is queued.
    held: list[set[str] | None] = []

    def waiting() -> set[str] | None:
        if not held:
            held.append(waiting_job_ids(settings))
        return held[0]

    requeued += resend_lost(
        db, RUN_JOBS, waiting=waiting, queued_for_s=stale_after_s, send=send_train
    )
    requeued += resend_lost(
        db, EVALUATION_JOBS, waiting=waiting, queued_for_s=stale_after_s, send=send_evaluate
    )
    # Adaptive searches whose last active trial ended without a worker to advance them (it was
    # cancelled while queued, or given up on by the sweep above) decide and go on here.
    requeued += advance_all(db)
    return requeued


@app.task(name=SWEEP_TASK)
def requeue_stale_runs() -> list[str]:
    """Queue again the runs whose worker died; see :mod:`worker.sweeper`."""
    return sweep()


_sweeper: Sweeper | None = None


@worker_shutting_down.connect
def _bound_a_cold_exit(how: str = "", **_: Any) -> None:
    if how == "Cold":  # a warm shutdown first waits for its task, for as long as it takes
        exit_guard.bound_exit()


@worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    global _sweeper
    if _sweeper is None:
        interval = get_settings().stale_after_seconds / 2
        _sweeper = Sweeper(sweep, interval_s=interval)
        _sweeper.start()
        log.info("stale-run sweeper: now and every %.1f s", _sweeper.interval_s)


@worker_shutdown.connect
def _stop_sweeper(**_: Any) -> None:
    global _sweeper
    exit_guard.bound_exit()  # the pool has stopped: what is left is Celery's own teardown
    if _sweeper is not None:
        _sweeper.stop()
        _sweeper = None
