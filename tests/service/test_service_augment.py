"""Augmentation policies over HTTP: POST /v1/runs takes them (422 for unknown names and bad
parameters, nothing recorded), and an experiment's grid runs over them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from jobs.settings import Settings
from tests.service.test_reports_experiments import queued_run_ids

SYNTHETIC = "synthetic:64:8x8x3:2"


def post_run(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    body = {"architecture": "resnet20", "data": SYNTHETIC, **body}
    return client.post("/v1/runs", json=body, headers=headers)


def test_a_run_takes_policies_and_their_parameters(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = post_run(
        client,
        admin,
        preset="cifar-fast",
        augment="cifar+cutmix+autoaugment-cifar10",
        augment_params={"cutmix": {"alpha": 0.5}},
    )
    assert response.status_code == 202, response.text
    config = response.json()["config"]
    assert config["augment"] == "cifar+autoaugment-cifar10+cutmix"  # stored in applied order
    assert config["augment_params"]["cutmix"] == {"alpha": 0.5, "prob": 0.5}
    assert config["augment_params"]["cutout"] == {"size": 16}  # the defaults, written down
    plain = post_run(client, admin).json()["config"]
    assert plain["augment"] == "cifar"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"augment": "cifar+autoaugment"}, "body.augment", "Unknown augmentation"),
        ({"augment": "cutout"}, "body.augment", "names no base transform"),
        ({"augment": "cifar+mixup+cutmix"}, "body.augment", "choose one"),
        ({"augment": "cifar+cutout+cutout"}, "body.augment", "twice"),
        ({"augment": 7}, "body.augment", "string"),
        (
            {"augment_params": {"cutout": {"size": 0}}},
            "body.augment_params.cutout.size",
            "greater than or equal to 1",
        ),
        (
            {"augment_params": {"mixup": {"alpha": -1}}},
            "body.augment_params.mixup.alpha",
            "greater than 0",
        ),
        (
            {"augment_params": {"cutmix": {"prob": 2}}},
            "body.augment_params.cutmix.prob",
            "less than or equal to 1",
        ),
        (
            {"augment_params": {"randaugment": {"magnitude": 31}}},
            "body.augment_params.randaugment.magnitude",
            "less than or equal to 30",
        ),
        ({"augment_params": {"cutot": {}}}, "body.augment_params.cutot", "xtra"),
        ({"data": "coco:/x", "augment": "imagenet+mixup"}, "body.augment", "multi-label"),
    ],
)
def test_bad_policies_are_422_naming_the_field(
    client: TestClient,
    admin: dict[str, str],
    settings: Settings,
    body: dict[str, Any],
    field: str,
    words: str,
) -> None:
    response = post_run(client, admin, **body)
    assert response.status_code == 422, response.text
    detail = response.json()["error"]["details"][0]
    assert detail["field"] == field, detail
    assert words in detail["message"], detail["message"]
    assert client.get("/v1/runs", headers=admin).json()["total"] == 0
    assert queued_run_ids(settings) == []


def test_an_unknown_name_lists_the_policies(client: TestClient, admin: dict[str, str]) -> None:
    detail = post_run(client, admin, augment="cifar+cutot").json()["error"]["details"][0]
    for name in ("none", "cifar", "imagenet", "randaugment", "autoaugment-cifar10", "cutout"):
        assert name in detail["message"]
    assert detail["received"] == "cifar+cutot"


def test_an_experiment_grids_over_policies(
    client: TestClient, make_key: Callable[..., dict[str, str]], settings: Settings
) -> None:
    policies = ["cifar", "cifar+cutout", "cifar+mixup", "cifar+randaugment"]
    response = client.post(
        "/v1/experiments",
        json={
            "name": "augmentation ablation",
            "architectures": ["resnet20"],
            "seeds": [0],
            "base": {"data": SYNTHETIC, "epochs": 1, "augment_params": {"cutout": {"size": 4}}},
            "grid": {"augment": policies},
        },
        headers=make_key("train"),
    )
    assert response.status_code == 202, response.text
    cells = response.json()["cells"]
    assert [c["params"]["augment"] for c in cells] == policies
    assert len(queued_run_ids(settings)) == 4
    runs = client.get("/v1/runs", headers=make_key("read")).json()["items"]
    assert sorted(r["config"]["augment"] for r in runs) == sorted(policies)
    assert {r["config"]["augment_params"]["cutout"]["size"] for r in runs} == {4}

    bad = client.post(
        "/v1/experiments",
        json={
            "name": "bad",
            "architectures": ["resnet20"],
            "seeds": [0],
            "base": {"data": SYNTHETIC, "epochs": 1},
            "grid": {"augment": ["cifar", "cifar+bogus"]},
        },
        headers=make_key("train"),
    )
    assert bad.status_code == 422, bad.text
    detail = bad.json()["error"]["details"][0]
    assert detail["field"].startswith("body.grid.augment"), detail
    assert "Unknown augmentation: 'bogus'" in detail["message"]
