"""What the worker tests submit and check: long runs, trained runs' records and files, pool
process ids, evaluations, and jobs taken away from their worker.
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import update

from jobs.records import Evaluation, Run, RunStatus, session_scope
from jobs.records.lifecycle import EVALUATION_JOBS, RUN_JOBS
from jobs.records.models import utcnow
from tests.worker.harness import Stack, WorkerProcess, wait_for

# Long enough to still be running when the test acts on it: ~1-3 s per epoch here.
LONG_DATA = "synthetic:2048:16x16x3:3"
FILE_KINDS = ("model", "history", "metrics", "checkpoint")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def local_path(uri: str) -> Path:
    """The local path of an artifact URI: a plain path, or a ``file://`` URL."""
    return Path(uri.removeprefix("file://"))


def wait_evaluation(stack: Stack, evaluation_id: str, timeout: float = 60) -> Any:
    return wait_for(
        lambda: (
            (e := stack.evaluation(evaluation_id)).status.value in ("succeeded", "failed") and e
        ),
        timeout=timeout,
        what=f"evaluation {evaluation_id}",
        details=stack.logs,
    )


def pool_pid(run: Run) -> int:
    assert run.worker_host is not None
    return int(run.worker_host.rsplit("/", 1)[1])


def assert_trained(stack: Stack, run_id: str, *, epochs: int) -> Run:
    """Succeeded, one epoch row per epoch, metrics, and artifacts with size and SHA-256."""
    run = stack.run(run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.error is None
    assert [row.epoch for row in stack.epochs(run_id)] == list(range(1, epochs + 1))
    for row in stack.epochs(run_id):
        assert row.loss is not None and row.accuracy is not None and row.val_accuracy is not None
        assert row.seconds is not None and row.seconds > 0
        assert row.images_per_second is not None and row.images_per_second > 0
    assert run.epochs_completed == epochs
    assert run.metrics is not None and run.metrics["split"] == "val"
    assert 0.0 <= run.metrics["accuracy"] <= 1.0
    assert "confusion_matrix" not in run.metrics  # kept in metrics.json and in evaluations
    assert run.progress is not None and run.progress["epochs"] == epochs
    assert run.started_at is not None and run.finished_at is not None
    assert run.started_at <= run.finished_at

    run_dir = local_path(stack.settings.artifacts) / run_id
    artifacts = {a.kind.value: a for a in stack.artifacts(run_id)}
    assert set(artifacts) == {*FILE_KINDS, "tensorboard"}
    for kind in FILE_KINDS:
        path = local_path(artifacts[kind].uri)
        assert path.is_relative_to(run_dir) and path.is_file(), artifacts[kind].uri
        assert artifacts[kind].size_bytes == path.stat().st_size
        assert artifacts[kind].sha256 == sha256(path)
    assert local_path(artifacts["model"].uri).name == "model.keras"
    assert local_path(artifacts["checkpoint"].uri).name == f"epoch-{epochs:04d}.keras"
    assert local_path(artifacts["tensorboard"].uri).is_dir()
    assert artifacts["tensorboard"].sha256 is None
    return run


def take_away(stack: Stack, model: type[Run] | type[Evaluation], job_id: str) -> None:
    """What a stalled worker suffers: its job looks dead, is reclaimed and claimed by another
    worker (a "thief" that never beats), all in one transaction."""
    jobs = RUN_JOBS if model is Run else EVALUATION_JOBS
    with session_scope(stack.sessions) as session:
        session.execute(
            update(model)
            .where(model.id == job_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=120))
        )
        assert jobs.reclaim_stale(session, job_id, stale_after_s=60) == "requeued"
        assert jobs.claim(session, job_id, worker_host="thief") == 2


def wait_stopped(stack: Stack, worker: WorkerProcess, task: str, what: str) -> None:
    """Wait for the worker's task to end because its job was taken away (it returns 'lost'),
    after saying why."""
    lost = re.compile(rf"{task}\[[^\]]+\] succeeded in [\d.]+s: 'lost'")
    wait_for(
        lambda: lost.search(worker.log()) is not None,
        timeout=30,
        what=f"the worker to stop the {what}",
        details=stack.logs,
    )
