"""Adaptive searches in the records: ASHA's promotions and early stops, the median rule, slots,
and the decisions' safety when trials report at once or a worker dies at a rung.

Each test plays the workers' part by hand on both dialects: claim, record an epoch, report it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from jobs.records import Run, RunStatus, session_scope
from jobs.records import trials as records
from jobs.records.experiments import attach_to_experiment, cancel_experiment, create_experiment
from jobs.records.repository import claim_run, create_run, record_epoch, request_cancel
from jobs.records.trials import Next, Outcome

CONFIG = {"architecture": "resnet8", "data": "synthetic:64:8x8x3:2", "validation": 0.25}


def _search(
    sm: sessionmaker[Session], trials: int, *, epochs: int, **rule: Any
) -> tuple[str, list[str], list[str]]:
    """An experiment of ``trials`` runs with an early-stopping rule, as the service makes it.

    Returns:
        The experiment's id, its run ids in cell order, and the ids sent (the rest paused).
    """
    block = {"rule": "asha", "metric": "val_accuracy", "max_concurrent": trials, **rule}
    with session_scope(sm) as s:
        experiment = create_experiment(
            s, name="search", kind="random", spec={"early_stopping": block}
        )
        ids = []
        for i in range(trials):
            run = create_run(
                s, architecture="resnet8", dataset="synthetic", config={**CONFIG, "epochs": epochs}
            )
            attach_to_experiment(s, experiment, run, cell={"trial": i})
            ids.append(run.id)
        sent = records.hold_back(s, ids, max_concurrent=block["max_concurrent"])
        return experiment.id, ids, sent


def _do(sm: sessionmaker[Session], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    with session_scope(sm) as s:
        return fn(s, *args, **kwargs)


def _start(sm: sessionmaker[Session], run_id: str) -> int:
    attempt = _do(sm, claim_run, run_id, worker_host="w")
    assert attempt is not None
    return int(attempt)


def _epoch(sm: sessionmaker[Session], run_id: str, epoch: int, accuracy: float) -> Outcome:
    """What a trial's worker does after an epoch: record it, then report it to the search."""
    values = {"epoch": epoch, "val_accuracy": accuracy}
    _do(sm, record_epoch, run_id, values)
    return _do(sm, records.report_epoch, run_id, epoch=epoch, values=values)


def _pause(sm: sessionmaker[Session], experiment_id: str, run_id: str) -> list[str]:
    """The worker stopped a trial at its rung: paused, and the freed slot filled."""

    def pause(s: Session) -> list[str]:
        assert records.pause(s, run_id, attempt=None)
        return records.advance(s, experiment_id)

    return _do(sm, pause)


def _run(sm: sessionmaker[Session], run_id: str) -> Run:
    with sm() as s:
        run = s.get(Run, run_id)
        assert run is not None
        return run


def test_asha_promotes_pauses_and_stops_through_the_cancel_path(
    sm: sessionmaker[Session],
) -> None:
    # η = 2, rungs at epochs 1 and 2 of 4; 4 trials, 2 at a time.
    exp, (t0, t1, t2, t3), sent = _search(
        sm, 4, epochs=4, rungs=[1, 2], reduction_factor=2, max_concurrent=2
    )
    assert sent == [t0, t1]
    assert [_run(sm, t).status for t in (t2, t3)] == [RunStatus.PAUSED] * 2
    _start(sm, t0)
    _start(sm, t1)

    first = _epoch(sm, t0, 1, 0.5)  # alone at rung 0: 1 // 2 = 0 go on yet
    assert first.next is Next.PAUSE and first.send == []  # no slot is free while it runs
    assert _pause(sm, exp, t0) == [t2]  # its slot goes to a trial not started yet
    assert _run(sm, t0).status == RunStatus.PAUSED

    assert _epoch(sm, t1, 1, 0.9).next is Next.CONTINUE  # top 2 // 2 = 1: promoted, trains on
    _start(sm, t2)
    stopped = _epoch(sm, t2, 1, 0.1)  # 3rd of 3, the final cut keeps 4 // 2 = 2
    assert stopped.next is Next.STOP
    assert stopped.reason is not None and stopped.reason.startswith("stopped early at rung 0")
    assert stopped.send == [t3]  # a stopped trial's slot is free at once
    run = _run(sm, t2)
    assert run.status == RunStatus.RUNNING and run.cancel_requested  # the user's cancel path

    _start(sm, t3)
    assert _epoch(sm, t3, 1, 0.7).next is Next.CONTINUE  # all in: top 2 go on
    paused = _run(sm, t0)  # 3rd of 4: a paused trial stopped early is cancelled at once
    assert paused.status == RunStatus.CANCELLED
    assert paused.error is not None and paused.error.startswith("stopped early at rung 0 (epoch 1)")

    # Rung 1 (epoch 2): t1 waits for t3, then goes on from its checkpoint; t3 is stopped.
    assert _epoch(sm, t1, 2, 0.95).next is Next.PAUSE
    assert _pause(sm, exp, t1) == []  # t3 holds the other slot; nothing else to start
    last = _epoch(sm, t3, 2, 0.6)
    assert last.next is Next.STOP and last.send == [t1]
    resumed = _run(sm, t1)
    assert resumed.status == RunStatus.QUEUED  # promoted: a worker resumes it
    assert resumed.max_attempts == 4  # the pause's claim does not count against crashes
    assert _start(sm, t1) == 2  # a second attempt of the same run
    assert _do(sm, records.standing, t1) is Next.CONTINUE

    with sm() as s:
        rows = records.trial_rungs(s, exp)
    assert [(r.rung, r.decision) for r in rows[t1]] == [(0, "promoted"), (1, "promoted")]
    assert [(r.rung, r.decision) for r in rows[t0]] == [(0, "stopped")]
    assert [(r.rung, r.decision) for r in rows[t3]] == [(0, "promoted"), (1, "stopped")]
    assert "ranked 2 of 2" in rows[t3][1].reason


def test_two_trials_reporting_the_same_rung_at_once_are_judged_one_after_the_other(
    sm: sessionmaker[Session],
) -> None:
    # 2 trials, η = 2: the first report waits for the other; the second decides both. Judged
    # side by side, each would see only itself and both would wait for ever.
    _, (a, b), _ = _search(sm, 2, epochs=2, rungs=[1], reduction_factor=2)
    for run_id in (a, b):
        _start(sm, run_id)
        _do(sm, record_epoch, run_id, {"epoch": 1, "val_accuracy": 0.4 if run_id == a else 0.8})
    barrier = threading.Barrier(2)
    outcomes: dict[str, Outcome] = {}
    errors: list[BaseException] = []

    def report(run_id: str, value: float) -> None:
        try:
            with session_scope(sm) as s:
                barrier.wait(timeout=10)
                outcomes[run_id] = records.report_epoch(
                    s, run_id, epoch=1, values={"val_accuracy": value}
                )
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=report, args=a_v) for a_v in ((a, 0.4), (b, 0.8))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    nexts = {outcomes[a].next, outcomes[b].next}
    assert Next.PAUSE in nexts  # the first to get the lock waited...
    assert nexts - {Next.PAUSE} <= {Next.CONTINUE, Next.STOP}  # ...the second decided
    with sm() as s:
        rows = records.trial_rungs(s, _run(sm, a).experiment_id or "")
    assert {rows[a][0].decision, rows[b][0].decision} == {"stopped", "promoted"}
    assert rows[b][0].decision == "promoted"  # the better one, whoever came first


def test_a_decision_waits_for_another_open_decision(sm: sessionmaker[Session]) -> None:
    """A report blocked behind another trial's uncommitted report sees it once it commits."""
    _, (a, b), _ = _search(sm, 2, epochs=2, rungs=[1], reduction_factor=2)
    for run_id in (a, b):
        _start(sm, run_id)
    first = sm()
    try:
        assert records.report_epoch(first, a, epoch=1, values={"val_accuracy": 0.9}).next is (
            Next.PAUSE
        )
        outcome: list[Outcome] = []
        second = threading.Thread(
            target=lambda: outcome.append(
                _do(sm, records.report_epoch, b, epoch=1, values={"val_accuracy": 0.3})
            )
        )
        second.start()
        second.join(timeout=0.5)
        assert second.is_alive()  # waiting on the first decision's lock
        first.commit()
        second.join(timeout=30)
        assert outcome[0].next is Next.STOP and "ranked 2 of 2" in (outcome[0].reason or "")
    finally:
        first.close()


def test_a_worker_that_dies_at_a_rung_leaves_the_trial_waiting_there(
    sm: sessionmaker[Session],
) -> None:
    _, (a, b), _ = _search(sm, 2, epochs=3, rungs=[1], reduction_factor=2)
    _start(sm, a)
    assert _epoch(sm, a, 1, 0.5).next is Next.PAUSE
    # The worker died before pausing it: the run is still running, its report stands. A new
    # attempt (after the sweeper's reclaim) pauses it before training; the rung is not judged
    # twice (one row per trial and rung).
    assert _do(sm, records.standing, a) is Next.PAUSE
    assert _epoch(sm, a, 1, 0.1).next is Next.PAUSE
    # A worker that missed the verdict and trained on is told again at its next epoch.
    assert _epoch(sm, a, 2, 0.6).next is Next.PAUSE
    with sm() as s:
        rows = records.trial_rungs(s, _run(sm, a).experiment_id or "")
    assert [(r.rung, r.value) for r in rows[a]] == [(0, 0.5)]
    # A resumed attempt that missed its rung's report (it died between the checkpoint and
    # the report) reports it late, with that epoch's recorded value.
    _start(sm, b)
    _do(sm, record_epoch, b, {"epoch": 1, "val_accuracy": 0.8})
    late = _epoch(sm, b, 2, 0.85)
    assert late.next is Next.CONTINUE  # between rungs now: it goes on, promoted at rung 0
    with sm() as s:
        rows = records.trial_rungs(s, _run(sm, b).experiment_id or "")
    assert [(r.rung, r.epoch, r.value, r.decision) for r in rows[b]] == [(0, 1, 0.8, "promoted")]
    assert rows[a][0].decision == "stopped"


def test_cancelling_a_search_cancels_its_paused_trials_and_starts_nothing(
    sm: sessionmaker[Session],
) -> None:
    exp, ids, sent = _search(sm, 3, epochs=3, rungs=[1], max_concurrent=1)
    assert sent == ids[:1]
    _do(sm, request_cancel, ids[1])  # a user's cancel of a paused trial: at once
    assert _run(sm, ids[1]).status == RunStatus.CANCELLED
    _, cancelled = _do(sm, cancel_experiment, exp)
    assert set(cancelled) == {ids[0], ids[2]}
    assert [_run(sm, i).status for i in ids] == [RunStatus.CANCELLED] * 3
    assert _do(sm, records.advance, exp) == []


def test_median_rule_stops_a_trial_below_the_others_running_means(
    sm: sessionmaker[Session],
) -> None:
    _, ids, _ = _search(sm, 4, epochs=4, rule="median", grace_period=2, min_trials=2)
    for run_id in ids:
        _start(sm, run_id)
    for run_id, values in zip(ids[:2], ([0.5, 0.6], [0.4, 0.5]), strict=True):
        for epoch, value in enumerate(values, start=1):
            assert _epoch(sm, run_id, epoch, value).next is Next.CONTINUE
    assert _epoch(sm, ids[2], 1, 0.2).next is Next.CONTINUE
    assert _epoch(sm, ids[2], 2, 0.3).next is Next.STOP  # .3 < median(.55, .45)
    assert _epoch(sm, ids[3], 1, 0.1).next is Next.CONTINUE  # within the grace period
    # Others' running means at epoch 2: .55, .45, .25 → median .45; its best .4 is below.
    outcome = _epoch(sm, ids[3], 2, 0.4)
    assert outcome.next is Next.STOP
    assert outcome.reason is not None and outcome.reason.startswith("stopped early at epoch 2")
    assert _run(sm, ids[3]).cancel_requested
    assert _do(sm, records.stop_reason, ids[3]) == outcome.reason


def test_paused_runs_are_never_claimed(sm: sessionmaker[Session]) -> None:
    _, ids, _ = _search(sm, 2, epochs=3, rungs=[1], max_concurrent=1)
    assert _do(sm, claim_run, ids[1], worker_host="w") is None
    assert _run(sm, ids[1]).status == RunStatus.PAUSED


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Any:
    yield
    assert threading.active_count() < 50
