"""End to end over HTTP, every component a real process: register data, train, evaluate.

Once on the production stack (PostgreSQL, Redis, the API under uvicorn and a Celery worker,
each started with its docker-compose command) and once on the embedded default (`resnet serve`).
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

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


def test_production_stack_trains_and_evaluates_over_http(postgres_server, redis_server, tmp_path):
    if not postgres_server.running:
        postgres_server.start()
    if not redis_server.running:
        redis_server.start()
    database = postgres_server.create_database(f"e2e_{uuid.uuid4().hex[:8]}")
    broker = redis_server.url.rsplit("/", 1)[0] + "/9"
    with production_stack(database, broker, tmp_path) as stack:
        train_and_evaluate(stack)


def test_embedded_default_trains_and_evaluates_over_http(tmp_path):
    with embedded_stack(tmp_path) as stack:
        train_and_evaluate(stack)
