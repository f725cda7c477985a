"""End to end over HTTP, every component a real process: register data, train, evaluate.

Once on the production stack (PostgreSQL, Redis, the API under uvicorn and a Celery worker,
each started with its docker-compose command) and once on the embedded default (`resnet serve`).
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from core.evaluation import Predictions
from tests.e2e.stacks import Stack, embedded_stack, production_stack, write_image_folder

pytestmark = pytest.mark.slow
TERMINAL = {"succeeded", "failed", "cancelled"}


def watch_run(api: httpx.Client, run_id: str, timeout: float = 240) -> list[str]:
    """Poll the run; return the statuses seen, in order, until it ends."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.get(f"/v1/runs/{run_id}").json()
        if not seen or seen[-1] != run["status"]:
            seen.append(run["status"])
        if run["status"] in TERMINAL:
            return seen
        time.sleep(0.2)
    raise TimeoutError(f"run {run_id} did not finish; statuses seen: {seen}")


def train_and_evaluate(stack: Stack) -> None:
    write_image_folder(stack.data_root / "colours")
    with stack.client() as api:
        reg = api.post(
            "/v1/datasets", json={"name": "colours", "kind": "folder", "path": "colours"}
        )
        assert reg.status_code == 201, reg.text
        assert reg.json()["class_names"] == ["class_0", "class_1", "class_2"]

        created = api.post(
            "/v1/runs",
            json={
                "architecture": "resnet8",
                "dataset": "colours",
                "epochs": 3,
                "batch_size": 32,
                "validation": 0.2,
                "precision": "float32",
                "tensorboard": False,
            },
        )
        assert created.status_code == 202, (created.text, stack.log_tail(6000))
        run = created.json()
        assert run["status"] == "queued"

        seen = watch_run(api, run["id"])
        assert seen[-1] == "succeeded", (
            seen,
            api.get(f"/v1/runs/{run['id']}").json(),
            stack.log_tail(),
        )
        assert "running" in seen and seen.index("running") < seen.index("succeeded")
        epochs = api.get(f"/v1/runs/{run['id']}/epochs").json()["items"]
        assert [e["epoch"] for e in epochs] == [1, 2, 3]
        finished = api.get(f"/v1/runs/{run['id']}").json()
        assert finished["metrics"]["environment"]["tensorflow"]  # recorded for the bundle
        assert all(e["seconds"] > 0 and e["images_per_second"] > 0 for e in epochs)

        queued = api.post(f"/v1/runs/{run['id']}/evaluations", json={"split": "val"})
        assert queued.status_code == 202, queued.text
        eval_id = queued.json()["id"]
        deadline = time.monotonic() + 120
        while (ev := api.get(f"/v1/runs/{run['id']}/evaluations/{eval_id}").json())[
            "status"
        ] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, ev
            time.sleep(0.3)
        assert ev["status"] == "succeeded", (ev, stack.log_tail())
        metrics = ev["metrics"]
        for name in ("accuracy", "precision_macro", "recall_macro", "f1_macro"):
            assert 0.0 <= metrics[name] <= 1.0
        matrix = metrics["confusion_matrix"]
        assert len(matrix) == 3 and sum(map(sum, matrix)) == metrics["n"] == 36
        # Colours are easy: three epochs learn them.
        assert metrics["accuracy"] > 0.6, metrics
        batch_predict(api, stack, run["id"])


def wait_evaluation(api: httpx.Client, path: str, stack: Stack) -> dict:
    deadline = time.monotonic() + 120
    while (ev := api.get(path).json())["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, ev
        time.sleep(0.3)
    assert ev["status"] == "succeeded", (ev, stack.log_tail())
    return ev


def batch_predict(api: httpx.Client, stack: Stack, run_id: str) -> None:
    """Promote the run, predict the whole registered folder with it on the worker, and get
    every metric back from the stored predictions alone."""
    assert api.post("/v1/models", json={"run_id": run_id, "name": "colours"}).status_code == 201
    queued = api.post(
        "/v1/models/colours/versions/1/batch-predictions",
        json={"dataset": "colours", "split": "train"},
    )
    assert queued.status_code == 202, queued.text
    job = wait_evaluation(api, queued.headers["location"], stack)
    assert job["predictions_count"] == job["metrics"]["n"] == 180  # the whole folder
    path = f"{queued.headers['location']}/predictions"

    kept = Predictions.load(io.BytesIO(api.get(path, params={"format": "npz"}).content))
    assert kept.class_names == ["class_0", "class_1", "class_2"]
    # Each id is the image's file in the dataset, lined up with its true label.
    assert sorted(kept.ids) == sorted(
        f"{p.parent.name}/{p.name}" for p in (stack.data_root / "colours").rglob("*.png")
    )
    assert all(
        i.split("/")[0] == kept.class_names[y] for i, y in zip(kept.ids, kept.labels, strict=True)
    )
    recomputed = kept.score()
    assert recomputed == {k: job["metrics"][k] for k in recomputed}
    rescored = api.post(f"{queued.headers['location']}/rescore", json={}).json()
    assert rescored["metrics"] == recomputed

    page = api.get(path, params={"limit": 3, "offset": 10, "top_k": 1}).json()
    assert [row["id"] for row in page["items"]] == kept.ids[10:13]
    for row in page["items"]:
        top = kept.class_names[int(kept.probabilities[row["index"]].argmax())]
        assert row["predictions"][0]["label"] == top
    lines = api.get(path, params={"format": "csv"}).text.splitlines()
    assert len(lines) == 181


@pytest.fixture(scope="module")
def production(postgres_server, redis_server, tmp_path_factory) -> Iterator[Stack]:
    """One production stack for this module's tests on it: starting one (migration, key, API,
    worker) is a third of such a test's time, and each test uses runs and data of its own."""
    if not postgres_server.running:
        postgres_server.start()
    if not redis_server.running:
        redis_server.start()
    database = postgres_server.create_database(f"e2e_{uuid.uuid4().hex[:8]}")
    broker = redis_server.url.rsplit("/", 1)[0] + "/9"
    with production_stack(database, broker, tmp_path_factory.mktemp("production")) as stack:
        yield stack


def test_production_stack_trains_and_evaluates_over_http(production: Stack) -> None:
    train_and_evaluate(production)


def test_embedded_default_trains_and_evaluates_over_http(tmp_path):
    with embedded_stack(tmp_path) as stack:
        train_and_evaluate(stack)


def wait_run(api: httpx.Client, run_id: str, check, *, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.get(f"/v1/runs/{run_id}").json()
        if check(run):
            return run
        time.sleep(0.1)
    raise TimeoutError(f"{what}: {api.get(f'/v1/runs/{run_id}').json()}")


def test_cancel_and_worker_crash_over_http(production: Stack) -> None:
    stack = production
    with stack.client() as api:
        run = {
            "architecture": "resnet8",
            "data": "synthetic:1024:16x16x3:3",
            "batch_size": 32,
            "precision": "float32",
            "tensorboard": False,
        }

        # Cancel: a running run stops within seconds; the worker then takes the next job.
        long = api.post("/v1/runs", json={**run, "epochs": 50}).json()
        wait_run(
            api,
            long["id"],
            lambda r: (r["progress"] or {}).get("batch"),
            timeout=120,
            what="a progress report from the long run",
        )
        asked = time.monotonic()
        assert api.post(f"/v1/runs/{long['id']}/cancel").status_code == 202
        wait_run(
            api, long["id"], lambda r: r["status"] == "cancelled", timeout=15, what="the cancel"
        )
        assert time.monotonic() - asked < 10
        short = api.post("/v1/runs", json={**run, "epochs": 1}).json()
        wait_run(
            api, short["id"], lambda r: r["status"] == "succeeded", timeout=120, what="the next job"
        )

        # Crash: kill -9 the worker after its first epoch; a restarted worker resumes the run.
        crash = api.post("/v1/runs", json={**run, "epochs": 4}).json()
        wait_run(
            api,
            crash["id"],
            lambda r: r["epochs_completed"] >= 1,
            timeout=120,
            what="the first epoch",
        )
        stack.kill("worker")
        before = api.get(f"/v1/runs/{crash['id']}/epochs").json()["items"]
        stack.restart("worker")
        done = wait_run(
            api, crash["id"], lambda r: r["status"] in TERMINAL, timeout=180, what="the resumed run"
        )
        assert done["status"] == "succeeded", (done, stack.log_tail())
        assert done["attempts"] == 2
        epochs = api.get(f"/v1/runs/{crash['id']}/epochs").json()["items"]
        assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
        # Epochs finished before the crash were not trained again: their rows are untouched.
        for old, new in zip(before, epochs, strict=False):
            assert old["recorded_at"] == new["recorded_at"]
