"""The worker's side of the one job lifecycle, in process on SQLite: claiming or taking over a job,
and the one heartbeat that stops the work — training and evaluations alike — when the job is
taken from this worker. (The same, through real Celery workers: ``test_worker_tasks.py``.)
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from jobs.records import make_engine, make_sessionmaker, session_scope, upgrade_to_head
from jobs.records.evaluations import create_evaluation
from jobs.records.lifecycle import EVALUATION_JOBS, RUN_JOBS, JobLifecycle, ReclaimOutcome
from jobs.records.models import utcnow
from jobs.records.runs import create_run
from jobs.settings import Settings
from worker import evaluation, training
from worker.lifecycle import JobHeartbeat, JobLost, claim_job
from worker.sweeper import requeue_stale

CONFIG = {"architecture": "resnet8", "data": "synthetic:64:16x16x3:3", "epochs": 50}
BEAT_S = 0.05


@pytest.fixture
def sm(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'records.db'}"
    upgrade_to_head(url)
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", heartbeat_seconds=BEAT_S, stale_after_seconds=60)


def _new_run(sm: sessionmaker[Session]) -> str:
    with session_scope(sm) as s:
        return create_run(s, architecture="resnet8", dataset="synthetic", config=CONFIG).id


def _new_evaluation(sm: sessionmaker[Session]) -> str:
    run_id = _new_run(sm)
    with session_scope(sm) as s:
        return create_evaluation(s, run_id=run_id, split="val").id


KINDS = {"run": (RUN_JOBS, _new_run), "evaluation": (EVALUATION_JOBS, _new_evaluation)}


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest) -> tuple[JobLifecycle[Any], Callable[..., str]]:
    return KINDS[request.param]


def _stop_beating(session: Session, jobs: JobLifecycle[Any], job_id: str) -> None:
    """The job's worker has not beaten for two minutes."""
    session.execute(
        update(jobs.model)
        .where(jobs.model.id == job_id)
        .values(heartbeat_at=utcnow() - timedelta(seconds=120))
    )


def _take_away(sm: sessionmaker[Session], jobs: JobLifecycle[Any], job_id: str) -> None:
    """What happens to a worker that stalls: its job looks dead, is reclaimed and claimed by
    another worker (attempt 2). One transaction, so that no beat of the stalled worker lands
    in between."""
    with session_scope(sm) as s:
        _stop_beating(s, jobs, job_id)
        assert jobs.reclaim_stale(s, job_id, stale_after_s=60) is ReclaimOutcome.REQUEUED
        assert jobs.claim(s, job_id, worker_host="thief") == 2


def _wait(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_claim_job_claims_once_and_takes_over_a_dead_workers_job(
    sm: sessionmaker[Session], kind: tuple[JobLifecycle[Any], Callable[..., str]]
) -> None:
    jobs, create = kind
    job_id = create(sm)
    read = lambda job: job.worker_host  # noqa: E731
    claimed = claim_job(sm, jobs, job_id, stale_after_s=60, read=read)
    assert claimed is not None and claimed[1] == 1
    assert claim_job(sm, jobs, job_id, stale_after_s=60, read=read) is None  # worker alive
    with session_scope(sm) as s:  # ... until it stops beating
        _stop_beating(s, jobs, job_id)
    taken = claim_job(sm, jobs, job_id, stale_after_s=60, read=read)
    assert taken is not None and taken[1] == 2  # a redelivery takes the job over
    assert claim_job(sm, jobs, "0" * 32, stale_after_s=60, read=read) is None  # deleted


def test_the_heartbeat_beats_and_notices_the_job_was_taken_away(
    sm: sessionmaker[Session], kind: tuple[JobLifecycle[Any], Callable[..., str]]
) -> None:
    jobs, create = kind
    job_id = create(sm)
    with session_scope(sm) as s:
        attempt = jobs.claim(s, job_id, worker_host="me")
    assert attempt == 1

    def beat_at() -> Any:
        with sm() as s:
            return jobs.get(s, job_id).heartbeat_at

    with JobHeartbeat(sm, jobs, job_id, attempt=attempt, interval_s=BEAT_S) as heartbeat:
        first = beat_at()
        _wait(lambda: beat_at() > first, "a beat")
        assert not heartbeat.lost.is_set()
        batches = heartbeat.until_lost(itertools.count())
        assert next(batches) == 0  # work goes on while the job is held
        _take_away(sm, jobs, job_id)
        _wait(heartbeat.lost.is_set, "the heartbeat to notice")
        with pytest.raises(JobLost):
            next(batches)  # the work stops before its next batch
    with sm() as s:
        job = jobs.get(s, job_id)
        assert (job.status.value, job.attempts, job.worker_host) == ("running", 2, "thief")


def test_the_sweeper_requeues_and_sends_a_dead_workers_job_of_either_kind(
    sm: sessionmaker[Session], kind: tuple[JobLifecycle[Any], Callable[..., str]]
) -> None:
    jobs, create = kind
    job_id = create(sm)
    with session_scope(sm) as s:
        assert jobs.claim(s, job_id, worker_host="dead") == 1
    sent: list[str] = []
    assert requeue_stale(sm, jobs, stale_after_s=60, send=sent.append) == {}  # alive
    with session_scope(sm) as s:
        _stop_beating(s, jobs, job_id)
    outcomes = requeue_stale(sm, jobs, stale_after_s=60, send=sent.append)
    assert outcomes == {job_id: ReclaimOutcome.REQUEUED} and sent == [job_id]
    with sm() as s:
        assert jobs.get(s, job_id).status.value == "queued"


def _run_in_thread(fn: Callable[[], str]) -> tuple[threading.Thread, list[str]]:
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(fn()), daemon=True)
    thread.start()
    return thread, outcome


def test_an_evaluation_taken_away_stops_and_records_nothing(
    sm: sessionmaker[Session], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluation_id = _new_evaluation(sm)
    scored = threading.Event()

    def score_forever(job: Any, settings: Settings, heartbeat: JobHeartbeat[Any]) -> Any:
        # Stands in for core's scoring loop, which pulls batches through heartbeat.until_lost.
        for _ in heartbeat.until_lost(itertools.count()):
            scored.set()
            time.sleep(0.01)
        raise AssertionError("an endless evaluation ended")

    monkeypatch.setattr(evaluation, "_evaluate", score_forever)
    thread, outcome = _run_in_thread(
        lambda: evaluation.run_evaluation(evaluation_id, settings=settings, sessions=sm)
    )
    assert scored.wait(10)
    _take_away(sm, EVALUATION_JOBS, evaluation_id)
    thread.join(10)
    assert outcome == ["lost"]
    with sm() as s:
        ev = EVALUATION_JOBS.get(s, evaluation_id)
        # Nothing written by attempt 1: no failure, no metrics, no predictions.
        assert (ev.status.value, ev.attempts, ev.worker_host) == ("running", 2, "thief")
        assert (ev.error, ev.metrics, ev.predictions_uri) == (None, None, None)


def test_a_run_taken_away_stops_training_and_records_nothing(
    sm: sessionmaker[Session], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = _new_run(sm)
    training_started = threading.Event()

    def train_until_cancelled(
        run_id: str, config_data: Any, *, monitor: training.RunMonitor, **_: Any
    ) -> Any:
        # Stands in for core's training loop, which asks should_cancel between batches.
        while not monitor.should_cancel():
            training_started.set()
            time.sleep(0.01)
        return SimpleNamespace(status="cancelled", epochs_completed=0)

    monkeypatch.setattr(training, "_preload", lambda: None)
    monkeypatch.setattr(training, "_train", train_until_cancelled)
    thread, outcome = _run_in_thread(
        lambda: training.run_training(run_id, settings=settings, sessions=sm)
    )
    assert training_started.wait(10)
    _take_away(sm, RUN_JOBS, run_id)
    thread.join(10)
    assert outcome == ["lost"]
    with sm() as s:
        run = RUN_JOBS.get(s, run_id)
        assert (run.status.value, run.attempts, run.worker_host) == ("running", 2, "thief")
        assert (run.error, run.metrics, run.finished_at) == (None, None, None)
