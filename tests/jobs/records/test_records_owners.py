"""Owners, deleted model versions and runs that back them, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from jobs.records import RecordConflict, RecordNotFound, RunStatus
from jobs.records import repository as records
from jobs.records.owners import describe_owner, may_change


def _succeeded(session: Session, key_id: str | None) -> str:
    run = records.create_run(
        session, architecture="resnet20", dataset="cifar10", config={}, api_key_id=key_id
    )
    records.claim_run(session, run.id, worker_host="w")
    records.finish_run(session, run.id, status=RunStatus.SUCCEEDED)
    records.add_artifact(session, run.id, kind="model", uri=f"/runs/{run.id}/model.keras")
    session.commit()
    return run.id


def test_may_change_is_the_owner_or_an_admin(session: Session) -> None:
    alice, _ = records.create_api_key(session, "alice", ["train"])
    bob, _ = records.create_api_key(session, "bob", ["train", "read"])
    admin, _ = records.create_api_key(session, "root", ["admin"])
    run = records.get_run(session, _succeeded(session, alice.id))
    orphan = records.get_run(session, _succeeded(session, None))
    assert may_change(alice, run) and may_change(admin, run)
    assert not may_change(bob, run)
    assert not may_change(alice, orphan) and may_change(admin, orphan)
    assert describe_owner(session, run) == f"key 'alice' ({alice.prefix}…)"
    assert describe_owner(session, orphan).startswith("no key")


def test_versions_record_their_owner_and_are_deleted_as_tombstones(session: Session) -> None:
    alice, _ = records.create_api_key(session, "alice", ["train"])
    run_id = _succeeded(session, alice.id)
    first = records.promote_run(session, run_id, "m", api_key_id=alice.id)
    records.promote_run(session, run_id, "m", api_key_id=alice.id)
    session.commit()
    assert first.api_key_id == alice.id

    with pytest.raises(RecordConflict, match="newest version"):
        records.delete_model_version(session, "m", 2)
    records.delete_model_version(session, "m", 1)
    session.commit()
    assert [v.version for v in records.list_model_versions(session, "m")] == [2]
    with pytest.raises(RecordNotFound):
        records.get_model_version(session, "m", 1)
    records.delete_model_version(session, "m", 2)  # the last one: the model goes
    session.commit()
    assert records.list_models(session) == []
    with pytest.raises(RecordNotFound):
        records.get_model_version(session, "m")
    assert records.promote_run(session, run_id, "m").version == 3  # never reused


def test_a_run_backing_live_versions_is_not_deleted(session: Session) -> None:
    run_id = _succeeded(session, None)
    records.promote_run(session, run_id, "a")
    records.promote_run(session, run_id, "b")
    session.commit()
    with pytest.raises(RecordConflict, match="backs model versions a version 1, b version 1"):
        records.delete_run(session, run_id)
    session.rollback()
    assert records.get_run(session, run_id).id == run_id
    records.delete_model_version(session, "a", 1)
    records.delete_model_version(session, "b", 1)
    records.delete_run(session, run_id)
    session.commit()
    with pytest.raises(RecordNotFound):
        records.get_run(session, run_id)
    assert records.promote_run(session, _succeeded(session, None), "a").version == 2
