"""Workers killed under their runs, or robbed of them: real Celery workers on the throwaway
PostgreSQL and Redis, each test with a stack and workers of its own.

A killed worker's run is resumed by another from its last checkpoint and ends as the
uninterrupted run would have; a run that kills every worker fails after its attempts; a run
taken from a stalled worker stops there without recording anything.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from jobs.records import Run, RunStatus, session_scope
from jobs.records.repository import request_cancel
from tests.worker.harness import Stack, tiny_config
from tests.worker.runs import (
    LONG_DATA,
    assert_trained,
    local_path,
    pool_pid,
    take_away,
    wait_stopped,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


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
    assert second.owns(pool_pid(run))
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
        pid = pool_pid(run)
        assert pid != worker.pid and worker.owns(pid)
        os.kill(pid, signal.SIGKILL)  # the pool process dies, as under the OOM killer
    run = stack.wait_finished(run_id, timeout=60)
    assert run.status == RunStatus.FAILED
    assert run.attempts == 2
    assert run.error is not None and "gave up after 2 attempts" in run.error
    assert worker.proc is not None and worker.proc.poll() is None  # the worker carried on


def test_a_run_taken_from_its_worker_stops(fresh_redis_stack: Stack) -> None:
    stack = fresh_redis_stack
    worker = stack.start_worker()
    run_id = stack.submit(tiny_config(data=LONG_DATA, epochs=50))
    stack.wait_run(run_id, lambda r: r.epochs_completed >= 1, what="to record an epoch")
    take_away(stack, Run, run_id)
    # The worker's next beat is refused: training stops within a batch, nothing is recorded.
    wait_stopped(stack, worker, "worker.train_run", "run")
    assert f"run {run_id}: attempt 1 no longer holds it" in worker.log()
    with session_scope(stack.sessions) as session:
        request_cancel(session, run_id)  # the thief never beats: the sweeper ends it cancelled
    run = stack.wait_finished(run_id, timeout=60)
    # Attempt 2 (the thief's), or 3 if the sweeper requeued the thief's before the cancel.
    assert run.status == RunStatus.CANCELLED and run.attempts >= 2, run.error
    assert run.epochs_completed < 50
    assert worker.proc is not None and worker.proc.poll() is None  # the worker carried on


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
    root = local_path(stack.settings.artifacts)
    a, b = (_saved_arrays(root / r / "model.keras") for r in (whole, resumed))
    assert a.keys() == b.keys() and any("optimizer" in k for k in a)
    for name in a:
        assert (a[name] == b[name]).all(), name
