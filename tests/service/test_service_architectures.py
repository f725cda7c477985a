"""/v1/architectures: the catalogue from specs, with the counts shipped with the package (a
catalogue cache built by ``resnet archs`` overrides them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.catalogue import cache_path
from core.models.specs import CATALOGUE_NAMES
from jobs.settings import Settings
from service.app import create_app


def test_a_fresh_install_lists_every_architecture_with_its_counts(
    settings: Settings,
    admin: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with TestClient(create_app(settings)) as client:
        body = client.get("/v1/architectures", headers=admin).json()
    assert [a["name"] for a in body["items"]] == list(CATALOGUE_NAMES)
    assert body["counted"] is True
    by_name = {a["name"]: a for a in body["items"]}
    assert by_name["resnet20"]["paper_error"] == 8.75
    assert by_name["resnet20"]["family"] == "cifar" and by_name["resnet20"]["depth"] == 20
    assert by_name["resnet50"]["paper_top5_error"] == 6.71
    assert by_name["resnet50"]["input_shape"] == [224, 224, 3]
    assert by_name["resnet20"]["params"] == 269_722  # recomputed: tests/core/models/
    assert by_name["resnet50"]["flops"] == pytest.approx(4.1e9, rel=0.02)
    assert all(a["params"] and a["flops"] for a in body["items"])


def test_a_built_catalogue_cache_overrides_the_shipped_counts(
    settings: Settings,
    admin: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with TestClient(create_app(settings)) as client:
        path = cache_path()
        path.parent.mkdir(parents=True)
        entries = {
            name: {"params": i + 1, "flops": 10 * (i + 1)} for i, name in enumerate(CATALOGUE_NAMES)
        }
        entries["resnet20"] = {"params": 272_474, "flops": 41_000_000}
        path.write_text(json.dumps({"entries": entries}))
        body = client.get("/v1/architectures", headers=admin).json()
        resnet20 = next(a for a in body["items"] if a["name"] == "resnet20")
        assert (resnet20["params"], resnet20["flops"]) == (272_474, 41_000_000)
        assert body["counted"] is True

        path.write_text("{broken")  # a bad cache is ignored, not a 500: the shipped counts stay
        body = client.get("/v1/architectures", headers=admin).json()
        resnet20 = next(a for a in body["items"] if a["name"] == "resnet20")
        assert body["counted"] is True and resnet20["params"] == 269_722
