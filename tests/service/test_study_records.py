"""The depth study's collected records, written back into a database by
``scripts/screenshot_study.py``, read back through the API exactly as they were collected: the
dashboard screenshots in docs/ show the real study, not a look-alike."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from jobs.records import repository as records
from jobs.records import session_scope

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def script() -> ModuleType:
    # scripts/ is not a package: load the script by its path, as `python scripts/...` runs it.
    spec = importlib.util.spec_from_file_location(
        "screenshot_study", ROOT / "scripts" / "screenshot_study.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Study(NamedTuple):
    collections: list[dict[str, Any]]  # as collected: parts 1, 2 and 3
    headers: dict[str, str]  # the owner's, an admin key
    owner: str  # its id


@pytest.fixture
def study(script: ModuleType, client: TestClient, db: sessionmaker[Session]) -> Study:
    """Both sessions' collections, restored into the test's database by one admin key."""
    collections = [json.loads(path.read_text()) for path in script.STUDY]
    with session_scope(db) as session:
        key, secret = records.create_api_key(session, "study", ["admin"])
        for collected in collections:
            script.restore_collection(session, collected, key.id)
        owner = key.id
    return Study(collections, {"Authorization": f"Bearer {secret}"}, owner)


def test_every_run_reads_back_as_collected(study: Study, client: TestClient) -> None:
    collections, headers, owner = study
    for collected in collections:
        for run_id, record in collected["runs"].items():
            run = client.get(f"/v1/runs/{run_id}", headers=headers)
            assert run.status_code == 200, run.text
            # Not collected, so not restored: the dataset rows (dataset_id) and the sessions'
            # own keys (the owner, a field the API gained after the collection). Gained since
            # too: the multi-worker fields, which read as a one-worker run's.
            assert run.json() == {
                **record["run"], "dataset_id": None, "owner_key_id": owner,
                "workers": 1, "slots": [], "distribution": None,
            }  # fmt: skip
            epochs = client.get(f"/v1/runs/{run_id}/epochs", headers=headers).json()
            assert epochs["items"] == record["epochs"]
    listed = client.get("/v1/runs?limit=100", headers=headers).json()
    assert listed["total"] == sum(len(c["runs"]) for c in collections) == 14  # 6 + 6 + 2


def test_the_experiments_and_their_table_1_read_back(study: Study, client: TestClient) -> None:
    collections, headers, owner = study
    for collected in collections:
        experiment = collected["experiment"]
        answer = client.get(f"/v1/experiments/{experiment['id']}", headers=headers)
        assert answer.status_code == 200, answer.text
        # Fields the API gained after the collection: the sessions' own key, and each cell's
        # adaptive-search fields: no rung for a search without early stopping, and why the
        # cell's run stopped (its recorded error: a cancel's reason, None for a finished run).
        runs = collected["runs"]
        cells = [
            {**cell, "rung": None, "rungs": [], "stopped_early": False,
             "stop_reason": runs[cell["run_id"]]["run"]["error"]}
            for cell in experiment["cells"]
        ]  # fmt: skip
        assert answer.json() == {**experiment, "cells": cells, "owner_key_id": owner}
    part2 = collections[1]["experiment"]["id"]
    table = client.get(f"/v1/reports/table1?experiment={part2}", headers=headers).json()
    (plain56,) = [row for row in table["rows"] if row["model"] == "plain56"]
    assert round(plain56["error"], 2) == 49.29
    assert round(plain56["accuracy"], 2) == 50.71
