"""Unlabelled images over HTTP, without a worker: registering a folder, an archive or an upload
of images as kind ``images`` (and the 4xx for what cannot be), queueing its batch prediction,
refusing to train on it, and serving the stored predictions as JSON pages, CSV and .npz.
(The worker that writes them: tests/e2e/test_unlabelled_http_end_to_end.py.)
"""

from __future__ import annotations

import csv
import io
import math
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from core.evaluation import Predictions
from jobs.records import repository as records
from jobs.records import session_scope
from jobs.settings import Settings
from tests.core.data.test_unlabelled_folders import write_photos
from tests.service.test_predictions_routes import succeeded_run

Keys = Callable[..., dict[str, str]]
CLASSES = ["airplane", "automobile", "bird"]


def register(client: TestClient, headers: dict[str, str], name: str, path: str) -> object:
    return client.post(
        "/v1/datasets", json={"name": name, "kind": "images", "path": path}, headers=headers
    )


def test_a_folder_of_images_registers_as_unlabelled_and_bad_paths_get_a_422(
    client: TestClient, admin: dict[str, str], settings: Settings, image_folder: Callable
) -> None:
    root = settings.data_dir
    write_photos(root / "photos")
    created = register(client, admin, "photos", "photos")
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["kind"], body["source"], body["class_names"]) == ("images", "images:photos", [])
    assert body["counts"] == {
        "all": {"size": 5, "counts": {}, "image_shape": None, "other_files": 1}
    }
    assert body["num_images"] == 5

    # A labelled folder is fine as unlabelled images: its class folders are part of the names.
    image_folder(root / "pets", {"cat": 2, "dog": 3})
    labelled = register(client, admin, "pets-unlabelled", "pets")
    assert labelled.status_code == 201 and labelled.json()["counts"]["all"]["size"] == 5

    (root / "empty").mkdir()
    (root / "words").mkdir()
    (root / "words" / "readme.txt").write_text("no pictures here")
    (root / "link").symlink_to(write_photos(settings.state_dir / "elsewhere"))
    for path, says in [
        ("../photos", "must not contain '..'"),
        ("/etc", "must be relative to the data root"),
        ("link", "resolves outside the data root"),
        ("missing", "no such file or folder"),
        ("empty", "no image files"),
        ("words", "no image files"),
        ("words/readme.txt", "expected a folder or a .tar/.tar.gz/.zip archive"),
    ]:
        refused = register(client, admin, "bad", path)
        assert refused.status_code == 422, (path, refused.text)
        detail = refused.json()["error"]["details"][0]
        assert detail["field"] == "body.path" and says in detail["message"], (path, detail)
        assert str(settings.state_dir) not in refused.text  # no server paths in the answer
    assert client.get("/v1/datasets/bad", headers=admin).status_code == 404


def test_archives_register_as_unlabelled_from_the_data_root_or_an_upload(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    photos = write_photos(settings.state_dir / "photos")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(photos.rglob("*")):
            if path.is_file():
                z.write(path, f"photos/{path.relative_to(photos).as_posix()}")
    (settings.data_dir / "photos.zip").write_bytes(archive.getvalue())
    placed = register(client, admin, "zipped", "photos.zip")
    assert placed.status_code == 201, placed.text
    assert placed.json()["counts"]["all"]["size"] == 5

    def upload(kind: str | None) -> object:
        data = {"name": f"up-{kind}"} | ({} if kind is None else {"kind": kind})
        files = {"file": ("photos.zip", archive.getvalue(), "application/zip")}
        return client.post("/v1/datasets/upload", data=data, files=files, headers=admin)

    uploaded = upload("images")
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["kind"] == "images" and uploaded.json()["num_images"] == 5
    wrong = upload("coco")
    assert wrong.status_code == 422 and wrong.json()["error"]["details"][0]["field"] == "body.kind"
    assert [p.name for p in (settings.data_dir / "uploads").iterdir()] == [
        uploaded.json()["location"].split("/")[1]
    ]  # the refused upload left nothing behind
    # Without a kind, an upload is class folders as before (here "2024" is taken as a class).
    assert upload(None).json()["kind"] == "folder"


def test_unlabelled_images_are_predicted_never_trained_on(
    client: TestClient, make_key: Keys, db: sessionmaker[Session], settings: Settings
) -> None:
    write_photos(settings.data_dir / "photos")
    admin = make_key("admin")
    assert register(client, admin, "photos", "photos").status_code == 201
    run_id = succeeded_run(db, settings)
    assert client.post("/v1/models", json={"run_id": run_id, "name": "m"}, headers=admin).is_success

    queued = client.post(
        "/v1/models/m/batch-predictions", json={"dataset": "photos"}, headers=admin
    )
    assert queued.status_code == 202, queued.text
    job = queued.json()
    assert (job["split"], job["dataset"], job["status"]) == ("all", "images:photos", "queued")
    evaluated = client.post(
        f"/v1/runs/{run_id}/evaluations", json={"dataset": "photos"}, headers=admin
    )
    assert evaluated.status_code == 202 and evaluated.json()["split"] == "all"
    busy = client.delete("/v1/datasets/photos", headers=admin)  # the queued jobs read it
    assert busy.status_code == 409 and f"evaluation {job['id']}" in busy.json()["error"]["message"]

    with_split = client.post(
        "/v1/models/m/batch-predictions", json={"dataset": "photos", "split": "test"}, headers=admin
    )
    assert with_split.status_code == 422
    detail = with_split.json()["error"]["details"][0]
    assert detail["field"] == "body.split" and "no splits" in detail["message"]

    run = {"architecture": "resnet8", "dataset": "photos", "epochs": 1}
    training = client.post("/v1/runs", json=run, headers=admin)
    assert training.status_code == 422
    detail = training.json()["error"]["details"][0]
    assert detail["field"] == "body.dataset" and "cannot be trained on" in detail["message"]
    sweep = {"name": "s", "architectures": ["resnet8"], "base": {"dataset": "photos"}}
    assert client.post("/v1/experiments", json=sweep, headers=admin).status_code == 422
    # A labelled batch prediction still defaults to the test split.
    labelled = client.post("/v1/models/m/batch-predictions", json={}, headers=admin)
    assert labelled.status_code == 202 and labelled.json()["split"] == "test"


def unlabelled_evaluation(
    db: sessionmaker[Session], run_id: str, predictions: Predictions, folder: Path
) -> str:
    """A succeeded batch prediction of unlabelled images, as the worker records one."""
    with session_scope(db) as session:
        evaluation = records.create_evaluation(
            session, run_id=run_id, split="all", dataset="images:photos"
        )
        records.claim_evaluation(session, evaluation.id, worker_host="w")
        uri = str(folder / f"{evaluation.id}.npz")
        predictions.save(uri)
        records.finish_evaluation(
            session,
            evaluation.id,
            status="succeeded",
            predictions_uri=uri,
            predictions_count=len(predictions),
            seconds=0.5,
            images_per_second=len(predictions) / 0.5,
        )
        return evaluation.id


def example(n: int = 23) -> Predictions:
    rng = np.random.default_rng(5)
    ids = sorted(f"2024/{i:02d}.jpg" for i in range(n))
    errors = ["corrupt or truncated image: broken" if i % 7 == 3 else "" for i in range(n)]
    probs = rng.dirichlet(np.ones(3), size=n)
    return Predictions.unlabelled(probs, CLASSES, multi_label=False, ids=ids, errors=errors)


def test_unlabelled_predictions_page_by_page_equal_the_csv_and_the_npz(
    client: TestClient, make_key: Keys, db: sessionmaker[Session], settings: Settings
) -> None:
    run_id = succeeded_run(db, settings)
    kept = example()
    evaluation_id = unlabelled_evaluation(db, run_id, kept, settings.state_dir)
    reader = make_key("read")
    base = f"/v1/runs/{run_id}/evaluations/{evaluation_id}"

    public = client.get(base, headers=reader).json()
    assert public["metrics"] is None and public["accuracy"] is None  # nothing invented
    assert public["f1_macro"] is None and public["loss"] is None
    assert public["predictions_count"] == 23 and public["seconds"] == 0.5

    rows, offset, pages = [], 0, 0
    while offset is not None:
        page = client.get(f"{base}/predictions?limit=5&offset={offset}&top_k=3", headers=reader)
        assert page.status_code == 200, page.text
        body = page.json()
        assert (body["count"], body["labelled"], body["unreadable"]) == (23, False, 3)
        assert "metrics" not in body
        rows += body["items"]
        offset, pages = body["next_offset"], pages + 1
    assert pages == 5 and [r["index"] for r in rows] == list(range(23))
    assert [r["id"] for r in rows] == kept.ids
    assert all("label" not in r for r in rows)
    assert [r["error"] for r in rows] == [e or None for e in kept.errors or []]

    text = client.get(f"{base}/predictions?format=csv", headers=reader)
    table = list(csv.reader(io.StringIO(text.text)))
    assert table[0] == ["index", "id", "predicted", "score", "error"] + [f"p_{c}" for c in CLASSES]
    npz = client.get(f"{base}/predictions?format=npz", headers=reader)
    back = Predictions.load(io.BytesIO(npz.content))
    for row, line in zip(rows, table[1:], strict=True):
        i = row["index"]
        assert line[1] == row["id"] == back.ids[i]
        assert line[4] == (row["error"] or "") == (back.errors or [])[i]
        if row["error"]:
            assert row["predictions"] == [] and line[2:4] == ["", ""]
            assert all(math.isnan(p) for p in back.probabilities[i])
            continue
        scores = {s["label"]: s["score"] for s in row["predictions"]}
        assert line[2] == row["predictions"][0]["label"]
        for c, cell, stored in zip(CLASSES, line[5:], back.probabilities[i], strict=True):
            assert abs(float(cell) - scores[c]) < 1e-5 and abs(stored - scores[c]) < 1e-7

    rescored = client.post(f"{base}/rescore", json={}, headers=reader)
    assert rescored.status_code == 409 and "no labels" in rescored.json()["error"]["message"]
