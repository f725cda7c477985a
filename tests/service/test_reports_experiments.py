"""/v1/experiments: grids and random searches become queued runs; status, aggregate, cancel."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from jobs.queue import TRAIN_TASK
from jobs.records import RunStatus, session_scope
from jobs.records import repository as records
from jobs.settings import Settings
from service.app import create_app
from tests.fixtures.servers import free_port

SYNTHETIC = "synthetic:64:8x8x3:2"
PAPER_CIFAR = [f"resnet{d}" for d in (20, 32, 44, 56, 110)]


def queued_run_ids(settings: Settings) -> list[str]:
    """The run ids of the train tasks waiting in the embedded broker's folder, in no
    particular order (messages sent in the same instant sort by their random names)."""
    ids = []
    for path in sorted((settings.broker_folder / "out").glob("*.msg")):
        message = json.loads(path.read_text())
        assert message["headers"]["task"] == TRAIN_TASK
        ids.append(json.loads(base64.b64decode(message["body"]))[1]["run_id"])
    return ids


def post(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    return client.post("/v1/experiments", json=body, headers=headers)


def finish(db: sessionmaker[Session], run_id: str, accuracy: float, seconds: float) -> None:
    with session_scope(db) as session:
        records.claim_run(session, run_id, worker_host="w")
        records.finish_run(
            session,
            run_id,
            status="succeeded",
            metrics={"accuracy": accuracy, "f1_macro": accuracy, "train_seconds": seconds},
        )


def test_the_papers_cifar_set_with_plain_twins_and_seeds(
    client: TestClient, make_key: Callable[..., dict[str, str]], settings: Settings
) -> None:
    trainer = make_key("train")
    response = post(
        client,
        trainer,
        name="Table 6 and Figure 6",
        architectures=PAPER_CIFAR,
        plain_twins=True,
        seeds=[0, 1],
        base={"data": SYNTHETIC, "preset": "cifar-paper", "epochs": 2, "batch_size": 16},
    )
    assert response.status_code == 202, response.text
    experiment = response.json()
    assert response.headers["location"] == f"/v1/experiments/{experiment['id']}"
    assert experiment["kind"] == "grid" and experiment["status"] == "queued"
    assert experiment["counts"] == {"queued": 20}
    archs = [c["architecture"] for c in experiment["cells"]]
    assert archs[:4] == ["resnet20", "resnet20", "plain20", "plain20"]
    assert sorted(set(archs)) == sorted(
        PAPER_CIFAR + [a.replace("resnet", "plain") for a in PAPER_CIFAR]
    )
    run_ids = [c["run_id"] for c in experiment["cells"]]
    assert sorted(queued_run_ids(settings)) == sorted(run_ids)  # every run enqueued

    reader = make_key("read")
    run = client.get(f"/v1/runs/{run_ids[1]}", headers=reader).json()
    assert run["status"] == "queued" and run["architecture"] == "resnet20"
    assert run["config"]["seed"] == 1 and run["config"]["epochs"] == 2
    assert run["config"]["schedule"]["boundaries"] == [32000, 48000]  # the preset's
    r110 = client.get(f"/v1/runs/{run_ids[16]}", headers=reader).json()
    assert r110["architecture"] == "resnet110"
    assert r110["config"]["schedule"]["warmup_steps"] == 400  # the paper's ResNet-110 warm-up


def test_a_learning_rate_by_weight_decay_sweep_and_its_aggregate(
    client: TestClient,
    make_key: Callable[..., dict[str, str]],
    db: sessionmaker[Session],
) -> None:
    owner = make_key("train")  # a train key cancels only its own experiments
    response = post(
        client,
        owner,
        name="lr x wd",
        architectures=["resnet20"],
        seeds=[0, 1, 2],
        base={"data": SYNTHETIC, "epochs": 1},
        grid={"schedule.base_lr": [0.1, 0.05], "optimizer.weight_decay": [1e-4, 5e-4]},
    )
    assert response.status_code == 202, response.text
    experiment = response.json()
    cells = experiment["cells"]
    assert len(cells) == 12
    reader = make_key("read")
    config = client.get(f"/v1/runs/{cells[11]['run_id']}", headers=reader).json()["config"]
    assert config["schedule"]["base_lr"] == 0.05 and config["optimizer"]["weight_decay"] == 5e-4
    assert config["optimizer"]["momentum"] == 0.9  # merged into the defaults

    # the first grid point's three seeds finish; another point is running
    for cell, acc, secs in zip(cells[:3], (0.80, 0.82, 0.84), (10.0, 20.0, 30.0), strict=True):
        finish(db, cell["run_id"], acc, secs)
    with session_scope(db) as session:
        records.claim_run(session, cells[3]["run_id"], worker_host="w")
    data = client.get(f"/v1/experiments/{experiment['id']}", headers=reader).json()
    assert data["status"] == "running"
    assert data["counts"] == {"succeeded": 3, "running": 1, "queued": 8}
    first = data["aggregate"][0]
    assert first["params"] == {"schedule.base_lr": 0.1, "optimizer.weight_decay": 1e-4}
    assert first["succeeded"] == 3 and first["runs"] == 3
    assert first["accuracy"] == pytest.approx(82.0)
    assert first["accuracy_std"] == pytest.approx(2.0)
    assert first["training_time"] == pytest.approx(20.0)
    assert first["training_time_std"] == pytest.approx(10.0)
    assert data["cells"][0]["accuracy"] == pytest.approx(80.0)
    assert data["cells"][0]["status"] == "succeeded"

    listed = client.get("/v1/experiments", headers=reader).json()
    assert listed["total"] == 1 and listed["items"][0]["runs"] == 12
    assert listed["items"][0]["status"] == "running"

    # cancel the rest: finished runs keep their results, queued ones stop, the running one is asked
    response = client.post(f"/v1/experiments/{experiment['id']}/cancel", headers=owner)
    assert response.status_code == 202, response.text
    after = response.json()
    assert after["counts"] == {"succeeded": 3, "running": 1, "cancelled": 8}
    assert after["cancelled_at"] is not None and after["status"] == "running"
    with session_scope(db) as session:
        assert records.get_run(session, cells[3]["run_id"]).cancel_requested
        records.finish_run(session, cells[3]["run_id"], status=RunStatus.CANCELLED)
    final = client.get(f"/v1/experiments/{experiment['id']}", headers=reader).json()
    assert final["status"] == "cancelled"
    again = client.post(f"/v1/experiments/{experiment['id']}/cancel", headers=owner)
    assert again.status_code == 202 and again.json()["counts"] == final["counts"]

    bundle = client.get(f"/v1/experiments/{experiment['id']}/bundle", headers=reader)
    assert bundle.status_code == 200 and bundle.headers["content-type"] == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(bundle.content))
    names = zf.namelist()
    assert "experiment.json" in names and "table1.md" in names
    assert json.loads(zf.read("experiment.json"))["aggregate"][0]["accuracy"] == pytest.approx(82.0)
    assert sum(n.endswith("/config.json") for n in names) == 12
    assert "references.json" in names
    assert "seed_study" in {s["key"] for s in json.loads(zf.read("references.json"))["sources"]}
    assert "Study's accuracy (%)" in zf.read("table1.md").decode()


def test_a_seeded_random_search(
    client: TestClient, make_key: Callable[..., dict[str, str]]
) -> None:
    body = {
        "name": "search",
        "architectures": ["resnet20", "resnet32"],
        "base": {"data": SYNTHETIC, "epochs": 1},
        "random": {
            "trials": 4,
            "seed": 3,
            "space": {
                "schedule.base_lr": {"low": 0.01, "high": 0.3, "log": True},
                "batch_size": {"choices": [16, 32]},
            },
        },
    }
    trainer = make_key("train")
    first = client.post("/v1/experiments", json=body, headers=trainer).json()
    second = client.post("/v1/experiments", json=body, headers=trainer).json()
    assert first["kind"] == "random" and len(first["cells"]) == 8
    params = [c["params"] for c in first["cells"]]
    assert params == [c["params"] for c in second["cells"]]  # same seed, same draws
    assert all(0.01 <= p["schedule.base_lr"] <= 0.3 and p["batch_size"] in (16, 32) for p in params)
    assert params[:4] == params[4:]  # each architecture gets the same trials


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"seeds": list(range(101))}, "body.seeds", "202 cells"),
        ({"grid": {"epochs": list(range(1, 102))}}, "body.grid", "exceed the limit of 200"),
        (
            {"grid": {}, "random": {"trials": 201, "space": {"epochs": {"choices": [1]}}}},
            "body.random.trials",
            "less than or equal to 200",
        ),
        (
            {"grid": {"schedule.base_lr": [0.1, -1.0]}},
            "body.grid.schedule.base_lr",
            "greater than 0",
        ),
        ({"grid": {"optimizer.nope": [1]}}, "body.grid.optimizer.nope", "Extra inputs"),
        ({"grid": {"seed": [1, 2]}}, "body.grid.seed", "own list"),
        ({"grid": {"epochs": []}}, "body.grid.epochs", "at least one"),
        ({"architectures": ["resnet21"]}, "body.architectures", "6n+2"),
        ({"architectures": ["resnet20", "resnet20"]}, "body.architectures", "distinct"),
        (
            {"base": {"data": SYNTHETIC, "architecture": "resnet20"}},
            "body.base.architecture",
            "set by",
        ),
        ({"base": {"data": SYNTHETIC, "batch_size": 0}}, "body.base.batch_size", "greater than"),
        ({"base": {"dataset": "missing"}}, "body.base.dataset", "missing"),
        ({"seeds": [1, 1]}, "body.seeds", "distinct"),
        (
            {
                "random": {
                    "trials": 2,
                    "space": {"schedule.base_lr": {"low": 0, "high": 1, "log": True}},
                }
            },
            "body.random.space.schedule.base_lr",
            "low > 0",
        ),
        (
            {
                "grid": {"epochs": [1]},
                "random": {"trials": 1, "space": {"epochs": {"choices": [1]}}},
            },
            "body.random",
            "not both",
        ),
    ],
)
def test_bad_experiments_are_422_naming_the_field(
    body: dict[str, Any],
    field: str,
    words: str,
    client: TestClient,
    make_key: Callable[..., dict[str, str]],
    settings: Settings,
) -> None:
    full = {
        "name": "bad",
        "architectures": ["resnet20", "plain20"],
        "seeds": [0],
        "base": {"data": SYNTHETIC, "epochs": 1},
        **body,
    }
    response = client.post("/v1/experiments", json=full, headers=make_key("train"))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"][0]["field"] == field, error
    assert words in error["message"], error["message"]
    assert queued_run_ids(settings) == []  # nothing recorded, nothing sent
    assert client.get("/v1/experiments", headers=make_key("read")).json()["total"] == 0


def test_scopes_and_missing_experiments(
    client: TestClient, make_key: Callable[..., dict[str, str]]
) -> None:
    body = {"name": "x", "architectures": ["resnet20"], "base": {"data": SYNTHETIC}}
    assert client.post("/v1/experiments", json=body, headers=make_key("read")).status_code == 403
    assert client.get("/v1/experiments", headers=make_key("train")).status_code == 403
    missing = "0" * 32
    reader = make_key("read")
    assert client.get(f"/v1/experiments/{missing}", headers=reader).status_code == 404
    assert client.get(f"/v1/experiments/{missing}/bundle", headers=reader).status_code == 404
    response = client.post(f"/v1/experiments/{missing}/cancel", headers=make_key("train"))
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_with_the_broker_down_the_runs_are_failed_and_the_answer_is_503(
    settings: Settings, make_key: Callable[..., dict[str, str]]
) -> None:
    dead = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    admin = make_key("admin")
    with TestClient(create_app(dead)) as client:
        body = {"name": "x", "architectures": ["resnet20", "resnet32"], "base": {"data": SYNTHETIC}}
        response = client.post("/v1/experiments", json=body, headers=admin)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "queue_unavailable"
        [experiment] = client.get("/v1/experiments", headers=admin).json()["items"]
        assert experiment["id"] in response.json()["error"]["message"]
        assert experiment["counts"] == {"failed": 2} and experiment["status"] == "failed"
        runs = client.get("/v1/runs", headers=admin).json()["items"]
        assert all(r["error"].startswith("could not enqueue: ") for r in runs)
