"""/v1/runs: create, list, get, cancel, delete, evaluate; bad configs name the field."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from jobs.queue import EVALUATE_TASK, TRAIN_TASK
from jobs.records import RunStatus, session_scope
from jobs.records import repository as records
from jobs.settings import Settings

SYNTHETIC = "synthetic:64:8x8x3:2"


def submit(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    body = {"architecture": "resnet20", "data": SYNTHETIC, **body}
    response = client.post("/v1/runs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()


def queued_messages(settings: Settings) -> list[dict[str, Any]]:
    """The task messages waiting in the embedded filesystem broker's folder."""
    folder = settings.broker_folder / "out"
    messages = []
    for path in sorted(folder.glob("*.msg")):
        messages.append(json.loads(path.read_text()))
    return messages


def task_kwargs(message: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    import base64

    body = json.loads(base64.b64decode(message["body"]))
    return message["headers"]["task"], body[1]


def error_fields(response: Any) -> list[str]:
    return [d["field"] for d in response.json()["error"]["details"]]


def test_create_run_commits_it_queued_and_enqueues_it_by_id(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    response = client.post(
        "/v1/runs",
        json={
            "architecture": "ResNet20",
            "data": SYNTHETIC,
            "preset": "cifar-fast",
            "epochs": 2,
            "batch_size": 16,
            "optimizer": {"weight_decay": 1e-3},
        },
        headers=admin,
    )
    assert response.status_code == 202, response.text
    run = response.json()
    assert response.headers["location"] == f"/v1/runs/{run['id']}"
    assert run["status"] == "queued"
    assert run["architecture"] == "resnet20"
    assert run["dataset"] == SYNTHETIC
    assert run["epochs_planned"] == 2 and run["epochs_completed"] == 0
    assert run["attempts"] == 0 and run["max_attempts"] == settings.max_attempts
    config = run["config"]
    assert config["batch_size"] == 16
    # The override merged into the preset's optimizer rather than replacing it.
    assert config["optimizer"] == {
        "name": "sgd",
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 1e-3,
    }
    assert config["schedule"]["kind"] == "onecycle"  # from the preset
    [message] = queued_messages(settings)
    assert task_kwargs(message) == (TRAIN_TASK, {"run_id": run["id"]})
    assert client.get(f"/v1/runs/{run['id']}", headers=admin).json() == run


def test_get_run_reports_progress_eta_and_epochs(
    client: TestClient, admin: dict[str, str], db: sessionmaker[Session]
) -> None:
    run_id = submit(client, admin, epochs=3)["id"]
    with session_scope(db) as session:
        assert records.claim_run(session, run_id, worker_host="gpu-1")
        records.record_epoch(session, run_id, {"epoch": 1, "loss": 2.0, "accuracy": 0.25})
        records.update_progress(
            session,
            run_id,
            {"epoch": 2, "epochs": 3, "batch": 5, "batches": 20, "fraction": 0.25,
             "eta_seconds": 42.0, "images_per_second": 900.0},
        )  # fmt: skip
    run = client.get(f"/v1/runs/{run_id}", headers=admin).json()
    assert run["status"] == "running"
    assert run["attempts"] == 1 and run["worker_host"] == "gpu-1"
    assert run["progress"]["fraction"] == 0.25 and run["progress"]["batch"] == 5
    assert run["eta_seconds"] == 42.0
    assert run["epochs_completed"] == 1 and run["epochs_planned"] == 3
    epochs = client.get(f"/v1/runs/{run_id}/epochs", headers=admin).json()
    assert [(e["epoch"], e["loss"]) for e in epochs["items"]] == [(1, 2.0)]
    missing = client.get(f"/v1/runs/{'0' * 32}/epochs", headers=admin)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_list_runs_paginates_and_filters(
    client: TestClient, admin: dict[str, str], db: sessionmaker[Session]
) -> None:
    ids = [submit(client, admin, architecture="resnet20")["id"] for _ in range(3)]
    ids += [submit(client, admin, architecture="resnet32")["id"] for _ in range(2)]
    client.post(f"/v1/runs/{ids[0]}/cancel", headers=admin)

    page = client.get("/v1/runs", params={"limit": 2}, headers=admin).json()
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 0)
    assert [r["id"] for r in page["items"]] == ids[::-1][:2]  # newest first
    last = client.get("/v1/runs", params={"limit": 2, "offset": 4}, headers=admin).json()
    assert [r["id"] for r in last["items"]] == [ids[0]]

    def listed(**params: Any) -> list[str]:
        return [
            r["id"] for r in client.get("/v1/runs", params=params, headers=admin).json()["items"]
        ]

    assert listed(status="cancelled") == [ids[0]]
    assert sorted(listed(architecture="ResNet32")) == sorted(ids[3:])
    assert sorted(listed(status="queued", architecture="resnet20")) == sorted(ids[1:3])
    assert listed(dataset=SYNTHETIC, limit=200) and listed(dataset="nope") == []

    huge = client.get("/v1/runs", params={"offset": 10**20}, headers=admin)
    assert huge.status_code == 422 and error_fields(huge) == ["query.offset"]
    bad = client.get("/v1/runs", params={"status": "sleeping", "limit": 0}, headers=admin)
    assert bad.status_code == 422
    assert set(error_fields(bad)) == {"query.status", "query.limit"}
    received = {d["field"]: d["received"] for d in bad.json()["error"]["details"]}
    assert received == {"query.status": "sleeping", "query.limit": "0"}


def test_runs_filter_by_registered_dataset_name(
    client: TestClient,
    admin: dict[str, str],
    settings: Settings,
    image_folder: Callable[..., Path],
) -> None:
    image_folder(settings.data_dir / "pets", {"cat": 3, "dog": 3})
    dataset = client.post(
        "/v1/datasets", json={"name": "pets", "kind": "folder", "path": "pets"}, headers=admin
    ).json()
    run = client.post(
        "/v1/runs",
        json={"architecture": "resnet20", "dataset": "pets", "epochs": 1},
        headers=admin,
    ).json()
    assert run["dataset"] == "folder:pets" and run["dataset_id"] == dataset["id"]
    assert run["config"]["data"] == "folder:pets"  # relative: the worker confines it to its root
    submit(client, admin)  # another run, on other data
    for ref in ("pets", dataset["id"], "folder:pets"):
        items = client.get("/v1/runs", params={"dataset": ref}, headers=admin).json()["items"]
        assert [r["id"] for r in items] == [run["id"]]
    by_id = client.post(
        "/v1/runs", json={"architecture": "resnet20", "dataset": dataset["id"]}, headers=admin
    )
    assert by_id.status_code == 202


def test_cancel_and_delete(
    client: TestClient, admin: dict[str, str], db: sessionmaker[Session]
) -> None:
    queued = submit(client, admin)["id"]
    cancelled = client.post(f"/v1/runs/{queued}/cancel", headers=admin)
    assert cancelled.status_code == 202
    assert cancelled.json()["status"] == "cancelled"
    assert client.post(f"/v1/runs/{queued}/cancel", headers=admin).status_code == 202

    running = submit(client, admin)["id"]
    with session_scope(db) as session:
        records.claim_run(session, running, worker_host="w")
    asked = client.post(f"/v1/runs/{running}/cancel", headers=admin).json()
    assert asked["status"] == "running" and asked["cancel_requested"] is True
    refused = client.delete(f"/v1/runs/{running}", headers=admin)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "conflict"
    assert "running" in refused.json()["error"]["message"]

    done = submit(client, admin)["id"]
    with session_scope(db) as session:
        records.claim_run(session, done, worker_host="w")
        records.finish_run(session, done, status=RunStatus.SUCCEEDED)
    assert client.post(f"/v1/runs/{done}/cancel", headers=admin).status_code == 409

    assert client.delete(f"/v1/runs/{queued}", headers=admin).status_code == 204
    gone = client.get(f"/v1/runs/{queued}", headers=admin)
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "not_found"
    assert client.delete(f"/v1/runs/{queued}", headers=admin).status_code == 404
    assert client.post(f"/v1/runs/{queued}/cancel", headers=admin).status_code == 404


@pytest.mark.parametrize(
    ("body", "field", "received"),
    [
        ({"batch_size": 0}, "body.batch_size", 0),
        ({"epochs": "ten"}, "body.epochs", "ten"),
        ({"lr": 0.1}, "body.lr", 0.1),  # unknown field
        ({"init_from": "/etc/passwd"}, "body.init_from", "/etc/passwd"),  # outside the data root
        ({"preset": "imagenet-fast"}, "body.preset", "imagenet-fast"),
        ({"optimizer": {"momentum": 1.5}}, "body.optimizer.momentum", 1.5),
        ({"optimizer": {"nesterov": True, "betas": [0.9]}}, "body.optimizer.betas", [0.9]),
        ({"schedule": {"boundaries": [10, 5]}}, "body.schedule.boundaries", [10, 5]),
        ({"freeze": ["stage9"]}, "body.freeze", ["stage9"]),
        ({"validation": 1.5}, "body.validation", 1.5),
        ({"data": "folder:../outside"}, "body.data", "folder:../outside"),
        ({"data": "folder:/etc"}, "body.data", "folder:/etc"),
        ({"data": "synthetic:lots"}, "body.data", "synthetic:lots"),
        ({"data": None, "dataset": "nope"}, "body.dataset", "nope"),
        ({"dataset": "pets"}, "body.dataset", "pets"),  # both data and dataset
        ({"data": None}, "body.dataset", None),  # neither
        ({"architecture": None}, "body.architecture", None),
    ],
)
def test_invalid_configs_are_422_naming_the_field(
    client: TestClient,
    admin: dict[str, str],
    settings: Settings,
    body: dict[str, Any],
    field: str,
    received: Any,
) -> None:
    payload = {"architecture": "resnet20", "data": SYNTHETIC, **body}
    payload = {k: v for k, v in payload.items() if not (k == "data" and v is None)}
    response = client.post("/v1/runs", json=payload, headers=admin)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"][0]["field"] == field, error
    assert error["details"][0]["received"] == received
    assert field in error["message"]
    assert client.get("/v1/runs", headers=admin).json()["total"] == 0
    assert queued_messages(settings) == []


def test_preset_and_unknown_architecture_messages_list_the_valid_ones(
    client: TestClient, admin: dict[str, str]
) -> None:
    preset = client.post(
        "/v1/runs",
        json={"architecture": "resnet20", "data": SYNTHETIC, "preset": "fast"},
        headers=admin,
    ).json()["error"]
    assert "cifar-paper" in preset["message"] and "imagenet-paper" in preset["message"]
    for name in ("vgg16", "resnet21"):
        response = client.post(
            "/v1/runs", json={"architecture": name, "data": SYNTHETIC}, headers=admin
        )
        assert response.status_code == 422
        detail = response.json()["error"]["details"][0]
        assert detail["field"] == "body.architecture" and detail["received"] == name
        for valid in ("resnet20", "resnet56", "resnet50", "wrn28_10"):
            assert valid in detail["message"], detail["message"]


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[1, 2, 3]",
        b'"resnet20"',
        b'{"architecture": {"name": "resnet20"}, "data": 7}',
        b'{"architecture": "resnet20", "data": "synthetic:64:8x8x3:2", "optimizer": "adam"}',
        b'{"architecture": "resnet20", "data": "synthetic:64:8x8x3:2", "input_shape": [1]}',
        b'{"architecture": "resnet20", "data": "synthetic:99999999:999x999x3:2"}',
    ],
)
def test_malformed_bodies_are_4xx_never_500(
    client: TestClient, admin: dict[str, str], content: bytes
) -> None:
    response = client.post(
        "/v1/runs", content=content, headers={**admin, "Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"].startswith("body")


def test_evaluations_are_queued_for_succeeded_runs_only(
    client: TestClient, admin: dict[str, str], db: sessionmaker[Session], settings: Settings
) -> None:
    run_id = submit(client, admin)["id"]
    early = client.post(f"/v1/runs/{run_id}/evaluations", json={"split": "test"}, headers=admin)
    assert early.status_code == 409
    with session_scope(db) as session:
        records.claim_run(session, run_id, worker_host="w")
        records.finish_run(session, run_id, status=RunStatus.SUCCEEDED)

    bad = client.post(f"/v1/runs/{run_id}/evaluations", json={"split": "dev"}, headers=admin)
    assert bad.status_code == 422 and error_fields(bad) == ["body.split"]
    unknown = client.post(f"/v1/runs/{run_id}/evaluations", json={"dataset": "nope"}, headers=admin)
    assert unknown.status_code == 422 and error_fields(unknown) == ["body.dataset"]

    response = client.post(f"/v1/runs/{run_id}/evaluations", json={"split": "test"}, headers=admin)
    assert response.status_code == 202, response.text
    evaluation = response.json()
    assert (evaluation["run_id"], evaluation["split"], evaluation["status"]) == (
        run_id,
        "test",
        "queued",
    )
    tasks = [task_kwargs(m) for m in queued_messages(settings)]
    assert (EVALUATE_TASK, {"evaluation_id": evaluation["id"]}) in tasks
    with session_scope(db) as session:  # the service's RESNET_MAX_ATTEMPTS, as for runs
        assert records.get_evaluation(session, evaluation["id"]).max_attempts == (
            settings.max_attempts
        )

    with session_scope(db) as session:
        records.claim_evaluation(session, evaluation["id"], worker_host="w")
        records.finish_evaluation(
            session,
            evaluation["id"],
            status="succeeded",
            metrics={"accuracy": 0.9, "precision_macro": 0.8, "confusion_matrix": [[1, 0], [0, 1]]},
        )
    listed = client.get(f"/v1/runs/{run_id}/evaluations", headers=admin).json()
    assert [e["id"] for e in listed["items"]] == [evaluation["id"]]
    one = client.get(f"/v1/runs/{run_id}/evaluations/{evaluation['id']}", headers=admin).json()
    assert one["accuracy"] == 0.9 and one["metrics"]["confusion_matrix"] == [[1, 0], [0, 1]]
    other = submit(client, admin)["id"]
    wrong_run = client.get(f"/v1/runs/{other}/evaluations/{evaluation['id']}", headers=admin)
    assert wrong_run.status_code == 404


def test_the_openapi_schema_of_post_runs_lists_the_fields_and_their_bounds(
    client: TestClient,
) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/runs"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/RunCreate"}
    schemas = spec["components"]["schemas"]
    run = schemas["RunCreate"]
    fields = run["properties"]
    assert run["required"] == ["architecture"]
    assert run["additionalProperties"] is False
    assert list(fields)[:4] == ["architecture", "dataset", "data", "preset"]
    assert (fields["epochs"]["minimum"], fields["epochs"]["maximum"]) == (1, 10_000)
    assert (fields["batch_size"]["minimum"], fields["batch_size"]["maximum"]) == (1, 65_536)
    assert fields["label_smoothing"]["exclusiveMaximum"] == 1
    assert fields["precision"]["enum"] == ["auto", "float32", "bfloat16", "float16"]
    assert "relative to the data root" in fields["init_from"]["description"]
    optimizer = schemas[fields["optimizer"]["$ref"].rsplit("/", 1)[1]]["properties"]
    assert optimizer["momentum"]["exclusiveMaximum"] == 1
    assert optimizer["weight_decay"]["maximum"] == 0.1
    schedule = schemas[fields["schedule"]["$ref"].rsplit("/", 1)[1]]["properties"]
    assert schedule["base_lr"]["exclusiveMinimum"] == 0


def test_null_leaves_a_hyperparameter_as_the_preset_has_it(
    client: TestClient, admin: dict[str, str]
) -> None:
    run = submit(client, admin, preset="cifar-paper", epochs=None, validation=None, seed=None)
    assert run["config"]["epochs"] == 182 and run["config"]["validation"] == 5000
    assert run["config"]["seed"] == 0


def test_a_nested_null_is_applied_over_the_preset(
    client: TestClient, admin: dict[str, str]
) -> None:
    run = submit(
        client,
        admin,
        preset="cifar-paper",
        schedule={"boundaries": None, "boundary_epochs": [100, 150]},
    )
    schedule = run["config"]["schedule"]
    assert schedule["boundaries"] is None and schedule["boundary_epochs"] == [100, 150]
    assert schedule["base_lr"] == 0.1  # the preset's other schedule fields stay


def test_a_run_and_an_experiment_cell_resolve_to_the_same_config(
    client: TestClient, admin: dict[str, str]
) -> None:
    run = submit(
        client,
        admin,
        architecture="resnet110",
        preset="cifar-paper",
        seed=3,
        epochs=2,
        optimizer={"nesterov": True},
        schedule={"base_lr": 0.05},
    )
    experiment = client.post(
        "/v1/experiments",
        json={
            "name": "one cell",
            "architectures": ["resnet110"],
            "seeds": [3],
            "base": {"data": SYNTHETIC, "preset": "cifar-paper", "epochs": 2},
            "grid": {"schedule.base_lr": [0.05], "optimizer.nesterov": [True]},
        },
        headers=admin,
    )
    assert experiment.status_code == 202, experiment.text
    [cell] = experiment.json()["cells"]
    cell_run = client.get(f"/v1/runs/{cell['run_id']}", headers=admin).json()
    assert cell_run["config"] == run["config"]
    assert run["config"]["schedule"]["warmup_steps"] == 400
