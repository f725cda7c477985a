"""The worker end to end: real Celery worker processes on real brokers and databases.

Runs are created with the repository and enqueued by task name after the commit, as the API
does; the worker is started with the compose command. Nothing is mocked: PostgreSQL and Redis
are throwaway servers, the embedded default is SQLite plus kombu's filesystem queue, and the
models really train (ResNet-8 on a few hundred synthetic 16x16 images). Workers killed or
robbed of their job: test_worker_crashes.py and test_worker_evaluation_faults.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core.evaluation import Predictions
from jobs.records import EvaluationStatus, RunStatus, session_scope
from jobs.records.repository import create_run, request_cancel
from tests.worker.harness import Stack, embedded_stack_context, tiny_config, wait_for
from tests.worker.runs import LONG_DATA, assert_trained, pool_pid, wait_evaluation

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

EPOCHS = 3


def _create(stack: Stack, config: dict[str, object], **kwargs: int) -> str:
    """Create the run and check it is queued before anything is sent."""
    with session_scope(stack.sessions) as session:
        run_id = create_run(
            session, architecture="resnet8", dataset=str(config["data"]), config=config, **kwargs
        ).id
    assert stack.run(run_id).status == RunStatus.QUEUED
    return run_id


# --- PostgreSQL + Redis, one worker shared by these tests ----------------------------------


def test_run_goes_queued_running_succeeded_then_evaluates(redis_stack: Stack) -> None:
    run_id = _create(redis_stack, tiny_config(epochs=EPOCHS))
    seen = ["queued"]
    redis_stack.send(run_id)
    redis_stack.wait_finished(run_id, seen=seen)
    assert seen == ["queued", "running", "succeeded"]
    run = assert_trained(redis_stack, run_id, epochs=EPOCHS)
    assert run.attempts == 1
    assert redis_stack.workers[0].owns(pool_pid(run))

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
        evaluation = wait_evaluation(stack, stack.evaluate(run_id, "val"))
        assert evaluation.status == EvaluationStatus.SUCCEEDED, evaluation.error
