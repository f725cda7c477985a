"""The rendezvous of a multi-worker run (jobs.records.slots), on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from jobs.records import RecordNotFound, session_scope
from jobs.records.lifecycle import RUN_JOBS
from jobs.records.models import RunSlot, utcnow
from jobs.records.runs import create_run, delete_run, request_cancel
from jobs.records.slots import (
    SlotClaim,
    beat_slot,
    claim_slot,
    read_cluster,
    release_slots,
    release_stale_slots,
)

CONFIG = {"architecture": "resnet20", "data": "cifar10", "epochs": 3}


def new_run(sm: sessionmaker[Session], workers: int) -> str:
    with session_scope(sm) as s:
        return create_run(
            s, architecture="resnet20", dataset="cifar10", config=CONFIG, workers=workers
        ).id


def claim(sm: sessionmaker[Session], run_id: str, host: str, port: int) -> SlotClaim | None:
    with session_scope(sm) as s:
        return claim_slot(s, run_id, worker_host=host, port=port)


def cluster(sm: sessionmaker[Session], run_id: str) -> tuple[str, ...] | None:
    with session_scope(sm) as s:
        return read_cluster(s, run_id)


def age_heartbeat(sm: sessionmaker[Session], run_id: str, slot: int, seconds: float) -> None:
    with session_scope(sm) as s:
        s.execute(
            update(RunSlot)
            .where(RunSlot.run_id == run_id, RunSlot.slot == slot)
            .values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )


def test_a_run_records_its_workers_and_one_worker_is_the_default(sm):
    with session_scope(sm) as s:
        one = create_run(s, architecture="resnet20", dataset="cifar10", config=CONFIG)
        assert one.workers == 1
        with pytest.raises(ValueError, match="workers must be at least 1"):
            create_run(s, architecture="resnet20", dataset="cifar10", config=CONFIG, workers=0)


def test_workers_claim_slots_in_order_and_read_the_cluster_once_all_are_claimed(sm):
    run_id = new_run(sm, 3)
    assert cluster(sm, run_id) is None  # no slot claimed yet
    first = claim(sm, run_id, "10.0.0.1", 7001)
    assert first == SlotClaim(run_id=run_id, slot=0, attempt=1) and first.chief
    assert cluster(sm, run_id) is None
    second = claim(sm, run_id, "10.0.0.2", 7002)
    assert second is not None and second.slot == 1 and not second.chief
    assert cluster(sm, run_id) is None  # one slot still free
    third = claim(sm, run_id, "::1", 7003)
    assert third is not None and third.slot == 2
    assert cluster(sm, run_id) == ("10.0.0.1:7001", "10.0.0.2:7002", "[::1]:7003")
    assert claim(sm, run_id, "10.0.0.4", 7004) is None  # all taken


def test_a_run_that_does_not_wait_for_workers_gives_no_slot(sm):
    running = new_run(sm, 2)
    with session_scope(sm) as s:
        assert RUN_JOBS.claim(s, running, worker_host="h") == 1
    assert claim(sm, running, "10.0.0.1", 7001) is None
    cancelled = new_run(sm, 2)
    with session_scope(sm) as s:
        request_cancel(s, cancelled)
    assert claim(sm, cancelled, "10.0.0.1", 7001) is None


def test_bad_claims_are_refused(sm):
    with pytest.raises(RecordNotFound):
        claim(sm, "nosuchrun", "10.0.0.1", 7001)
    run_id = new_run(sm, 2)
    for port in (0, 65536):
        with pytest.raises(ValueError, match="port"):
            claim(sm, run_id, "10.0.0.1", port)


def test_a_stale_slot_is_released_and_its_old_claim_cannot_beat(sm):
    run_id = new_run(sm, 2)
    chief = claim(sm, run_id, "10.0.0.1", 7001)
    other = claim(sm, run_id, "10.0.0.2", 7002)
    assert chief is not None and other is not None
    age_heartbeat(sm, run_id, 1, seconds=120)
    with session_scope(sm) as s:
        assert release_stale_slots(s, stale_after_s=300) == []  # not old enough
        assert release_stale_slots(s, stale_after_s=60) == [other]
    assert cluster(sm, run_id) is None  # the gang is incomplete again
    with session_scope(sm) as s:
        assert beat_slot(s, chief)
        assert not beat_slot(s, other)  # released: that worker must stop
    again = claim(sm, run_id, "10.0.0.3", 7003)
    assert again == SlotClaim(run_id=run_id, slot=1, attempt=2)
    with session_scope(sm) as s:
        assert not beat_slot(s, other)  # the slot is the new claim's now
        assert beat_slot(s, again)
    assert cluster(sm, run_id) == ("10.0.0.1:7001", "10.0.0.3:7003")


def test_a_beat_keeps_a_slot_and_release_is_per_run(sm):
    run_id, elsewhere = new_run(sm, 2), new_run(sm, 2)
    mine = claim(sm, run_id, "10.0.0.1", 7001)
    theirs = claim(sm, elsewhere, "10.0.0.9", 7009)
    assert mine is not None and theirs is not None
    age_heartbeat(sm, run_id, 0, seconds=120)
    age_heartbeat(sm, elsewhere, 0, seconds=120)
    with session_scope(sm) as s:
        assert beat_slot(s, mine)  # alive after all
        assert release_stale_slots(s, stale_after_s=60, run_id=run_id) == []
        assert release_stale_slots(s, stale_after_s=60) == [theirs]


def test_release_slots_frees_the_whole_gang(sm):
    run_id = new_run(sm, 2)
    claims = [claim(sm, run_id, "10.0.0.1", 7001), claim(sm, run_id, "10.0.0.2", 7002)]
    assert cluster(sm, run_id) is not None
    with session_scope(sm) as s:
        assert release_slots(s, run_id) == 2
        assert release_slots(s, run_id) == 0  # nothing left to free
        assert not any(beat_slot(s, c) for c in claims if c is not None)
    assert cluster(sm, run_id) is None
    again = [claim(sm, run_id, "10.0.0.3", 7003), claim(sm, run_id, "10.0.0.4", 7004)]
    assert [(c.slot, c.attempt) for c in again if c is not None] == [(0, 2), (1, 2)]


def test_deleting_a_run_deletes_its_slots(sm):
    run_id = new_run(sm, 2)
    claim(sm, run_id, "10.0.0.1", 7001)
    with session_scope(sm) as s:
        request_cancel(s, run_id)
        delete_run(s, run_id)
    with session_scope(sm) as s:
        assert s.scalars(select(RunSlot).where(RunSlot.run_id == run_id)).all() == []


def race_for_slots(sm: sessionmaker[Session], run_id: str, racers: int) -> list[SlotClaim | None]:
    """``racers`` threads, each with its own session, claim a slot of the run at once."""
    start = threading.Barrier(racers)
    results: list[SlotClaim | None] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def race(port: int) -> None:
        try:
            start.wait()
            got = claim(sm, run_id, "10.0.0.1", port)
            with lock:
                results.append(got)
        except BaseException as exc:  # reported by the test, with the thread's error
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(7000 + i,)) for i in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return results


@pytest.mark.parametrize("workers", [2, 3])
def test_racing_workers_never_share_a_slot(sm, workers):
    """One more worker than slots, all claiming at the same moment, five times over: every
    slot goes to exactly one of them and the extra one gets none."""
    for _ in range(5):
        run_id = new_run(sm, workers)
        results = race_for_slots(sm, run_id, workers + 1)
        slots = sorted(c.slot for c in results if c is not None)
        assert slots == list(range(workers)) and results.count(None) == 1
        addresses = cluster(sm, run_id)
        assert addresses is not None and len(set(addresses)) == workers
