"""Batch predictions (evaluations) whose worker dies, or is robbed of them: real Celery
workers on the throwaway PostgreSQL and Redis, each test with a stack and a worker of its own.
Either way the evaluation is done again, all of it, and recorded once.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from jobs.queue import EVALUATE_TASK
from jobs.records import Evaluation, EvaluationStatus, RunStatus, session_scope
from jobs.records.repository import create_evaluation
from tests.worker.harness import RUN_TIMEOUT_S, Stack, tiny_config, wait_for
from tests.worker.runs import take_away, wait_evaluation, wait_stopped

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


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
    done = wait_evaluation(stack, evaluation_id, timeout=RUN_TIMEOUT_S)
    assert done.status == EvaluationStatus.SUCCEEDED, (done.error, stack.logs())
    assert done.attempts == 2 and done.predictions_count == 40000
    recoveries = (
        f"evaluation {evaluation_id}: its worker stopped beating: requeued",
        f"evaluation {evaluation_id}: its worker stopped beating; taking it over",
    )
    assert any(line in worker.log() for line in recoveries), worker.log()[-3000:]
    assert worker.proc is not None and worker.proc.poll() is None


def test_an_evaluation_taken_from_its_worker_stops(fresh_redis_stack: Stack) -> None:
    stack = fresh_redis_stack
    worker = stack.start_worker()
    evaluation_id, _ = _start_a_long_batch_prediction(stack)
    take_away(stack, Evaluation, evaluation_id)
    # The worker's next beat is refused: scoring stops within a batch, nothing is recorded.
    wait_stopped(stack, worker, "worker.evaluate_run", "evaluation")
    assert f"evaluation {evaluation_id}: attempt 1 no longer holds it" in worker.log()
    # The thief never beats: the sweeper queues it again and the worker does it all.
    done = wait_evaluation(stack, evaluation_id, timeout=RUN_TIMEOUT_S)
    assert done.status == EvaluationStatus.SUCCEEDED, (done.error, stack.logs())
    assert done.attempts == 3 and done.predictions_count == 40000
