"""The functions that change the records, on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, inspect, select, update
from sqlalchemy.orm import Session, sessionmaker

from jobs.records import (
    ApiKey,
    Artifact,
    EpochMetric,
    Evaluation,
    RecordConflict,
    RecordNotFound,
    Run,
    RunStatus,
    session_scope,
)
from jobs.records.models import utcnow
from jobs.records.repository import (
    ReclaimOutcome,
    add_artifact,
    authenticate,
    claim_evaluation,
    claim_run,
    create_api_key,
    create_evaluation,
    create_run,
    delete_run,
    evaluation_heartbeat,
    find_dataset,
    finish_evaluation,
    finish_run,
    get_evaluation,
    get_run,
    heartbeat,
    is_cancel_requested,
    list_epochs,
    list_runs,
    reclaim_stale_evaluation,
    reclaim_stale_run,
    record_epoch,
    register_dataset,
    request_cancel,
    revoke_api_key,
    stale_evaluation_ids,
    stale_run_ids,
    update_progress,
)

CONFIG = {"architecture": "resnet20", "data": "cifar10", "epochs": 3, "batch_size": 128}


def _new_run(sm: sessionmaker[Session], **kwargs: Any) -> str:
    args: dict[str, Any] = {"architecture": "resnet20", "dataset": "cifar10", "config": CONFIG}
    args.update(kwargs)
    with session_scope(sm) as s:
        return create_run(s, **args).id


def _do(sm: sessionmaker[Session], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn(session, ...)`` in its own committed transaction, as a task or request would."""
    with session_scope(sm) as s:
        return fn(s, *args, **kwargs)


def _run(sm: sessionmaker[Session], run_id: str) -> Run:
    with sm() as s:
        return get_run(s, run_id)


def _age_heartbeat(sm: sessionmaker[Session], run_id: str, seconds: float) -> None:
    with session_scope(sm) as s:
        s.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )


def test_create_run(sm: sessionmaker[Session]) -> None:
    run_id = _new_run(sm, max_attempts=2)
    run = _run(sm, run_id)
    assert len(run_id) == 32 and int(run_id, 16) >= 0
    assert run.status is RunStatus.QUEUED
    assert (run.attempts, run.max_attempts, run.cancel_requested) == (0, 2, False)
    assert (run.epochs_planned, run.epochs_completed) == (3, 0)
    assert run.config == CONFIG
    assert run.started_at is None and run.worker_host is None
    with pytest.raises(RecordNotFound):
        _run(sm, "0" * 32)


def test_claim_is_exclusive(sm: sessionmaker[Session]) -> None:
    run_id = _new_run(sm)
    assert _do(sm, claim_run, run_id, worker_host="w1") == 1  # the attempt held
    assert _do(sm, claim_run, run_id, worker_host="w2") is None  # a second delivery
    run = _run(sm, run_id)
    assert run.status is RunStatus.RUNNING
    assert (run.attempts, run.worker_host) == (1, "w1")
    assert run.started_at is not None and run.heartbeat_at is not None
    with pytest.raises(RecordNotFound):
        _do(sm, claim_run, "f" * 32, worker_host="w1")


def _race_to_claim(sm: sessionmaker[Session], run_id: str) -> dict[str, int | None]:
    """Two workers claim the same run at the same moment, each in its own session."""
    barrier = threading.Barrier(2)
    results: dict[str, int | None] = {}
    errors: list[BaseException] = []

    def worker(host: str) -> None:
        try:
            with session_scope(sm) as s:
                barrier.wait(timeout=10)
                results[host] = claim_run(s, run_id, worker_host=host)
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(host,)) for host in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    return results


def test_claim_race_has_one_winner(sm: sessionmaker[Session]) -> None:
    for _ in range(4):
        run_id = _new_run(sm)
        results = _race_to_claim(sm, run_id)
        assert sorted(results.values(), key=str) == [1, None]  # one attempt 1, one refusal
        run = _run(sm, run_id)
        assert run.attempts == 1
        assert run.worker_host == next(host for host, won in results.items() if won == 1)


def test_claim_waits_for_an_open_transaction(sm: sessionmaker[Session]) -> None:
    """A claim blocked behind another session's uncommitted claim sees it once it commits."""
    run_id = _new_run(sm)
    first = sm()
    try:
        assert claim_run(first, run_id, worker_host="first") == 1  # not yet committed
        outcome: list[int | None] = []
        second = threading.Thread(
            target=lambda: outcome.append(_do(sm, claim_run, run_id, worker_host="second"))
        )
        second.start()
        second.join(timeout=0.5)
        assert second.is_alive()  # waiting on the first transaction's lock
        first.commit()
        second.join(timeout=30)
        assert outcome == [None]
    finally:
        first.close()


def test_record_epoch_upserts(sm: sessionmaker[Session]) -> None:
    run_id = _new_run(sm)
    _do(sm, claim_run, run_id, worker_host="w")
    base = {
        "epoch": 1, "loss": 2.0, "accuracy": 0.3, "val_loss": None, "val_accuracy": None,
        "learning_rate": 0.1, "seconds": 10.0, "images_per_second": 5000.0,
    }  # fmt: skip
    _do(sm, record_epoch, run_id, base)
    _do(sm, record_epoch, run_id, {**base, "epoch": 2, "loss": 1.5})
    # the run crashed after epoch 2 and resumed from the epoch-1 checkpoint: epoch 2 again
    _do(sm, record_epoch, run_id, {**base, "epoch": 2, "loss": 1.4, "val_accuracy": 0.5, "x": 1})
    with sm() as s:
        epochs = list_epochs(s, run_id)
        assert [e.epoch for e in epochs] == [1, 2]
        assert (epochs[1].loss, epochs[1].val_accuracy) == (1.4, 0.5)
        assert s.scalar(select(func.count()).select_from(EpochMetric)) == 2
    assert _run(sm, run_id).epochs_completed == 2
    _do(sm, record_epoch, run_id, {**base, "epoch": 1, "loss": 1.9})
    assert _run(sm, run_id).epochs_completed == 2  # never goes back
    with pytest.raises(RecordNotFound):
        _do(sm, record_epoch, "0" * 32, base)
    with pytest.raises(ValueError, match="epoch"):
        _do(sm, record_epoch, run_id, {"loss": 1.0})


def test_progress_bumps_heartbeat_only_while_running(sm: sessionmaker[Session]) -> None:
    run_id = _new_run(sm)
    progress = {"epoch": 1, "batch": 5, "batches": 10, "fraction": 0.5, "eta_seconds": 12.5}
    assert _do(sm, update_progress, run_id, progress) is False  # still queued
    _do(sm, claim_run, run_id, worker_host="w")
    _age_heartbeat(sm, run_id, 600)
    assert _do(sm, update_progress, run_id, progress) is True
    run = _run(sm, run_id)
    assert run.progress == progress
    assert run.heartbeat_at is not None and utcnow() - run.heartbeat_at < timedelta(minutes=1)
    assert _do(sm, heartbeat, run_id) is True
    _do(sm, finish_run, run_id, status="succeeded")
    assert _do(sm, update_progress, run_id, progress) is False
    assert _do(sm, heartbeat, run_id) is False


def test_cancel_queued_run_is_immediate(sm: sessionmaker[Session]) -> None:
    run_id = _new_run(sm)
    run = _do(sm, request_cancel, run_id)
    assert run.status is RunStatus.CANCELLED and run.finished_at is not None
    assert _do(sm, is_cancel_requested, run_id) is True
    assert _do(sm, claim_run, run_id, worker_host="w") is None  # its task arrives later
    assert _do(sm, request_cancel, run_id).status is RunStatus.CANCELLED  # idempotent


def test_cancel_running_run_asks_the_worker(sm: sessionmaker[Session]) -> None:
    run_id = _new_run(sm)
    _do(sm, claim_run, run_id, worker_host="w")
    assert _do(sm, is_cancel_requested, run_id) is False
    run = _do(sm, request_cancel, run_id)
    assert run.status is RunStatus.RUNNING and run.cancel_requested
    assert _do(sm, is_cancel_requested, run_id) is True
    assert _do(sm, finish_run, run_id, status=RunStatus.CANCELLED) is True
    assert _run(sm, run_id).status is RunStatus.CANCELLED


def test_cancel_finished_or_missing_run(sm: sessionmaker[Session]) -> None:
    run_id = _new_run(sm)
    _do(sm, claim_run, run_id, worker_host="w")
    _do(sm, finish_run, run_id, status="succeeded")
    with pytest.raises(RecordConflict, match="succeeded"):
        _do(sm, request_cancel, run_id)
    with pytest.raises(RecordNotFound):
        _do(sm, request_cancel, "0" * 32)
    with pytest.raises(RecordNotFound):
        _do(sm, is_cancel_requested, "0" * 32)


def test_finish_only_from_running(sm: sessionmaker[Session]) -> None:
    run_id = _new_run(sm)
    assert _do(sm, finish_run, run_id, status="succeeded") is False  # queued
    assert _run(sm, run_id).status is RunStatus.QUEUED
    _do(sm, claim_run, run_id, worker_host="w")
    metrics = {"accuracy": 0.91, "loss": 0.3, "confusion_matrix": [[1, 0], [0, 1]]}
    assert _do(sm, finish_run, run_id, status="succeeded", metrics=metrics) is True
    assert _do(sm, finish_run, run_id, status="failed", error="late") is False  # 2nd delivery
    run = _run(sm, run_id)
    assert (run.status, run.error, run.metrics) == (RunStatus.SUCCEEDED, None, metrics)
    assert run.finished_at is not None
    with pytest.raises(ValueError, match="Cannot finish"):
        _do(sm, finish_run, run_id, status="running")
    with pytest.raises(RecordNotFound):
        _do(sm, finish_run, "0" * 32, status="failed")


def test_delete_refused_while_running_and_cascades(
    sm: sessionmaker[Session], tmp_path: Path
) -> None:
    run_id = _new_run(sm)
    other = _new_run(sm)
    _do(sm, claim_run, run_id, worker_host="w")
    _do(sm, record_epoch, run_id, {"epoch": 1, "loss": 1.0})
    _do(sm, record_epoch, other, {"epoch": 1, "loss": 1.0})
    (tmp_path / "model.keras").write_bytes(b"weights")
    _do(sm, add_artifact, run_id, kind="model", uri="runs/x/model.keras")
    _do(sm, create_evaluation, run_id=run_id, split="test")
    with pytest.raises(RecordConflict, match="running"):
        _do(sm, delete_run, run_id)
    assert _run(sm, run_id).status is RunStatus.RUNNING
    _do(sm, finish_run, run_id, status="failed", error="boom")
    with session_scope(sm) as s:
        loaded = get_run(s, run_id)
        assert len(loaded.epochs) == 1
        delete_run(s, run_id)
        assert inspect(loaded).detached
    with sm() as s:
        for model in (EpochMetric, Evaluation, Artifact):
            assert s.scalars(select(model).where(model.run_id == run_id)).all() == []
        assert len(list_epochs(s, other)) == 1  # another run's rows are untouched
    with pytest.raises(RecordNotFound):
        _do(sm, delete_run, run_id)
    _do(sm, delete_run, other)  # a queued run can go


def test_list_filters_and_pages(sm: sessionmaker[Session]) -> None:
    ids = []
    for i in range(7):
        arch = "resnet20" if i % 2 == 0 else "resnet50"
        ids.append(_new_run(sm, architecture=arch, dataset="cifar10" if i < 5 else "imagenet"))
    _do(sm, claim_run, ids[0], worker_host="w")
    _do(sm, request_cancel, ids[1])
    with sm() as s:
        rows, total = list_runs(s)
        assert total == 7 and [r.id for r in rows] == ids[::-1]  # newest first
        rows, total = list_runs(s, architecture="resnet20")
        assert total == 4 and {r.id for r in rows} == {ids[0], ids[2], ids[4], ids[6]}
        rows, total = list_runs(s, architecture="resnet20", limit=2, offset=1)
        assert total == 4 and [r.id for r in rows] == [ids[4], ids[2]]
        rows, total = list_runs(s, status="queued", dataset="cifar10")
        assert total == 3 and [r.id for r in rows] == [ids[4], ids[3], ids[2]]
        rows, total = list_runs(s, status=RunStatus.RUNNING)
        assert total == 1 and rows[0].id == ids[0]
        rows, total = list_runs(s, dataset="imagenet", offset=5)
        assert total == 2 and rows == []
        with pytest.raises(ValueError):
            list_runs(s, status="exploded")


def test_api_key_is_stored_hashed(sm: sessionmaker[Session]) -> None:
    key, secret = _do(sm, create_api_key, "ci", ["read", "train"])
    assert secret.startswith("rsk_") and len(secret) > 40
    with sm() as s:
        row = s.get(ApiKey, key.id)
        assert row is not None
        values = [getattr(row, c.key) for c in inspect(ApiKey).column_attrs]
        assert not any(secret in str(v) for v in values)
        assert row.key_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert row.prefix == secret[:8] and row.scopes == ["read", "train"]
        assert row.has_scope("train") and not row.has_scope("admin")
    found = _do(sm, authenticate, secret)
    assert found is not None and found.id == key.id and found.last_used_at is not None
    assert _do(sm, authenticate, secret + "x") is None
    assert _do(sm, authenticate, "not-a-key") is None
    _do(sm, revoke_api_key, key.id)
    assert _do(sm, authenticate, secret) is None
    with pytest.raises(ValueError, match="Unknown scopes"):
        _do(sm, create_api_key, "bad", ["read", "root"])


def test_stale_running_run_is_requeued_then_given_up(sm: sessionmaker[Session]) -> None:
    run_id = _new_run(sm, max_attempts=2)
    assert _do(sm, claim_run, run_id, worker_host="w1")
    # the worker is alive: a redelivered message must leave the run alone
    assert _do(sm, reclaim_stale_run, run_id, stale_after_s=60) is ReclaimOutcome.NOT_STALE
    with sm() as s:
        assert stale_run_ids(s, stale_after_s=60) == []

    _age_heartbeat(sm, run_id, 120)  # worker 1 crashed
    with sm() as s:
        assert stale_run_ids(s, stale_after_s=60) == [run_id]
    assert _do(sm, reclaim_stale_run, run_id, stale_after_s=60) is ReclaimOutcome.REQUEUED
    assert _run(sm, run_id).status is RunStatus.QUEUED
    assert _do(sm, reclaim_stale_run, run_id, stale_after_s=60) is ReclaimOutcome.NOT_STALE
    assert _do(sm, claim_run, run_id, worker_host="w2")
    run = _run(sm, run_id)
    assert (run.status, run.attempts, run.worker_host) == (RunStatus.RUNNING, 2, "w2")

    _age_heartbeat(sm, run_id, 120)  # worker 2 crashed too: out of attempts
    assert _do(sm, reclaim_stale_run, run_id, stale_after_s=60) is ReclaimOutcome.GAVE_UP
    run = _run(sm, run_id)
    assert run.status is RunStatus.FAILED and run.finished_at is not None
    assert run.error is not None and run.error.startswith("gave up after 2 attempts")
    assert _do(sm, claim_run, run_id, worker_host="w3") is None
    assert _do(sm, reclaim_stale_run, run_id, stale_after_s=60) is ReclaimOutcome.NOT_STALE
    with pytest.raises(RecordNotFound):
        _do(sm, reclaim_stale_run, "0" * 32, stale_after_s=60)


def test_stale_run_with_pending_cancel_is_cancelled(sm: sessionmaker[Session]) -> None:
    run_id = _new_run(sm)
    _do(sm, claim_run, run_id, worker_host="w")
    _do(sm, request_cancel, run_id)
    _age_heartbeat(sm, run_id, 120)
    assert _do(sm, reclaim_stale_run, run_id, stale_after_s=60) is ReclaimOutcome.CANCELLED
    assert _run(sm, run_id).status is RunStatus.CANCELLED


def test_concurrent_reclaims_requeue_once(sm: sessionmaker[Session]) -> None:
    run_id = _new_run(sm)
    _do(sm, claim_run, run_id, worker_host="w")
    _age_heartbeat(sm, run_id, 120)
    barrier = threading.Barrier(2)
    outcomes: list[ReclaimOutcome] = []

    def redelivered() -> None:
        with session_scope(sm) as s:
            barrier.wait(timeout=10)
            outcome = reclaim_stale_run(s, run_id, stale_after_s=60)
            if outcome is ReclaimOutcome.REQUEUED:
                assert claim_run(s, run_id, worker_host="again")
            outcomes.append(outcome)

    threads = [threading.Thread(target=redelivered) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == [ReclaimOutcome.NOT_STALE, ReclaimOutcome.REQUEUED]
    run = _run(sm, run_id)
    assert (run.status, run.attempts, run.worker_host) == (RunStatus.RUNNING, 2, "again")


def test_evaluation_lifecycle(sm: sessionmaker[Session]) -> None:
    run_id = _new_run(sm)
    eval_id = _do(sm, create_evaluation, run_id=run_id, split="test").id
    assert _do(sm, finish_evaluation, eval_id, status="succeeded") is False  # not running
    assert _do(sm, claim_evaluation, eval_id, worker_host="w") == 1  # the attempt held
    assert _do(sm, claim_evaluation, eval_id, worker_host="w") is None
    metrics = {
        "n": 4, "accuracy": 0.75, "precision_macro": 0.7, "recall_macro": 0.65, "f1_macro": 0.6,
        "loss": 0.5, "seconds": 2.0, "images_per_second": 2.0,
        "per_class": [{"class": "cat", "precision": 1.0}], "confusion_matrix": [[1, 1], [0, 2]],
    }  # fmt: skip
    assert _do(sm, finish_evaluation, eval_id, status="succeeded", metrics=metrics) is True
    assert _do(sm, finish_evaluation, eval_id, status="failed", error="x") is False
    with sm() as s:
        ev = get_evaluation(s, eval_id)
        assert ev.metrics == metrics and ev.finished_at is not None
        assert (ev.accuracy, ev.precision_macro, ev.recall_macro) == (0.75, 0.7, 0.65)
        assert (ev.f1_macro, ev.loss, ev.images_per_second) == (0.6, 0.5, 2.0)
    with pytest.raises(RecordNotFound):
        _do(sm, create_evaluation, run_id="0" * 32, split="test")
    with pytest.raises(RecordNotFound):
        _do(sm, claim_evaluation, "0" * 32, worker_host="w")


def test_stale_evaluation_is_requeued_then_given_up_and_fenced(
    sm: sessionmaker[Session],
) -> None:
    eval_id = _do(sm, create_evaluation, run_id=_new_run(sm), split="test", max_attempts=2).id
    reclaim = {"stale_after_s": 60}  # max_attempts is the evaluation's, as for runs
    assert _do(sm, claim_evaluation, eval_id, worker_host="w1") == 1
    assert _do(sm, reclaim_stale_evaluation, eval_id, **reclaim) is ReclaimOutcome.NOT_STALE
    assert _do(sm, evaluation_heartbeat, eval_id, attempt=1) is True

    def age(seconds: float) -> None:
        with session_scope(sm) as s:
            s.execute(
                update(Evaluation)
                .where(Evaluation.id == eval_id)
                .values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
            )

    age(120)  # worker 1 died
    with sm() as s:
        assert stale_evaluation_ids(s, stale_after_s=60) == [eval_id]
    assert _do(sm, reclaim_stale_evaluation, eval_id, **reclaim) is ReclaimOutcome.REQUEUED
    assert _do(sm, reclaim_stale_evaluation, eval_id, **reclaim) is ReclaimOutcome.NOT_STALE
    assert _do(sm, claim_evaluation, eval_id, worker_host="w2") == 2
    # Worker 1 was only stalled: it can neither beat nor finish over attempt 2.
    assert _do(sm, evaluation_heartbeat, eval_id, attempt=1) is False
    assert _do(sm, finish_evaluation, eval_id, status="succeeded", attempt=1) is False
    with sm() as s:
        ev = get_evaluation(s, eval_id)
        assert (ev.status.value, ev.attempts, ev.worker_host) == ("running", 2, "w2")

    age(120)  # worker 2 died too: out of attempts
    assert _do(sm, reclaim_stale_evaluation, eval_id, **reclaim) is ReclaimOutcome.GAVE_UP
    with sm() as s:
        ev = get_evaluation(s, eval_id)
        assert ev.status.value == "failed" and ev.finished_at is not None
        assert ev.error is not None and ev.error.startswith("gave up after 2 attempts")
    assert _do(sm, claim_evaluation, eval_id, worker_host="w3") is None
    with pytest.raises(RecordNotFound):
        _do(sm, reclaim_stale_evaluation, "0" * 32, **reclaim)


def test_artifact_size_hash_and_upsert(sm: sessionmaker[Session], tmp_path: Path) -> None:
    run_id = _new_run(sm)
    path = tmp_path / "model.keras"
    path.write_bytes(b"first")
    art = _do(sm, add_artifact, run_id, kind="model", uri=str(path), path=path)
    assert art.size_bytes == 5 and art.sha256 == hashlib.sha256(b"first").hexdigest()
    path.write_bytes(b"second version")
    again = _do(sm, add_artifact, run_id, kind="model", uri=str(path), path=path)
    assert again.id == art.id and again.size_bytes == 14
    logs = _do(sm, add_artifact, run_id, kind="tensorboard", uri=str(tmp_path), path=tmp_path)
    assert logs.size_bytes is None and logs.sha256 is None
    with sm() as s:
        assert len(get_run(s, run_id).artifacts) == 2
    with pytest.raises(ValueError):
        _do(sm, add_artifact, run_id, kind="weights", uri="x")


def test_a_dataset_name_is_registered_once(sm: sessionmaker[Session]) -> None:
    first = _do(sm, register_dataset, name="pets", kind="folder", location="/d/pets",
                class_names=["cat", "dog"], counts={"train": 10}, num_images=10)  # fmt: skip
    with pytest.raises(RecordConflict, match="already registered"):
        _do(sm, register_dataset, name="pets", kind="folder", location="/d/pets2",
            class_names=["cat", "dog"], num_images=12)  # fmt: skip
    with sm() as s:
        kept = find_dataset(s, "pets")
        assert kept.id == first.id and kept.location == "/d/pets" and kept.num_images == 10
    run_id = _new_run(sm, dataset="pets", dataset_id=first.id)
    assert _run(sm, run_id).dataset_id == first.id


def test_concurrent_registrations_of_one_name_give_one_dataset(sm: sessionmaker[Session]) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def register(i: int) -> None:
        barrier.wait()
        try:
            _do(sm, register_dataset, name="raced", kind="folder", location=f"/d/{i}")
            outcomes.append("registered")
        except RecordConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=register, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 7 + ["registered"]


def test_a_stalled_worker_cannot_write_over_the_next_attempt(sm: sessionmaker[Session]) -> None:
    run_id = _new_run(sm, max_attempts=3)
    assert _do(sm, claim_run, run_id, worker_host="w1")  # attempt 1
    _age_heartbeat(sm, run_id, 120)  # w1 stalls (not dead): its run is taken over
    assert _do(sm, reclaim_stale_run, run_id, stale_after_s=60) is ReclaimOutcome.REQUEUED
    assert _do(sm, claim_run, run_id, worker_host="w2")  # attempt 2
    epoch = {"epoch": 1, "loss": 9.0}
    # w1 wakes up: every write of attempt 1 is refused, so it stops
    assert _do(sm, heartbeat, run_id, attempt=1) is False
    assert _do(sm, update_progress, run_id, {"batch": 3}, attempt=1) is False
    assert _do(sm, record_epoch, run_id, epoch, attempt=1) is False
    assert _do(sm, finish_run, run_id, status=RunStatus.FAILED, error="w1", attempt=1) is False
    with sm() as s:
        assert s.scalar(select(func.count()).select_from(EpochMetric)) == 0
    # w2's writes go through
    assert _do(sm, heartbeat, run_id, attempt=2)
    assert _do(sm, record_epoch, run_id, {"epoch": 1, "loss": 1.0}, attempt=2)
    assert _do(sm, finish_run, run_id, status=RunStatus.SUCCEEDED, attempt=2)
    run = _run(sm, run_id)
    assert (run.status, run.attempts, run.error) == (RunStatus.SUCCEEDED, 2, None)
