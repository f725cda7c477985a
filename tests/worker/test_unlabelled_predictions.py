"""Batch prediction of an unlabelled folder over HTTP, end to end: the API (in this process) on
the embedded SQLite and filesystem queue, a real Celery worker process, the tiny ResNet-8
trained on real CIFAR-10 JPEGs (tests/fixtures/trained.py), and a folder of real JPEGs with a
corrupt one and a text file among them.

The worker's predictions come back by file name, page by page, and equal the CSV, the .npz and
what the model gives each file's bytes alone; the two bad files are reported in their rows.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.evaluation import Predictions
from core.images import decode_image
from jobs.records import repository as records
from jobs.records import session_scope
from service.app import create_app
from tests.fixtures.trained import CIFAR_JPEGS
from tests.worker.harness import RUN_TIMEOUT_S, Stack, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

REAL = sorted(CIFAR_JPEGS.glob("*/000[0-1].jpg"))  # 6 real JPEGs, 2 per class


def write_folder(folder: Path) -> list[str]:
    """Real JPEGs (some a folder deeper, renamed), a truncated one and a note: their names."""
    (folder / "batch-2").mkdir(parents=True)
    names = []
    for i, source in enumerate(REAL):
        name = f"photo-{i}.jpg" if i % 2 else f"batch-2/photo-{i}.jpg"
        shutil.copy(source, folder / name)
        names.append(name)
    (folder / "cut.jpg").write_bytes(REAL[0].read_bytes()[:250])
    (folder / "notes.txt").write_text("taken on the 5th")
    return sorted([*names, "cut.jpg", "notes.txt"])


def succeeded_run(stack: Stack, trained: Path) -> str:
    """A succeeded run whose model is the tiny trained one, where the worker looks for it."""
    with session_scope(stack.sessions) as session:
        run = records.create_run(
            session, architecture="resnet8", dataset="folder:cifar", config={"epochs": 1}
        )
        records.claim_run(session, run.id, worker_host="w")
        records.finish_run(session, run.id, status="succeeded", metrics={"accuracy": 0.5})
        run_dir = Path(stack.settings.artifacts) / run.id
        run_dir.mkdir(parents=True)
        for name in ("model.keras", "labels.json"):
            shutil.copy(trained / name, run_dir / name)
        model = run_dir / "model.keras"
        records.add_artifact(session, run.id, kind="model", uri=str(model), path=str(model))
        return run.id


def test_an_unlabelled_folder_is_predicted_by_a_worker_over_http(
    embedded_stack: Stack, tiny_run: Callable[[str], Path]
) -> None:
    stack = embedded_stack
    trained = tiny_run("float32")
    stack.settings.data_dir.mkdir(parents=True, exist_ok=True)
    names = write_folder(stack.settings.data_dir / "inbox")
    run_id = succeeded_run(stack, trained)
    with session_scope(stack.sessions) as session:
        _, secret = records.create_api_key(session, "e2e", ["admin"])
    key = {"Authorization": f"Bearer {secret}"}
    worker = stack.start_worker()

    with TestClient(create_app(stack.settings)) as api:
        promoted = api.post("/v1/models", json={"run_id": run_id, "name": "tiny"}, headers=key)
        assert promoted.status_code == 201, promoted.text
        body = {"name": "inbox", "kind": "images", "path": "inbox"}
        registered = api.post("/v1/datasets", json=body, headers=key)
        assert registered.status_code == 201, registered.text
        assert registered.json()["counts"]["all"] == {
            "size": 7, "counts": {}, "image_shape": None, "other_files": 1,
        }  # fmt: skip

        queued = api.post(
            "/v1/models/tiny/batch-predictions", json={"dataset": "inbox"}, headers=key
        )
        assert queued.status_code == 202, queued.text
        location = queued.headers["location"]
        done = wait_for(
            lambda: (
                (e := api.get(location, headers=key).json())["status"] in ("succeeded", "failed")
                and e
            ),
            timeout=RUN_TIMEOUT_S,
            what="the batch prediction to finish",
            details=stack.logs,
        )
        assert done["status"] == "succeeded", (done["error"], stack.logs())
        assert done["split"] == "all" and done["predictions_count"] == 8
        assert done["metrics"] is None and done["accuracy"] is None  # nothing to score
        assert done["seconds"] > 0 and done["images_per_second"] > 0

        rows, offset = [], 0
        while offset is not None:
            page = api.get(f"{location}/predictions?limit=3&offset={offset}", headers=key).json()
            assert page["labelled"] is False and page["unreadable"] == 2
            rows += page["items"]
            offset = page["next_offset"]
        table = list(
            csv.reader(io.StringIO(api.get(f"{location}/predictions?format=csv", headers=key).text))
        )
        npz = api.get(f"{location}/predictions?format=npz", headers=key).content

    assert "predicted 8 unlabelled images (2 unreadable)" in worker.log()
    assert [r["id"] for r in rows] == names
    errors = {r["id"]: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"cut.jpg", "notes.txt"}
    assert errors["cut.jpg"].startswith("corrupt or truncated image")
    assert errors["notes.txt"].startswith("not an image file")

    from core.inference import Predictor

    predictor = Predictor.load(trained / "model.keras")
    kept = Predictions.load(io.BytesIO(npz))
    assert kept.ids == names and kept.labels is None and kept.class_names == predictor.class_names
    for i, (row, line) in enumerate(zip(rows, table[1:], strict=True)):
        assert line[1] == row["id"] and line[4] == (row["error"] or "")
        if row["error"]:
            assert row["predictions"] == [] and np.isnan(kept.probabilities[i]).all()
            continue
        data = (stack.settings.data_dir / "inbox" / row["id"]).read_bytes()
        alone = predictor.probabilities_of([decode_image(data)])[0]
        np.testing.assert_allclose(kept.probabilities[i], alone, atol=1e-5)
        top = predictor.class_names[int(alone.argmax())]
        assert row["predictions"][0]["label"] == line[2].lstrip("'") == top
        np.testing.assert_allclose([float(v) for v in line[5:]], alone, atol=1e-5)
