"""Live progress (server-sent events and /live), the behind-the-curve flag, and run bundles."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from jobs.records import repository as records
from jobs.records import session_scope
from tests.core.reports.factory import check_png

CONFIG = {"architecture": "resnet20", "data": "cifar10", "epochs": 3, "batch_size": 128}


def epoch(n: int, loss: float, accuracy: float) -> dict[str, float | int]:
    return {
        "epoch": n,
        "loss": loss,
        "accuracy": accuracy,
        "val_loss": loss + 0.1,
        "val_accuracy": accuracy - 0.02,
        "learning_rate": 0.1,
        "seconds": 1.0,
        "images_per_second": 500.0,
    }


def make_twin(db: sessionmaker[Session], seed: int) -> str:
    """A finished run of the same recipe that learned well: loss 1.0 → 0.5, accuracy 0.6 → 0.8."""
    with session_scope(db) as session:
        run = records.create_run(
            session, architecture="resnet20", dataset="cifar10", config={**CONFIG, "seed": seed}
        )
        records.claim_run(session, run.id, worker_host="w")
        for n, (loss, acc) in enumerate([(1.0, 0.6), (0.7, 0.7), (0.5, 0.8)], 1):
            records.record_epoch(session, run.id, epoch(n, loss, acc))
        records.finish_run(session, run.id, status="succeeded", metrics={"accuracy": 0.8})
        return run.id


def start_run(db: sessionmaker[Session], *, config: dict[str, Any] | None = None) -> str:
    with session_scope(db) as session:
        run = records.create_run(
            session,
            architecture="resnet20",
            dataset="cifar10",
            config=config or {**CONFIG, "seed": 9},
        )
        records.claim_run(session, run.id, worker_host="w")
        return run.id


def read_events(lines: Any) -> list[tuple[str, dict[str, Any], str | None]]:
    events, name, event_id, data = [], "message", None, []
    for line in lines:
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            events.append((name, json.loads("\n".join(data)), event_id))
            name, event_id, data = "message", None, []
    return events


class Listener:
    """Passes a stream's lines through, noting what the client has received so far: that it is
    connected, and which epochs a progress event has judged. The fake worker below waits on
    these instead of sleeping, so a slow machine cannot reorder what the test expects."""

    def __init__(self) -> None:
        self.connected = threading.Event()
        self.judged: set[int] = set()
        self._changed = threading.Condition()

    def lines(self, lines: Any) -> Any:
        name = None
        for line in lines:
            self.connected.set()
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:") and name == "progress":
                behind = json.loads(line[5:]).get("behind")
                if behind:
                    with self._changed:
                        self.judged.add(behind["epoch"])
                        self._changed.notify_all()
            yield line

    def wait_judged(self, epoch: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: epoch in self.judged, timeout=60)

    def release(self) -> None:
        self.connected.set()
        with self._changed:
            self.judged.update(range(100))
            self._changed.notify_all()


def test_events_stream_progress_and_epochs_until_the_run_ends(
    client: TestClient, make_key: Callable[..., dict[str, str]], db: sessionmaker[Session]
) -> None:
    twins = [make_twin(db, 1), make_twin(db, 2)]
    run_id = start_run(db)
    with session_scope(db) as session:
        records.update_progress(
            session,
            run_id,
            {
                "epoch": 1,
                "epochs": 3,
                "fraction": 0.5,
                "eta_seconds": 12.0,
                "images_per_second": 480.0,
            },
        )

    listener = Listener()

    def train() -> None:  # what a worker writes while the client listens
        try:
            assert listener.connected.wait(timeout=60)
            time.sleep(0.2)
            for n, (loss, acc) in enumerate([(1.02, 0.6), (1.4, 0.45)], 1):
                with session_scope(db) as session:
                    records.record_epoch(session, run_id, epoch(n, loss, acc))
                    records.update_progress(
                        session,
                        run_id,
                        {"epoch": n + 1, "epochs": 3, "fraction": 0.0, "eta_seconds": 6.0 / n},
                    )
                listener.wait_judged(n)
        finally:  # the stream ends with the run, whatever happened above
            with session_scope(db) as session:
                records.finish_run(session, run_id, status="failed", error="diverged")

    worker = threading.Thread(target=train)
    worker.start()
    try:
        with client.stream(
            "GET", f"/v1/runs/{run_id}/events?interval=0.1", headers=make_key("read")
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = read_events(listener.lines(response.iter_lines()))
    finally:
        listener.release()
        worker.join()
    names = [n for n, _, _ in events]
    assert names[0] == "progress" and names[-1] == "end"
    first = events[0][1]
    assert first["status"] == "running" and first["eta_seconds"] == 12.0
    assert first["fraction"] == pytest.approx(0.5 / 3)
    assert first["images_per_second"] == 480.0
    epochs = [(d["epoch"], i) for n, d, i in events if n == "epoch"]
    assert epochs == [(1, "1"), (2, "2")]
    progress = [d for n, d, _ in events if n == "progress"]
    assert len(progress) >= 3
    # epoch 1 is on the twins' curve; epoch 2 falls behind it
    verdicts = {d["behind"]["epoch"]: d["behind"] for d in progress if d["behind"]}
    assert not verdicts[1]["behind"]
    assert verdicts[2]["behind"] and sorted(verdicts[2]["twins"]) == sorted(twins)
    assert verdicts[2]["basis"] == "validation"
    assert verdicts[2]["expected_accuracy"] == pytest.approx(0.68)
    assert events[-1][1] == {"run_id": run_id, "status": "failed"}
    assert progress[-1]["error"] == "diverged"


def test_reconnecting_resumes_after_the_last_epoch(
    client: TestClient, make_key: Callable[..., dict[str, str]], db: sessionmaker[Session]
) -> None:
    run_id = start_run(db)
    with session_scope(db) as session:
        for n in (1, 2, 3):
            records.record_epoch(session, run_id, epoch(n, 1.0 / n, 0.5))
        records.finish_run(session, run_id, status="succeeded")
    headers = {**make_key("read"), "Last-Event-ID": "2"}
    response = client.get(f"/v1/runs/{run_id}/events", headers=headers)
    events = read_events(response.text.splitlines())
    assert [(n, d.get("epoch")) for n, d, _ in events] == [
        ("epoch", 3),
        ("progress", None),
        ("end", None),
    ]
    assert "retry: 3000" in response.text


def test_live_state_for_polling_clients(
    client: TestClient, make_key: Callable[..., dict[str, str]], db: sessionmaker[Session]
) -> None:
    make_twin(db, 1)
    other_recipe = start_run(db, config={**CONFIG, "batch_size": 64})
    with session_scope(db) as session:
        records.record_epoch(session, other_recipe, epoch(1, 3.0, 0.1))
    reader = make_key("read")
    state = client.get(f"/v1/runs/{other_recipe}/live", headers=reader).json()
    assert state["behind"] is None  # no twin with this recipe: nothing to compare
    assert [e["epoch"] for e in state["epochs"]] == [1]
    run_id = start_run(db)
    with session_scope(db) as session:
        records.record_epoch(session, run_id, epoch(1, 3.0, 0.1))
    state = client.get(f"/v1/runs/{run_id}/live", headers=reader).json()
    assert state["behind"]["behind"] is True
    assert len(state["behind"]["reasons"]) == 2


def test_missing_runs_and_scopes(
    client: TestClient, make_key: Callable[..., dict[str, str]]
) -> None:
    missing = "0" * 32
    reader = make_key("read")
    for path in ("events", "live", "bundle"):
        response = client.get(f"/v1/runs/{missing}/{path}", headers=reader)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]["code"] == "not_found"
        assert client.get(f"/v1/runs/{missing}/{path}").status_code == 401
        assert (
            client.get(f"/v1/runs/{missing}/{path}", headers=make_key("train")).status_code == 403
        )
    bad = client.get(f"/v1/runs/{missing}/events?interval=0", headers=reader)
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "query.interval"


def test_run_bundle(
    client: TestClient, make_key: Callable[..., dict[str, str]], db: sessionmaker[Session]
) -> None:
    run_id = make_twin(db, 4)
    response = client.get(f"/v1/runs/{run_id}/bundle", headers=make_key("read"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert f"run-{run_id}.zip" in response.headers["content-disposition"]
    zf = zipfile.ZipFile(io.BytesIO(response.content))
    assert json.loads(zf.read("config.json"))["seed"] == 4
    assert json.loads(zf.read("run.json"))["status"] == "succeeded"
    assert zf.read("history.csv").decode().count("\n") == 4  # header and three epochs
    environment = json.loads(zf.read("environment.json"))
    assert environment["source"] == "api" and "keras" in environment["packages"]
    check_png(zf.read("figures/curves.png"))
