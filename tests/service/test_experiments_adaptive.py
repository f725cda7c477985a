"""/v1/experiments with early_stopping: the door's checks, the first trials sent and the rest
paused, each cell's rungs and stop reason, and a cancel that ends the paused ones too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from jobs.records import session_scope
from jobs.records import trials as records
from jobs.records.repository import claim_run, record_epoch
from jobs.settings import Settings
from tests.service.test_reports_experiments import SYNTHETIC, queued_run_ids

BASE = {"data": SYNTHETIC, "epochs": 9, "validation": 0.25}


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "asha",
        "architectures": ["resnet8"],
        "base": BASE,
        "random": {"trials": 5, "space": {"schedule.base_lr": {"low": 0.01, "high": 0.3}}},
        "early_stopping": {"rule": "asha", "max_concurrent": 2},
    }
    body.update(changes)
    return body


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"early_stopping": {"rule": "asha", "reduction_factor": 1}},
         "body.early_stopping.reduction_factor", "at least 2"),
        ({"early_stopping": {"rule": "asha", "grace_period": 9}},
         "body.early_stopping.grace_period", "before the budget's end"),
        ({"early_stopping": {"rule": "asha", "rungs": [1, 3, 9]}},
         "body.early_stopping.rungs", "before the budget's end"),
        ({"early_stopping": {"rule": "asha", "rungs": [3, 2]}},
         "body.early_stopping.rungs", "strictly increasing"),
        ({"early_stopping": {"rule": "asha", "grace_period": 1, "rungs": [2, 4]}},
         "body.early_stopping.rungs", "grace period"),
        ({"early_stopping": {"rule": "median", "reduction_factor": 3}},
         "body.early_stopping.reduction_factor", "not a setting of the 'median' rule"),
        ({"early_stopping": {"rule": "asha", "min_trials": 3}},
         "body.early_stopping.min_trials", "not a setting of the 'asha' rule"),
        ({"early_stopping": {"rule": "median", "grace_period": 9}},
         "body.early_stopping.grace_period", "below the budget"),
        ({"early_stopping": {"rule": "hyperband"}}, "body.early_stopping.rule", "asha"),
        ({"early_stopping": {"rule": "asha", "max_concurrent": 0}},
         "body.early_stopping.max_concurrent", "greater than or equal to 1"),
        ({"base": {"data": SYNTHETIC, "epochs": 9}}, "body.base.validation", "validation split"),
        ({"random": {"trials": 2, "space": {"epochs": {"choices": [3, 9]}}}},
         "body.random.space.epochs", "give 'epochs' once"),
    ],
)  # fmt: skip
def test_bad_rules_are_422_naming_the_field(
    changes: dict[str, Any],
    field: str,
    words: str,
    client: TestClient,
    make_key: Callable[..., dict[str, str]],
    settings: Settings,
) -> None:
    response = client.post("/v1/experiments", json=_body(**changes), headers=make_key("train"))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"][0]["field"] == field, error
    assert words in error["message"], error["message"]
    assert queued_run_ids(settings) == []  # nothing recorded, nothing sent
    assert client.get("/v1/experiments", headers=make_key("read")).json()["total"] == 0


def test_an_asha_search_sends_its_first_trials_and_shows_their_rungs(
    client: TestClient,
    make_key: Callable[..., dict[str, str]],
    settings: Settings,
    db: sessionmaker[Session],
) -> None:
    trainer, reader = make_key("train"), make_key("read")
    response = client.post("/v1/experiments", json=_body(), headers=trainer)
    assert response.status_code == 202, response.text
    experiment = response.json()
    rule = experiment["spec"]["early_stopping"]
    assert rule["rungs"] == [1, 3] and rule["reduction_factor"] == 3  # 1 × 3**k below 9
    ids = [c["run_id"] for c in experiment["cells"]]
    # max_concurrent: the first two are sent, the others wait (the embedded broker's folder
    # does not keep the order two messages were sent in within one instant)
    assert sorted(queued_run_ids(settings)) == sorted(ids[:2])
    assert [c["status"] for c in experiment["cells"]] == ["queued"] * 2 + ["paused"] * 3
    assert experiment["status"] == "running"

    # A worker's first trial reaches rung 0 alone: it waits there (paused by its worker).
    with session_scope(db) as s:
        claim_run(s, ids[0], worker_host="w")
        record_epoch(s, ids[0], {"epoch": 1, "val_accuracy": 0.5})
        outcome = records.report_epoch(s, ids[0], epoch=1, values={"val_accuracy": 0.5})
    assert outcome.next is records.Next.PAUSE
    cell = client.get(f"/v1/experiments/{experiment['id']}", headers=reader).json()["cells"][0]
    assert cell["rung"] == 0 and not cell["stopped_early"]
    assert cell["rungs"][0]["decision"] == "pending" and cell["rungs"][0]["value"] == 0.5
    assert "waiting for 4 more trial(s)" in cell["rungs"][0]["reason"]

    cancelled = client.post(f"/v1/experiments/{experiment['id']}/cancel", headers=trainer)
    assert cancelled.status_code == 202
    statuses = [c["status"] for c in cancelled.json()["cells"]]
    assert statuses == ["running", "cancelled", "cancelled", "cancelled", "cancelled"]


def test_a_paused_run_can_be_cancelled_by_its_owner(
    client: TestClient, make_key: Callable[..., dict[str, str]]
) -> None:
    trainer = make_key("train")
    experiment = client.post("/v1/experiments", json=_body(), headers=trainer).json()
    paused = experiment["cells"][-1]["run_id"]
    response = client.post(f"/v1/runs/{paused}/cancel", headers=trainer)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "cancelled"
