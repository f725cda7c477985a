"""``workers`` in POST /v1/runs (issue 13): one message per slot, the plan recorded and shown,
the slots shown, and 422s for nonsense and for more workers than the service allows."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from jobs.queue import TRAIN_TASK
from jobs.records import session_scope
from jobs.records.slots import claim_slot
from jobs.settings import Settings
from tests.service.test_service_runs import (
    SYNTHETIC,
    error_fields,
    queued_messages,
    submit,
    task_kwargs,
)


def test_a_run_across_two_workers_is_sent_once_per_slot_with_its_plan(
    client: TestClient, admin: dict[str, str], settings: Settings, db: sessionmaker[Session]
) -> None:
    run = submit(client, admin, batch_size=32, workers=2)
    assert run["workers"] == 2 and run["slots"] == []
    assert run["distribution"] == {
        "workers": [],
        "num_replicas": 2,
        "scaling": "fixed",
        "global_batch_size": 32,
        "per_replica_batch_size": 16,
        "learning_rate_scale": 1.0,
        "data_sharding": "DATA",
        "sync_batch_norm": True,
    }
    sent = [task_kwargs(m) for m in queued_messages(settings)]
    assert sent == [(TRAIN_TASK, {"run_id": run["id"]})] * 2

    with session_scope(db) as session:  # a worker takes slot 0
        claim_slot(session, run["id"], worker_host="10.0.0.7", port=7070)
    shown = client.get(f"/v1/runs/{run['id']}", headers=admin).json()
    assert [(s["slot"], s["worker_host"], s["port"]) for s in shown["slots"]] == [
        (0, "10.0.0.7", 7070),
        (1, None, None),
    ]
    assert shown["slots"][0]["heartbeat_at"] is not None and shown["slots"][1]["claimed_at"] is None


def test_one_worker_is_the_default_and_has_no_plan(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    run = submit(client, admin)
    assert run["workers"] == 1 and run["distribution"] is None and run["slots"] == []
    assert len(queued_messages(settings)) == 1


@pytest.mark.parametrize("workers", [0, -1, 2.5, "2", True, None, [2]])
def test_nonsense_workers_is_a_422_on_the_field(
    client: TestClient, admin: dict[str, str], workers: Any
) -> None:
    body = {"architecture": "resnet20", "data": SYNTHETIC, "workers": workers}
    response = client.post("/v1/runs", json=body, headers=admin)
    assert response.status_code == 422, response.text
    if workers is True:  # booleans are refused before the fields are read (service/schemas/strict)
        assert "workers" in response.json()["error"]["details"][0]["message"]
    else:
        assert error_fields(response) == ["body.workers"]


def test_more_workers_than_allowed_is_a_422_saying_the_limit(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    too_many = settings.max_workers_per_run + 1
    body = {"architecture": "resnet20", "data": SYNTHETIC, "workers": too_many, "batch_size": 72}
    response = client.post("/v1/runs", json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert error_fields(response) == ["body.workers"]
    assert f"at most {settings.max_workers_per_run} worker" in response.text
    assert "RESNET_MAX_WORKERS_PER_RUN" in response.text
    assert queued_messages(settings) == []


def test_a_batch_the_workers_cannot_share_is_a_422(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    body = {"architecture": "resnet20", "data": SYNTHETIC, "workers": 3, "batch_size": 32}
    response = client.post("/v1/runs", json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert error_fields(response) == ["body.workers"]
    assert "does not split evenly over 3 replicas" in response.text
    assert queued_messages(settings) == []
