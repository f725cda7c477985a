"""The worker's side of adaptive searches (:mod:`jobs.records.trials`): report a trial's epochs,
pause it at a rung, and send the runs a decision queued.

Each step is one transaction; the runs it queued are sent after it commits, as everywhere
(a task must find its run committed). A send that fails is logged, not raised: the verdict
stands, and the run, ``queued`` with no message, is sent again by the sweeper's lost-message
pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from jobs.queue import TRAIN_TASK
from jobs.records import session_scope
from jobs.records import trials as records

log = logging.getLogger(__name__)


def send_runs(run_ids: Iterable[str]) -> None:
    """Enqueue ``worker.train_run`` for runs a search queued (already committed)."""
    from worker.celery_app import app  # the app reads settings: only when there is a run to send

    for run_id in run_ids:
        try:
            app.send_task(TRAIN_TASK, kwargs={"run_id": run_id})
        except Exception as exc:  # queued in the records: the sweeper sends a lost one again
            log.warning("run %s: queued by its search but not sent: %s", run_id, exc)


def report(
    sessions: sessionmaker[Session], run_id: str, *, epoch: int, values: Mapping[str, Any]
) -> records.Outcome:
    """Report a trial's finished epoch; send what the decision queued; say what to do next."""
    with session_scope(sessions) as session:
        outcome = records.report_epoch(session, run_id, epoch=epoch, values=values)
    if outcome.next is not records.Next.CONTINUE:
        log.info("run %s: epoch %d: %s (%s)", run_id, epoch, outcome.next.value, outcome.reason)
    send_runs(outcome.send)
    return outcome


def pause(sessions: sessionmaker[Session], run_id: str, experiment_id: str, attempt: int) -> bool:
    """Mark a trial stopped at its rung ``paused``, and let the search fill the slot it freed.

    Returns:
        ``False`` if the run was no longer this attempt's (nothing changed).
    """
    with session_scope(sessions) as session:
        paused = records.pause(session, run_id, attempt=attempt)
        send = records.advance(session, experiment_id) if paused else []
    send_runs(send)
    return paused


def advance(sessions: sessionmaker[Session], experiment_ids: Iterable[str]) -> list[str]:
    """Let searches decide and fill their free slots (after a trial finished, and on every
    sweep); the ids of the runs queued and sent."""
    sent: list[str] = []
    for experiment_id in experiment_ids:
        with session_scope(sessions) as session:
            send = records.advance(session, experiment_id)
        send_runs(send)
        sent += send
    return sent


def advance_all(sessions: sessionmaker[Session]) -> list[str]:
    """:func:`advance` every search that has paused trials (the sweeper's pass)."""
    with session_scope(sessions) as session:
        ids = records.unfinished_searches(session)
    return advance(sessions, ids)
