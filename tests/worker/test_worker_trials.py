"""An ASHA search's promoted trial whose worker is killed: real Celery workers on the throwaway
PostgreSQL and Redis.

Two trials, one at a time, judged by training loss at epoch 1 of 3: the first (a sane rate)
pauses at the rung, the second (a rate that blows its loss up) is stopped early there, and the
first is promoted. Its worker is killed (``kill -9``, the whole group) while it trains the
promoted segment; another worker's sweeper requeues it, and it resumes from its checkpoint to
the end of its budget. The search's decisions stand: one row per trial and rung.
"""

from __future__ import annotations

from typing import Any

import pytest

from jobs.records import RunStatus, session_scope
from jobs.records import trials as records
from jobs.records.experiments import attach_to_experiment, create_experiment
from jobs.records.repository import create_run
from tests.worker.harness import Stack, tiny_config
from tests.worker.runs import LONG_DATA

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

RULE = {"rule": "asha", "metric": "loss", "max_concurrent": 1, "rungs": [1],
        "reduction_factor": 2, "grace_period": 1}  # fmt: skip


def _search(stack: Stack, configs: list[dict[str, Any]]) -> list[str]:
    """Record an adaptive search's trials as the API does, then send the first."""
    with session_scope(stack.sessions) as session:
        experiment = create_experiment(
            session, name="asha", kind="grid", spec={"early_stopping": RULE}
        )
        ids = []
        for i, config in enumerate(configs):
            run = create_run(
                session, architecture=config["architecture"], dataset=config["data"],
                config=config,
            )  # fmt: skip
            attach_to_experiment(session, experiment, run, cell={"trial": i})
            ids.append(run.id)
        sent = records.hold_back(session, ids, max_concurrent=RULE["max_concurrent"])
    for run_id in sent:
        stack.send(run_id)
    return ids


def test_a_promoted_trial_whose_worker_dies_resumes_and_the_search_ends(
    fresh_redis_stack: Stack,
) -> None:
    stack = fresh_redis_stack
    first = stack.start_worker()
    base = tiny_config(data=LONG_DATA, epochs=3, batch_size=64)
    schedule = {"kind": "constant"}
    winner, loser = _search(
        stack,
        [
            {**base, "schedule": {**schedule, "base_lr": 0.05}},
            {**base, "schedule": {**schedule, "base_lr": 10.0}},
        ],
    )
    stack.wait_run(loser, lambda r: r.status.terminal, what="to be judged at the rung")
    promoted = stack.wait_run(
        winner,
        lambda r: r.status == RunStatus.RUNNING and r.attempts == 2,
        what="to be promoted and resumed",
    )
    assert promoted.epochs_completed == 1, "the promoted segment ended before the kill"
    first.kill()  # kill -9 of the worker's whole process group, mid-trial
    stack.start_worker()  # its sweeper finds the dead worker's trial and requeues it

    done = stack.wait_finished(winner)
    assert done.status == RunStatus.SUCCEEDED, (done.error, stack.logs())
    assert done.attempts == 3  # the first segment, the promoted one (killed), its resumption
    assert [e.epoch for e in stack.epochs(winner)] == [1, 2, 3]
    stopped = stack.run(loser)
    assert stopped.status == RunStatus.CANCELLED
    assert (stopped.error or "").startswith("stopped early at rung 0 (epoch 1)"), stopped.error
    with session_scope(stack.sessions) as session:
        rows = records.trial_rungs(session, stopped.experiment_id or "")
    assert [(r.rung, r.decision) for r in rows[winner]] == [(0, "promoted")]
    assert [(r.rung, r.decision) for r in rows[loser]] == [(0, "stopped")]
