"""The worker end to end: real Celery worker processes on real brokers and databases.

Runs are created with the repository and enqueued by task name after the commit, as the API
does; the worker is started with the compose command. Nothing is mocked: PostgreSQL and Redis
are throwaway servers, the embedded default is SQLite plus kombu's filesystem queue, and the
models really train (ResNet-8 on a few hundred synthetic 16x16 images).
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from core.evaluation import Predictions
from jobs.queue import EVALUATE_TASK
from jobs.records import Evaluation, EvaluationStatus, Run, RunStatus, session_scope
from jobs.records.lifecycle import EVALUATION_JOBS, RUN_JOBS
from jobs.records.models import utcnow
from jobs.records.repository import create_evaluation, create_run, request_cancel
from tests.worker.harness import (
    RUN_TIMEOUT_S,
    Stack,
    WorkerProcess,
    embedded_stack_context,
    tiny_config,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

EPOCHS = 3
# Long enough to still be running when the test acts on it: ~1-3 s per epoch here.
LONG_DATA = "synthetic:2048:16x16x3:3"
FILE_KINDS = ("model", "history", "metrics", "checkpoint")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _create(stack: Stack, config: dict[str, object], **kwargs: int) -> str:
    """Create the run and check it is queued before anything is sent."""
    with session_scope(stack.sessions) as session:
        run_id = create_run(
            session, architecture="resnet8", dataset=str(config["data"]), config=config, **kwargs
        ).id
    assert stack.run(run_id).status == RunStatus.QUEUED
    return run_id


def _local(uri: str) -> Path:
    """The local path of an artifact URI: a plain path, or a ``file://`` URL."""
    return Path(uri.removeprefix("file://"))


def _wait_evaluation(stack: Stack, evaluation_id: str, timeout: float = 60) -> Any:
    return wait_for(
        lambda: (
            (e := stack.evaluation(evaluation_id)).status.value in ("succeeded", "failed") and e
        ),
        timeout=timeout,
        what=f"evaluation {evaluation_id}",
        details=stack.logs,
    )


def _pid(run: Run) -> int:
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

    run_dir = _local(stack.settings.artifacts) / run_id
    artifacts = {a.kind.value: a for a in stack.artifacts(run_id)}
    assert set(artifacts) == {*FILE_KINDS, "tensorboard"}
    for kind in FILE_KINDS:
        path = _local(artifacts[kind].uri)
        assert path.is_relative_to(run_dir) and path.is_file(), artifacts[kind].uri
        assert artifacts[kind].size_bytes == path.stat().st_size
        assert artifacts[kind].sha256 == _sha256(path)
    assert _local(artifacts["model"].uri).name == "model.keras"
    assert _local(artifacts["checkpoint"].uri).name == f"epoch-{epochs:04d}.keras"
    assert _local(artifacts["tensorboard"].uri).is_dir()
    assert artifacts["tensorboard"].sha256 is None
    return run


# --- PostgreSQL + Redis, one worker shared by these tests ----------------------------------


def test_run_goes_queued_running_succeeded_then_evaluates(redis_stack: Stack) -> None:
    run_id = _create(redis_stack, tiny_config(epochs=EPOCHS))
    seen = ["queued"]
    redis_stack.send(run_id)
    redis_stack.wait_finished(run_id, seen=seen)
    assert seen == ["queued", "running", "succeeded"]
    run = assert_trained(redis_stack, run_id, epochs=EPOCHS)
    assert run.attempts == 1
    assert redis_stack.workers[0].owns(_pid(run))

    evaluation_id = redis_stack.evaluate(run_id, "val")
    evaluation = wait_for(
        lambda: (
            (e := redis_stack.evaluation(evaluation_id)).status.value in ("succeeded", "failed")
            and e
        ),
        timeout=60,
        what="the evaluation",
        details=redis_stack.logs,
    )
    assert evaluation.status == EvaluationStatus.SUCCEEDED, evaluation.error
    assert evaluation.accuracy == pytest.approx(run.metrics["accuracy"])  # the same images
    for column in ("precision_macro", "recall_macro", "f1_macro", "seconds"):
        assert getattr(evaluation, column) is not None
    assert len(evaluation.metrics["confusion_matrix"]) == 3
    assert sum(map(sum, evaluation.metrics["confusion_matrix"])) == 64  # a quarter of 256
    # The predictions it kept give every metric back, without the model.
    assert evaluation.predictions_count == 64 and evaluation.predictions_uri
    kept = Predictions.load(evaluation.predictions_uri)
    assert kept.ids == [f"val/{i}" for i in range(64)]  # in-memory images: named by position
    rescored = kept.score()
    assert {k: evaluation.metrics[k] for k in rescored} == rescored

    missing = redis_stack.evaluate(run_id, "test")  # synthetic data has no test split
    failed = wait_for(
        lambda: (
            (e := redis_stack.evaluation(missing)).status.value in ("succeeded", "failed") and e
        ),
        timeout=60,
        what="the second evaluation",
        details=redis_stack.logs,
    )
    assert failed.status == EvaluationStatus.FAILED
    assert "no 'test' split" in failed.error


def test_cancel_stops_a_running_run_and_the_worker_takes_the_next(redis_stack: Stack) -> None:
    run_id = redis_stack.submit(tiny_config(data=LONG_DATA, epochs=50))
    redis_stack.wait_run(
        run_id,
        lambda r: r.status == RunStatus.RUNNING and r.progress is not None,
        what="to report progress",
    )
    with session_scope(redis_stack.sessions) as session:
        request_cancel(session, run_id)
    asked = time.monotonic()
    run = redis_stack.wait_finished(run_id, timeout=30)
    took = time.monotonic() - asked
    assert run.status == RunStatus.CANCELLED, run.error
    assert took < 10, f"cancel took {took:.1f} s"
    assert run.epochs_completed < 50
    assert [r.epoch for r in redis_stack.epochs(run_id)] == list(range(1, run.epochs_completed + 1))

    next_id = redis_stack.submit(tiny_config(epochs=2))
    redis_stack.wait_finished(next_id)
    next_run = assert_trained(redis_stack, next_id, epochs=2)
    assert next_run.worker_host == run.worker_host  # the same pool process carried on


def test_bad_runs_fail_with_the_reason_and_the_worker_carries_on(redis_stack: Stack) -> None:
    unknown = redis_stack.submit(tiny_config(architecture="resnet7"))
    outside = redis_stack.submit(tiny_config(data="folder:/etc"))
    for run_id in (unknown, outside):
        redis_stack.wait_finished(run_id)
    run = redis_stack.run(unknown)
    assert run.status == RunStatus.FAILED and run.attempts == 1
    assert run.error is not None
    assert run.error.startswith("ValidationError: architecture: Value error, Invalid architecture")
    assert "'resnet7'" in run.error
    run = redis_stack.run(outside)
    assert run.status == RunStatus.FAILED
    assert run.error == "ValueError: Data path '/etc' must be relative to the data root"
    assert redis_stack.workers[0].proc is not None and redis_stack.workers[0].proc.poll() is None


def test_a_second_delivery_does_no_harm(redis_stack: Stack) -> None:
    # A second worker on the same queue, so that the duplicate may arrive while the run trains.
    extra = redis_stack.start_worker()
    try:
        run_id = _create(redis_stack, tiny_config(epochs=EPOCHS))
        redis_stack.send(run_id)
        redis_stack.send(run_id)
        redis_stack.wait_finished(run_id)
        wait_for(
            lambda: f"run {run_id}: not claimed" in redis_stack.logs(),
            timeout=60,
            what="the duplicate delivery to be handled",
            details=redis_stack.logs,
        )
        run = assert_trained(redis_stack, run_id, epochs=EPOCHS)
        assert run.attempts == 1
        logs = redis_stack.logs()
        assert logs.count(f"run {run_id}: attempt ") == 1
        assert logs.count(f"run {run_id}: not claimed") == 1
    finally:
        extra.stop()


# --- crashes: workers of their own ---------------------------------------------------------


def test_killed_worker_is_replaced_and_the_run_resumes(fresh_redis_stack: Stack) -> None:
    stack = fresh_redis_stack
    first = stack.start_worker()
    epochs = 6
    run_id = stack.submit(tiny_config(data=LONG_DATA, epochs=epochs))
    stack.wait_run(run_id, lambda r: r.epochs_completed >= 1, what="to record an epoch")
    first.kill()  # kill -9 of the worker's whole process group, mid-run
    done_before = {row.epoch: row.recorded_at for row in stack.epochs(run_id)}
    run = stack.run(run_id)
    assert run.status == RunStatus.RUNNING and run.attempts == 1
    assert run.epochs_completed < epochs, "the run finished before the kill: make it longer"

    second = stack.start_worker()  # its sweeper requeues the run once the heartbeat is stale
    stack.wait_finished(run_id)
    run = assert_trained(stack, run_id, epochs=epochs)
    assert run.attempts == 2
    assert second.owns(_pid(run))
    # Resumed from the checkpoint: the epochs done before the kill were not trained again.
    rows = {row.epoch: row.recorded_at for row in stack.epochs(run_id)}
    assert {e: rows[e] for e in done_before} == done_before
    assert re.search(r"resuming after epoch [1-9]", second.log()), second.log()[-3000:]


def test_a_run_that_always_kills_its_worker_fails_after_max_attempts(
    fresh_redis_stack: Stack,
) -> None:
    stack = fresh_redis_stack
    worker = stack.start_worker()
    run_id = stack.submit(tiny_config(data=LONG_DATA, epochs=50), max_attempts=2)
    for attempt in (1, 2):
        run = stack.wait_run(
            run_id,
            lambda r, n=attempt: r.status == RunStatus.RUNNING and r.attempts == n,
            what=f"to start attempt {attempt}",
        )
        pid = _pid(run)
        assert pid != worker.pid and worker.owns(pid)
        os.kill(pid, signal.SIGKILL)  # the pool process dies, as under the OOM killer
    run = stack.wait_finished(run_id, timeout=60)
    assert run.status == RunStatus.FAILED
    assert run.attempts == 2
    assert run.error is not None and "gave up after 2 attempts" in run.error
    assert worker.proc is not None and worker.proc.poll() is None  # the worker carried on


def _start_a_long_batch_prediction(stack: Stack) -> tuple[str, Any]:
    """Train a run, send a batch prediction of it over many images (so that it is still running
    when the test acts on it) and wait for it to start: its id, and its running record."""
    run_id = stack.submit(tiny_config(epochs=1))
    assert stack.wait_finished(run_id).status == RunStatus.SUCCEEDED
    big = "synthetic:40000:16x16x3:3"
    with session_scope(stack.sessions) as session:
        evaluation_id = create_evaluation(session, run_id=run_id, split="train", dataset=big).id
    stack.sender.send_task(EVALUATE_TASK, kwargs={"evaluation_id": evaluation_id})
    running = wait_for(
        lambda: (e := stack.evaluation(evaluation_id)).status.value == "running" and e,
        timeout=60,
        what="the evaluation to start",
        details=stack.logs,
    )
    return evaluation_id, running


def test_an_evaluation_whose_worker_dies_is_run_again(fresh_redis_stack: Stack) -> None:
    stack = fresh_redis_stack
    worker = stack.start_worker()
    evaluation_id, running = _start_a_long_batch_prediction(stack)
    pid = int(running.worker_host.rsplit("/", 1)[1])
    assert pid != worker.pid and worker.owns(pid)
    os.kill(pid, signal.SIGKILL)  # the pool process dies mid-evaluation

    # Once the heartbeat is stale, one of the two recoveries runs it again, whichever comes
    # first (as for runs): the sweeper queues it again, or the redelivered message (late acks)
    # takes it over. Either way it is the second attempt, and it does it all.
    # A fresh pool process imports TensorFlow again before the second attempt.
    done = _wait_evaluation(stack, evaluation_id, timeout=RUN_TIMEOUT_S)
    assert done.status == EvaluationStatus.SUCCEEDED, (done.error, stack.logs())
    assert done.attempts == 2 and done.predictions_count == 40000
    recoveries = (
        f"evaluation {evaluation_id}: its worker stopped beating: requeued",
        f"evaluation {evaluation_id}: its worker stopped beating; taking it over",
    )
    assert any(line in worker.log() for line in recoveries), worker.log()[-3000:]
    assert worker.proc is not None and worker.proc.poll() is None


def _take_away(stack: Stack, model: type[Run] | type[Evaluation], job_id: str) -> None:
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


def _wait_stopped(stack: Stack, worker: WorkerProcess, task: str, what: str) -> None:
    """Wait for the worker's task to end because its job was taken away (it returns 'lost'),
    after saying why."""
    lost = re.compile(rf"{task}\[[^\]]+\] succeeded in [\d.]+s: 'lost'")
    wait_for(
        lambda: lost.search(worker.log()) is not None,
        timeout=30,
        what=f"the worker to stop the {what}",
        details=stack.logs,
    )


def test_a_run_taken_from_its_worker_stops(fresh_redis_stack: Stack) -> None:
    stack = fresh_redis_stack
    worker = stack.start_worker()
    run_id = stack.submit(tiny_config(data=LONG_DATA, epochs=50))
    stack.wait_run(run_id, lambda r: r.epochs_completed >= 1, what="to record an epoch")
    _take_away(stack, Run, run_id)
    # The worker's next beat is refused: training stops within a batch, nothing is recorded.
    _wait_stopped(stack, worker, "worker.train_run", "run")
    assert f"run {run_id}: attempt 1 no longer holds it" in worker.log()
    with session_scope(stack.sessions) as session:
        request_cancel(session, run_id)  # the thief never beats: the sweeper ends it cancelled
    run = stack.wait_finished(run_id, timeout=60)
    # Attempt 2 (the thief's), or 3 if the sweeper requeued the thief's before the cancel.
    assert run.status == RunStatus.CANCELLED and run.attempts >= 2, run.error
    assert run.epochs_completed < 50
    assert worker.proc is not None and worker.proc.poll() is None  # the worker carried on


def test_an_evaluation_taken_from_its_worker_stops(fresh_redis_stack: Stack) -> None:
    stack = fresh_redis_stack
    worker = stack.start_worker()
    evaluation_id, _ = _start_a_long_batch_prediction(stack)
    _take_away(stack, Evaluation, evaluation_id)
    # The worker's next beat is refused: scoring stops within a batch, nothing is recorded.
    _wait_stopped(stack, worker, "worker.evaluate_run", "evaluation")
    assert f"evaluation {evaluation_id}: attempt 1 no longer holds it" in worker.log()
    # The thief never beats: the sweeper queues it again and the worker does it all.
    done = _wait_evaluation(stack, evaluation_id, timeout=RUN_TIMEOUT_S)
    assert done.status == EvaluationStatus.SUCCEEDED, (done.error, stack.logs())
    assert done.attempts == 3 and done.predictions_count == 40000


# --- the embedded default ------------------------------------------------------------------


def test_embedded_default_sqlite_and_filesystem_queue(embedded_stack: Stack) -> None:
    assert embedded_stack.settings.embedded_broker
    assert embedded_stack.settings.db_url.startswith("sqlite")
    embedded_stack.start_worker()
    run_id = _create(embedded_stack, tiny_config(epochs=EPOCHS))
    seen = ["queued"]
    embedded_stack.send(run_id)
    embedded_stack.wait_finished(run_id, seen=seen)
    assert seen == ["queued", "running", "succeeded"]
    run = assert_trained(embedded_stack, run_id, epochs=EPOCHS)
    assert run.attempts == 1
    assert Path(embedded_stack.settings.artifacts).is_relative_to(embedded_stack.settings.state_dir)


def test_url_artifact_root_trains_in_staging_and_copies_the_run_up(tmp_path: Path) -> None:
    # file:// goes through tf.io.gfile exactly as gs:// would.
    shared = tmp_path / "shared"
    with embedded_stack_context(tmp_path, artifact_root=f"file://{shared}") as stack:
        stack.start_worker()
        run_id = stack.submit(tiny_config(epochs=2))
        stack.wait_finished(run_id)
        assert_trained(stack, run_id, epochs=2)
        for artifact in stack.artifacts(run_id):
            assert artifact.uri.startswith(f"file://{shared}/{run_id}/")
        assert (shared / run_id / "labels.json").is_file()
        assert not (stack.settings.state_dir / "staging" / run_id).exists()
        evaluation = _wait_evaluation(stack, stack.evaluate(run_id, "val"))
        assert evaluation.status == EvaluationStatus.SUCCEEDED, evaluation.error


def _saved_arrays(model_file: Path) -> dict[str, Any]:
    """Every array of a ``.keras`` file (weights and optimizer state), read without Keras."""
    import io
    import zipfile

    import h5py
    import numpy as np

    arrays: dict[str, Any] = {}
    with zipfile.ZipFile(model_file) as archive:
        h5 = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")

        def keep(name: str, item: Any) -> None:
            if isinstance(item, h5py.Dataset):
                arrays[name] = np.asarray(item)

        h5.visititems(keep)
    return arrays


def test_a_run_whose_worker_is_killed_mid_epoch_resumes_to_the_uninterrupted_run(
    fresh_redis_stack: Stack,
) -> None:
    """Issue 15 through the service: the same config once uninterrupted and once with its
    worker killed inside epoch 2 and resumed by another worker; CIFAR augmentation (the
    default) and a step schedule dropping after the resume point. Equal epochs, equal weights."""
    stack = fresh_redis_stack
    config = tiny_config(
        data="synthetic:4096:16x16x3:3",  # 96 batches an epoch: time to land a kill inside one
        schedule={"kind": "step", "base_lr": 0.05, "boundary_epochs": [2], "factor": 0.1},
        augment="cifar",
        tensorboard=False,
    )
    first = stack.start_worker()
    whole = stack.submit(config)
    stack.wait_finished(whole)
    assert stack.run(whole).status == RunStatus.SUCCEEDED

    resumed = stack.submit(config)
    run = stack.wait_run(
        resumed,
        lambda r: (
            r.epochs_completed >= 2
            or (
                r.epochs_completed == 1
                and r.progress is not None
                and r.progress["epoch"] == 2
                and r.progress["batch"] <= r.progress["batches"] // 2
            )
        ),
        what="to be inside epoch 2",
    )
    first.kill()  # kill -9 of the worker's whole process group
    assert run.epochs_completed == 1, "epoch 2 ended before the kill: make the epochs longer"
    assert stack.run(resumed).epochs_completed == 1
    stack.start_worker()
    stack.wait_finished(resumed)
    assert stack.run(resumed).attempts == 2

    def losses(run_id: str) -> list[tuple[float | None, float | None, float | None]]:
        return [(e.loss, e.accuracy, e.val_loss) for e in stack.epochs(run_id)]

    assert losses(resumed) == losses(whole)
    root = _local(stack.settings.artifacts)
    a, b = (_saved_arrays(root / r / "model.keras") for r in (whole, resumed))
    assert a.keys() == b.keys() and any("optimizer" in k for k in a)
    for name in a:
        assert (a[name] == b[name]).all(), name
