"""The one job lifecycle behaves the same for runs and for evaluations (batch predictions are
evaluations), on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from jobs.records import RecordNotFound, session_scope
from jobs.records.evaluations import create_evaluation
from jobs.records.lifecycle import EVALUATION_JOBS, RUN_JOBS, JobLifecycle, ReclaimOutcome
from jobs.records.models import utcnow
from jobs.records.runs import create_run

CONFIG = {"architecture": "resnet20", "data": "cifar10", "epochs": 3}


def _new_run(session: Session, max_attempts: int) -> str:
    run = create_run(
        session,
        architecture="resnet20",
        dataset="cifar10",
        config=CONFIG,
        max_attempts=max_attempts,
    )
    return run.id


def _new_evaluation(session: Session, max_attempts: int) -> str:
    run_id = _new_run(session, 3)
    return create_evaluation(session, run_id=run_id, split="test", max_attempts=max_attempts).id


Create = Callable[[Session, int], str]
KINDS = {"runs": (RUN_JOBS, _new_run), "evaluations": (EVALUATION_JOBS, _new_evaluation)}


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest) -> tuple[JobLifecycle[Any], Create]:
    return KINDS[request.param]


def _do(sm: sessionmaker[Session], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn(session, ...)`` in its own committed transaction, as a task would."""
    with session_scope(sm) as s:
        return fn(s, *args, **kwargs)


def _age(sm: sessionmaker[Session], jobs: JobLifecycle[Any], job_id: str) -> None:
    """The worker holding the job stops beating (dies, or stalls) for two minutes."""
    with session_scope(sm) as s:
        s.execute(
            update(jobs.model)
            .where(jobs.model.id == job_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=120))
        )


def _state(sm: sessionmaker[Session], jobs: JobLifecycle[Any], job_id: str) -> tuple[Any, ...]:
    with sm() as s:
        job = jobs.get(s, job_id)
        return job.status.value, job.attempts, job.worker_host


def test_claim_twice(sm: sessionmaker[Session], kind: tuple[JobLifecycle[Any], Create]) -> None:
    jobs, create = kind
    job_id = _do(sm, create, 3)
    assert _do(sm, jobs.claim, job_id, worker_host="w1") == 1  # the attempt now held
    assert _do(sm, jobs.claim, job_id, worker_host="w2") is None  # a second delivery
    assert _state(sm, jobs, job_id) == ("running", 1, "w1")
    with pytest.raises(RecordNotFound):
        _do(sm, jobs.claim, "0" * 32, worker_host="w1")


def test_stale_is_requeued_then_given_up_when_out_of_attempts(
    sm: sessionmaker[Session], kind: tuple[JobLifecycle[Any], Create]
) -> None:
    jobs, create = kind
    job_id = _do(sm, create, 2)
    assert _do(sm, jobs.claim, job_id, worker_host="w1") == 1
    stale = {"stale_after_s": 60}
    assert _do(sm, jobs.reclaim_stale, job_id, **stale) is ReclaimOutcome.NOT_STALE  # alive
    _age(sm, jobs, job_id)  # worker 1 died
    assert _do(sm, jobs.stale_ids, **stale) == [job_id]
    assert _do(sm, jobs.reclaim_stale, job_id, **stale) is ReclaimOutcome.REQUEUED
    assert _state(sm, jobs, job_id)[0] == "queued"
    assert _do(sm, jobs.reclaim_stale, job_id, **stale) is ReclaimOutcome.NOT_STALE
    assert _do(sm, jobs.claim, job_id, worker_host="w2") == 2
    assert _state(sm, jobs, job_id) == ("running", 2, "w2")

    _age(sm, jobs, job_id)  # worker 2 died too: its max_attempts (2) are used up
    assert _do(sm, jobs.reclaim_stale, job_id, **stale) is ReclaimOutcome.GAVE_UP
    with sm() as s:
        job = jobs.get(s, job_id)
        assert job.status.value == "failed" and job.finished_at is not None
        assert job.error is not None and job.error.startswith("gave up after 2 attempts")
    assert _do(sm, jobs.claim, job_id, worker_host="w3") is None
    assert _do(sm, jobs.stale_ids, **stale) == []
    with pytest.raises(RecordNotFound):
        _do(sm, jobs.reclaim_stale, "0" * 32, **stale)


def test_a_fenced_out_attempt_can_neither_beat_nor_finish(
    sm: sessionmaker[Session], kind: tuple[JobLifecycle[Any], Create]
) -> None:
    jobs, create = kind
    job_id = _do(sm, create, 3)
    assert _do(sm, jobs.claim, job_id, worker_host="w1") == 1
    assert _do(sm, jobs.beat, job_id, attempt=1) is True
    _age(sm, jobs, job_id)  # w1 stalls (not dead): the job is taken over
    assert _do(sm, jobs.reclaim_stale, job_id, stale_after_s=60) is ReclaimOutcome.REQUEUED
    assert _do(sm, jobs.claim, job_id, worker_host="w2") == 2
    # w1 wakes up: its writes are refused, so it stops
    assert _do(sm, jobs.beat, job_id, attempt=1) is False
    assert _do(sm, jobs.finish, job_id, status="succeeded", attempt=1) is False
    assert _state(sm, jobs, job_id) == ("running", 2, "w2")
    # w2's go through, once
    assert _do(sm, jobs.beat, job_id, attempt=2) is True
    assert _do(sm, jobs.finish, job_id, status="succeeded", attempt=2) is True
    assert _do(sm, jobs.finish, job_id, status="failed", attempt=2) is False
    assert _do(sm, jobs.beat, job_id, attempt=2) is False  # finished: the worker stops
    assert _state(sm, jobs, job_id) == ("succeeded", 2, "w2")
    with pytest.raises(ValueError, match="Cannot finish"):
        _do(sm, jobs.finish, job_id, status="queued")
    with pytest.raises(RecordNotFound):
        _do(sm, jobs.finish, "0" * 32, status="failed")


def test_fail_unsent(sm: sessionmaker[Session], kind: tuple[JobLifecycle[Any], Create]) -> None:
    jobs, create = kind
    unsent = _do(sm, create, 3)
    assert _do(sm, jobs.fail_unsent, unsent, "could not enqueue: broker down") is True
    with sm() as s:
        job = jobs.get(s, unsent)
        assert job.status.value == "failed" and job.finished_at is not None
        assert job.error == "could not enqueue: broker down"
    assert _do(sm, jobs.fail_unsent, unsent, "again") is False  # only from queued
    assert _do(sm, jobs.claim, unsent, worker_host="w") is None  # its task, if it came after all

    claimed = _do(sm, create, 3)  # a worker got it after all: left alone
    assert _do(sm, jobs.claim, claimed, worker_host="w") == 1
    assert _do(sm, jobs.fail_unsent, claimed, "could not enqueue") is False
    assert _state(sm, jobs, claimed) == ("running", 1, "w")
    assert _do(sm, jobs.fail_unsent, "0" * 32, "x") is False


def test_max_attempts_is_kept_the_same_way(
    sm: sessionmaker[Session], kind: tuple[JobLifecycle[Any], Create]
) -> None:
    jobs, create = kind
    with sm() as s:
        assert jobs.get(s, _do(sm, create, 5)).max_attempts == 5
    with pytest.raises(ValueError, match="max_attempts"):
        _do(sm, create, 0)


def test_only_runs_can_be_cancelled() -> None:
    assert RUN_JOBS.cancelled is not None and RUN_JOBS.cancelled.value == "cancelled"
    assert EVALUATION_JOBS.cancelled is None
    assert {s.value for s in RUN_JOBS.finished} == {"succeeded", "failed", "cancelled"}
    assert {s.value for s in EVALUATION_JOBS.finished} == {"succeeded", "failed"}
