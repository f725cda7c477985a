"""Enqueueing on a real Redis: the message lands in the ``training`` list; a dead broker is 503."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import redis
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from jobs.queue import EVALUATE_TASK, TRAIN_TASK, TRAINING_QUEUE
from jobs.records import RunStatus, make_engine, make_sessionmaker, session_scope
from jobs.records import repository as records
from jobs.settings import Settings
from service.app import create_app
from tests.fixtures.servers import free_port

RUN = {"architecture": "resnet20", "data": "synthetic:64:8x8x3:2", "epochs": 1}


def messages(url: str) -> list[tuple[str, dict[str, Any]]]:
    """(task name, kwargs) of each message waiting in the training queue, oldest first."""
    found = []
    for raw in reversed(redis.Redis.from_url(url).lrange(TRAINING_QUEUE, 0, -1)):
        message = json.loads(raw)
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        assert args == []
        found.append((message["headers"]["task"], kwargs))
    return found


def key_for(settings: Settings) -> dict[str, str]:
    engine = make_engine(settings.db_url)
    with session_scope(make_sessionmaker(engine)) as session:
        _, secret = records.create_api_key(session, "t", ["admin"])
    engine.dispose()
    return {"Authorization": f"Bearer {secret}"}


def test_a_run_and_an_evaluation_arrive_in_the_redis_training_list(
    redis_settings: Settings,
) -> None:
    headers = key_for(redis_settings)
    with TestClient(create_app(redis_settings)) as client:
        assert client.get("/readyz").status_code == 200
        run = client.post("/v1/runs", json=RUN, headers=headers)
        assert run.status_code == 202, run.text
        run_id = run.json()["id"]
        assert messages(str(redis_settings.broker_url)) == [(TRAIN_TASK, {"run_id": run_id})]

        engine = make_engine(redis_settings.db_url)
        with session_scope(make_sessionmaker(engine)) as session:
            records.claim_run(session, run_id, worker_host="w")
            records.finish_run(session, run_id, status=RunStatus.SUCCEEDED)
        engine.dispose()
        evaluation = client.post(f"/v1/runs/{run_id}/evaluations", json={}, headers=headers)
        assert evaluation.status_code == 202, evaluation.text
        assert messages(str(redis_settings.broker_url))[-1] == (
            EVALUATE_TASK,
            {"evaluation_id": evaluation.json()["id"]},
        )


def test_with_the_broker_down_the_run_is_kept_as_failed_and_the_answer_is_503(
    tmp_path: Path, settings: Settings, db: sessionmaker[Session], admin: dict[str, str]
) -> None:
    dead = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(dead)) as client:
        response = client.post("/v1/runs", json=RUN, headers=admin)
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"]
        error = response.json()["error"]
        assert error["code"] == "queue_unavailable"
        assert "could not enqueue" in error["details"][0]["message"]

        [run] = client.get("/v1/runs", headers=admin).json()["items"]
        assert run["id"] in error["message"]
        assert run["status"] == "failed"
        assert run["error"].startswith("could not enqueue: ")
        assert run["finished_at"] is not None

        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert [d["field"] for d in ready.json()["error"]["details"]] == ["broker"]
