"""Submitting jobs: recorded in one transaction, sent after the commit; when the broker refuses
part-way, the jobs already sent stay queued, the rest are failed, and the answer is 503."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from jobs.records import RunStatus, session_scope
from jobs.records import repository as records
from service.queue import EnqueueError

SYNTHETIC = "synthetic:64:8x8x3:2"


class RefusingQueue:
    """Takes the first ``accept`` messages, then refuses every one."""

    def __init__(self, accept: int) -> None:
        self.accept = accept
        self.sent: list[str] = []

    def _send(self, job_id: str) -> None:
        if len(self.sent) >= self.accept:
            raise EnqueueError("ConnectionError: the broker went away")
        self.sent.append(job_id)

    def enqueue_run(self, run_id: str) -> None:
        self._send(run_id)

    def enqueue_evaluation(self, evaluation_id: str) -> None:
        self._send(evaluation_id)


def _refuse_after(client: TestClient, accept: int) -> RefusingQueue:
    queue = RefusingQueue(accept)
    client.app.state.queue = queue  # type: ignore[attr-defined]
    return queue


def _statuses(client: TestClient, headers: dict[str, str]) -> dict[str, tuple[str, Any]]:
    runs = client.get("/v1/runs", headers=headers).json()["items"]
    return {r["id"]: (r["status"], r["error"]) for r in runs}


def test_an_experiment_the_broker_stops_taking_part_way(
    client: TestClient, admin: dict[str, str]
) -> None:
    queue = _refuse_after(client, accept=2)
    body = {
        "name": "part-way",
        "architectures": ["resnet20", "resnet32"],
        "seeds": [0, 1],
        "base": {"data": SYNTHETIC, "epochs": 1},
    }
    response = client.post("/v1/experiments", json=body, headers=admin)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "30"
    error = response.json()["error"]
    assert error["code"] == "queue_unavailable"
    assert "(2 of 4 runs)" in error["message"]
    assert error["details"][0]["message"].startswith("could not enqueue: ConnectionError")
    statuses = _statuses(client, admin)
    assert {statuses[run_id][0] for run_id in queue.sent} == {"queued"}
    unsent = [s for run_id, s in statuses.items() if run_id not in queue.sent]
    assert len(unsent) == 2
    for status, message in unsent:
        assert status == "failed" and message.startswith("could not enqueue: ")


def test_a_run_the_broker_refuses(client: TestClient, admin: dict[str, str]) -> None:
    _refuse_after(client, accept=0)
    body = {"architecture": "resnet20", "data": SYNTHETIC}
    response = client.post("/v1/runs", json=body, headers=admin)
    assert response.status_code == 503
    [(run_id, (status, error))] = _statuses(client, admin).items()
    assert response.json()["error"]["message"].startswith(f"Run {run_id} was recorded")
    assert status == "failed" and error.startswith("could not enqueue: ")


def test_an_evaluation_the_broker_refuses(
    client: TestClient, admin: dict[str, str], db: sessionmaker[Session]
) -> None:
    body = {"architecture": "resnet20", "data": SYNTHETIC}
    run_id = client.post("/v1/runs", json=body, headers=admin).json()["id"]
    with session_scope(db) as session:
        records.claim_run(session, run_id, worker_host="w")
        records.finish_run(session, run_id, status=RunStatus.SUCCEEDED)
    _refuse_after(client, accept=0)
    response = client.post(f"/v1/runs/{run_id}/evaluations", json={}, headers=admin)
    assert response.status_code == 503
    [evaluation] = client.get(f"/v1/runs/{run_id}/evaluations", headers=admin).json()["items"]
    assert response.json()["error"]["message"].startswith(f"Evaluation {evaluation['id']}")
    assert evaluation["status"] == "failed"
    assert evaluation["error"].startswith("could not enqueue: ")
