"""Batch predictions queued by model version, and an evaluation's stored predictions served as
JSON pages, CSV and .npz, and rescored. (The worker that writes them: tests/worker and tests/e2e.)
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from core.evaluation import Predictions, multilabel_metrics
from jobs.records import repository as records
from jobs.records import session_scope
from jobs.settings import Settings

NAMES = ["airplane", "bird", "cat"]
Keys = Callable[..., dict[str, str]]


def succeeded_run(db: sessionmaker[Session], settings: Settings) -> str:
    model = settings.state_dir / "model.keras"
    model.write_bytes(b"a model file")
    with session_scope(db) as session:
        run = records.create_run(
            session, architecture="resnet8", dataset="folder:pets", config={"epochs": 1}
        )
        records.claim_run(session, run.id, worker_host="w")
        records.finish_run(session, run.id, status="succeeded", metrics={"accuracy": 0.5})
        records.add_artifact(session, run.id, kind="model", uri=str(model), path=str(model))
        return run.id


def kept_evaluation(
    db: sessionmaker[Session], run_id: str, predictions: Predictions | None, folder: Path
) -> str:
    """A succeeded evaluation whose worker stored ``predictions`` (None: it kept none)."""
    with session_scope(db) as session:
        evaluation = records.create_evaluation(session, run_id=run_id, split="test")
        records.claim_evaluation(session, evaluation.id, worker_host="w")
        uri = None
        if predictions is not None:
            uri = str(folder / f"{evaluation.id}.npz")
            predictions.save(uri)
        records.finish_evaluation(
            session,
            evaluation.id,
            status="succeeded",
            metrics=predictions.score() if predictions is not None else {"accuracy": 1.0},
            predictions_uri=uri,
            predictions_count=None if predictions is None else len(predictions),
        )
        return evaluation.id


def example(n: int = 30, *, multi_label: bool = False) -> Predictions:
    rng = np.random.default_rng(7)
    if multi_label:
        probs = rng.uniform(size=(n, 3))
        labels: np.ndarray = (rng.uniform(size=(n, 3)) > 0.5).astype(np.uint8)
    else:
        logits = rng.normal(size=(n, 3)) * 2
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        labels = rng.integers(0, 3, n)
    ids = [f"pets/test/{i:02d}.png" for i in range(n)]
    return Predictions.from_outputs(probs, labels, NAMES, multi_label=multi_label, ids=ids)


def test_predictions_as_pages_csv_and_npz(
    client: TestClient, make_key: Keys, db: sessionmaker[Session], settings: Settings
) -> None:
    run_id = succeeded_run(db, settings)
    kept = example()
    evaluation_id = kept_evaluation(db, run_id, kept, settings.state_dir)
    reader = make_key("read")
    base = f"/v1/runs/{run_id}/evaluations/{evaluation_id}"

    public = client.get(base, headers=reader).json()
    assert public["predictions_count"] == 30

    page = client.get(f"{base}/predictions?limit=4&offset=26&top_k=2", headers=reader)
    assert page.status_code == 200, page.text
    body = page.json()
    assert (body["count"], body["offset"], body["limit"]) == (30, 26, 4)
    assert body["class_names"] == NAMES and body["multi_label"] is False
    assert [row["index"] for row in body["items"]] == [26, 27, 28, 29]
    for row in body["items"]:
        p = kept.probabilities[row["index"]]
        assert row["id"] == kept.ids[row["index"]]
        assert row["label"] == NAMES[kept.labels[row["index"]]]
        top = [NAMES[j] for j in np.argsort(-p)[:2]]
        assert [s["label"] for s in row["predictions"]] == top
        assert row["predictions"][0]["score"] == pytest.approx(float(p.max()), abs=1e-7)
    past_the_end = client.get(f"{base}/predictions?offset=30", headers=reader).json()
    assert past_the_end["items"] == [] and past_the_end["count"] == 30

    text = client.get(f"{base}/predictions?format=csv", headers=reader)
    assert text.headers["content-type"].startswith("text/csv")
    assert f"predictions-{evaluation_id}.csv" in text.headers["content-disposition"]
    table = list(csv.reader(io.StringIO(text.text)))
    assert len(table) == 31 and table[0][:5] == ["index", "id", "label", "predicted", "score"]

    archive = client.get(f"{base}/predictions?format=npz", headers=reader)
    assert archive.headers["content-type"] == "application/octet-stream"
    back = Predictions.load(io.BytesIO(archive.content))
    np.testing.assert_array_equal(back.probabilities, kept.probabilities)
    # The stored metrics come back from the predictions alone.
    assert back.score() == {k: public["metrics"][k] for k in back.score()}

    rescored = client.post(f"{base}/rescore", json={}, headers=reader)
    assert rescored.status_code == 200, rescored.text
    assert rescored.json()["metrics"] == public["metrics"]


def test_multi_label_predictions_rescored_at_another_threshold(
    client: TestClient, make_key: Keys, db: sessionmaker[Session], settings: Settings
) -> None:
    run_id = succeeded_run(db, settings)
    kept = example(multi_label=True)
    evaluation_id = kept_evaluation(db, run_id, kept, settings.state_dir)
    reader = make_key("read")
    base = f"/v1/runs/{run_id}/evaluations/{evaluation_id}"
    answer = client.post(f"{base}/rescore", json={"threshold": 0.25}, headers=reader).json()
    assert answer["threshold"] == 0.25
    want = multilabel_metrics(kept.labels, kept.probabilities, NAMES, threshold=0.25)
    assert answer["metrics"] == want
    assert answer["metrics"]["OP"] != client.get(base, headers=reader).json()["metrics"]["OP"]
    row = client.get(f"{base}/predictions?limit=1&threshold=0.25", headers=reader).json()
    picked = {s["label"] for s in row["items"][0]["predictions"]}
    assert picked == {NAMES[j] for j in np.flatnonzero(kept.probabilities[0] >= 0.25)}


def test_what_cannot_be_served_gets_a_clear_4xx(
    client: TestClient, make_key: Keys, db: sessionmaker[Session], settings: Settings
) -> None:
    run_id = succeeded_run(db, settings)
    reader = make_key("read")
    kept = kept_evaluation(db, run_id, example(), settings.state_dir)
    older = kept_evaluation(db, run_id, None, settings.state_dir)
    with session_scope(db) as session:
        queued = records.create_evaluation(session, run_id=run_id, split="val").id
    gone = kept_evaluation(db, run_id, example(), settings.state_dir)
    (settings.state_dir / f"{gone}.npz").unlink()
    broken = kept_evaluation(db, run_id, example(), settings.state_dir)
    (settings.state_dir / f"{broken}.npz").write_bytes(b"PK\x03\x04 truncated")
    other_run = succeeded_run(db, settings)

    def get(path: str) -> tuple[int, str]:
        response = client.get(path, headers=reader)
        return response.status_code, response.json()["error"]["message"]

    base = f"/v1/runs/{run_id}/evaluations"
    assert get(f"{base}/{older}/predictions") == (
        404,
        f"Evaluation {older} kept no predictions (it ran before evaluations kept them); "
        "queue a new evaluation",
    )
    code, message = get(f"{base}/{queued}/predictions")
    assert code == 409 and "is queued" in message
    code, message = get(f"{base}/{gone}/predictions")
    assert code == 404 and "gone from the artifact store" in message
    code, message = get(f"{base}/{broken}/predictions?format=csv")
    assert code == 409 and "cannot be read" in message
    assert get(f"/v1/runs/{other_run}/evaluations/{kept}/predictions")[0] == 404
    assert get(f"{base}/{'0' * 32}/predictions")[0] == 404
    for query in ("format=xml", "limit=0", "limit=201", "offset=-1", "top_k=0", "threshold=2"):
        response = client.get(f"{base}/{kept}/predictions?{query}", headers=reader)
        assert response.status_code == 422, (query, response.text)
    for body in ({"threshold": -0.1}, {"threshold": "high"}, {"cut": 0.5}, []):
        response = client.post(f"{base}/{kept}/rescore", json=body, headers=reader)
        assert response.status_code == 422, (body, response.text)
    assert client.get(f"{base}/{kept}/predictions").status_code == 401
    assert client.get("/healthz").status_code == 200


def test_batch_prediction_queues_an_evaluation_of_the_version(
    client: TestClient,
    make_key: Keys,
    db: sessionmaker[Session],
    settings: Settings,
    image_folder: Callable[..., Path],
) -> None:
    image_folder(settings.data_dir / "pets", {name: 2 for name in NAMES})
    admin = make_key("admin")
    assert (
        client.post(
            "/v1/datasets", json={"name": "pets", "kind": "folder", "path": "pets"}, headers=admin
        ).status_code
        == 201
    )
    first, second = succeeded_run(db, settings), succeeded_run(db, settings)
    for run_id in (first, second):
        promoted = client.post("/v1/models", json={"run_id": run_id, "name": "pets"}, headers=admin)
        assert promoted.status_code == 201, promoted.text
    predictor = make_key("predict")

    newest = client.post(
        "/v1/models/pets/batch-predictions", json={"dataset": "pets"}, headers=predictor
    )
    assert newest.status_code == 202, newest.text
    job = newest.json()
    assert job["run_id"] == second and job["status"] == "queued" and job["split"] == "test"
    assert job["dataset"] == f"folder:{settings.data_dir / 'pets'}" or job["dataset"].startswith(
        "folder:"
    )
    assert newest.headers["location"] == f"/v1/runs/{second}/evaluations/{job['id']}"
    assert client.get(newest.headers["location"], headers=admin).json()["status"] == "queued"

    pinned = client.post(
        "/v1/models/pets/versions/1/batch-predictions",
        json={"dataset": "pets", "split": "train"},
        headers=predictor,
    )
    assert pinned.status_code == 202 and pinned.json()["run_id"] == first
    by_run = client.post(f"/v1/models/{first}/batch-predictions", json={}, headers=predictor)
    assert by_run.status_code == 202 and by_run.json()["dataset"] is None  # the run's own data

    def post(path: str, body: object, headers: dict[str, str] = predictor) -> int:
        return client.post(path, json=body, headers=headers).status_code

    assert post("/v1/models/nope/batch-predictions", {}) == 404
    assert post("/v1/models/pets/versions/9/batch-predictions", {}) == 404
    assert post("/v1/models/pets/versions/0/batch-predictions", {}) == 422
    assert post("/v1/models/pets/batch-predictions", {"dataset": "unknown"}) == 422
    assert post("/v1/models/pets/batch-predictions", {"split": "holdout"}) == 422
    assert post("/v1/models/pets/batch-predictions", {"images": "x"}) == 422
    assert post("/v1/models/pets/batch-predictions", {}, make_key("read")) == 403
    with session_scope(db) as session:
        running = records.create_run(
            session, architecture="resnet8", dataset="synthetic", config={"epochs": 1}
        ).id
    assert post(f"/v1/models/{running}/batch-predictions", {}) == 409
