"""Issue 9, findings 8, 9, 11 and the quota of 10, over HTTP against a real uvicorn server:
runs no worker could build are refused at the door; a run that backs model versions is not
deleted with them; deleting frees the files; train keys change only their own records; per-key
quotas on active runs (429) and stored bytes (507)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from jobs.records import (
    RunStatus,
    make_engine,
    make_sessionmaker,
    session_scope,
    upgrade_to_head,
)
from jobs.records import repository as records
from jobs.records.models import ApiKey, DatasetRecord, ModelVersion
from jobs.settings import Settings
from service.app import create_app
from tests.fixtures.servers import free_port
from tests.service.conftest import make_settings

SYNTHETIC = "synthetic:64:8x8x3:2"


@dataclass
class Live:
    """A uvicorn server on the test's settings, its database, and keys by role."""

    http: httpx.Client
    settings: Settings
    db: sessionmaker[Session]
    key: Callable[..., dict[str, str]]

    def submit(self, headers: dict[str, str], **body: Any) -> httpx.Response:
        return self.http.post(
            "/v1/runs",
            json={"architecture": "resnet20", "data": SYNTHETIC, **body},
            headers=headers,
        )

    def run(self, headers: dict[str, str]) -> str:
        response = self.submit(headers)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def succeeded_run(self, headers: dict[str, str]) -> str:
        """A run of this key that succeeded, with a model file in its folder."""
        run_id = self.run(headers)
        folder = Path(self.settings.artifacts) / run_id
        (folder / "checkpoints").mkdir(parents=True)
        (folder / "model.keras").write_bytes(b"k" * 4096)
        (folder / "checkpoints" / "epoch-1.weights.h5").write_bytes(b"c" * 4096)
        with session_scope(self.db) as session:
            records.claim_run(session, run_id, worker_host="test")
            records.finish_run(session, run_id, status=RunStatus.SUCCEEDED)
            uri = str(folder / "model.keras")
            records.add_artifact(session, run_id, kind="model", uri=uri, path=uri)
        return run_id


def _serve(settings: Settings) -> Iterator[str]:
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def live_factory(tmp_path: Path, _db_at_head: Path) -> Iterator[Callable[..., Live]]:
    opened: list[Iterator[str]] = []
    engines = []
    clients: list[httpx.Client] = []

    def make(**overrides: object) -> Live:
        settings = make_settings(tmp_path, _db_at_head, **overrides)
        serving = _serve(settings)
        opened.append(serving)
        url = next(serving)
        engine = make_engine(settings.db_url)
        engines.append(engine)
        db = make_sessionmaker(engine)

        def key(*scopes: str, name: str) -> dict[str, str]:
            with session_scope(db) as session:
                _, secret = records.create_api_key(session, name, scopes)
            return {"Authorization": f"Bearer {secret}"}

        http = httpx.Client(base_url=url, timeout=60)
        clients.append(http)
        return Live(http=http, settings=settings, db=db, key=key)

    yield make
    for client in clients:
        client.close()
    for serving in opened:
        for _ in serving:  # runs the server's shutdown
            pass
    for engine in engines:
        engine.dispose()


@pytest.fixture
def live(live_factory: Callable[..., Live]) -> Live:
    return live_factory()


def _message(response: httpx.Response) -> str:
    return str(response.json()["error"]["message"])


def _queued(settings: Settings) -> int:
    return len(list((settings.broker_folder / "out").glob("*.msg")))


# --- finding 9: runs no worker can build -----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "bound"),
    [
        ({"architecture": "resnet6000000002"}, "body.architecture", "more than 6 digits"),
        ({"architecture": "wrn28_100000"}, "body.architecture", "exceeds the limit of 20"),
        ({"architecture": "resnet٢٠"}, "body.architecture", "digits must be ASCII 0-9"),
        ({"architecture": "resnext29_64x200d"}, "body.architecture", "the limit is 150,000,000"),
        ({"input_shape": [100000, 100000, 3]}, "body.input_shape", "input height 100000"),
        ({"input_shape": [0, 0, 0]}, "body.input_shape", "input height 0"),
        ({"input_shape": [32, 32, 9]}, "body.input_shape", "input channels 9"),
        (
            {"architecture": "wrn28_10", "input_shape": [1024, 1024, 3]},
            "body",
            "multiply-adds per image",
        ),
    ],
)
def test_runs_no_worker_can_build_are_422_naming_the_bound_and_nothing_is_queued(
    live: Live, body: dict[str, Any], field: str, bound: str
) -> None:
    admin = live.key("admin", name="admin")
    response = live.submit(admin, **body)
    assert response.status_code == 422, response.text
    fields = [d["field"] for d in response.json()["error"]["details"]]
    assert any(f.startswith(field) for f in fields), fields
    assert bound in response.text
    assert live.http.get("/v1/runs", headers=admin).json()["total"] == 0
    assert _queued(live.settings) == 0


def test_an_experiment_cell_beyond_the_bounds_is_422_and_records_nothing(live: Live) -> None:
    admin = live.key("admin", name="admin")
    response = live.http.post(
        "/v1/experiments",
        json={
            "name": "too-wide",
            "architectures": ["resnet20", "wrn28_100000"],
            "seeds": [0],
            "base": {"data": SYNTHETIC},
        },
        headers=admin,
    )
    assert response.status_code == 422, response.text
    assert "wrn28_100000" in _message(response) and "limit of 20" in _message(response)
    assert live.http.get("/v1/runs", headers=admin).json()["total"] == 0


# --- finding 8: deleting a run loses no model; deleting frees the files -----------------------


def test_a_run_backing_model_versions_is_not_deleted_and_deleting_frees_its_files(
    live: Live,
) -> None:
    alice = live.key("train", "read", name="alice")
    run_id = live.succeeded_run(alice)
    folder = Path(live.settings.artifacts) / run_id
    for name in ("cats", "cats", "dogs"):
        promoted = live.http.post(
            "/v1/models", json={"run_id": run_id, "name": name}, headers=alice
        )
        assert promoted.status_code == 201, promoted.text

    refused = live.http.delete(f"/v1/runs/{run_id}", headers=alice)
    assert refused.status_code == 409
    message = _message(refused)
    assert "cats version 1" in message and "cats version 2" in message
    assert "dogs version 1" in message
    listed = live.http.get("/v1/models", headers=alice).json()["items"]
    assert [(m["name"], m["version"]) for m in listed] == [("cats", 2), ("dogs", 1)]
    assert (folder / "model.keras").is_file()

    # the newest of several versions is what a request naming no version gets: not silently
    newest = live.http.delete("/v1/models/cats/versions/2", headers=alice)
    assert newest.status_code == 409 and "version 1 silently" in _message(newest)
    for name, version in (("cats", 1), ("cats", 2), ("dogs", 1)):
        gone = live.http.delete(f"/v1/models/{name}/versions/{version}", headers=alice)
        assert gone.status_code == 204, gone.text
    assert live.http.get("/v1/models/cats/versions/1", headers=alice).status_code == 404
    assert live.http.get("/v1/models", headers=alice).json()["items"] == []
    assert live.http.delete("/v1/models/cats/versions/1", headers=alice).status_code == 404

    assert live.http.delete(f"/v1/runs/{run_id}", headers=alice).status_code == 204
    assert not folder.exists()
    assert live.http.get(f"/v1/runs/{run_id}", headers=alice).status_code == 404

    # numbers are never handed out again, even after the run behind them went
    again = live.succeeded_run(alice)
    promoted = live.http.post("/v1/models", json={"run_id": again, "name": "cats"}, headers=alice)
    assert promoted.json()["version"] == 3


def test_deleting_a_failed_run_frees_its_checkpoints(live: Live) -> None:
    alice = live.key("train", "read", name="alice")
    run_id = live.run(alice)
    folder = Path(live.settings.artifacts) / run_id / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "epoch-1.weights.h5").write_bytes(b"c" * 1000)
    staging = live.settings.state_dir / "staging" / run_id
    staging.mkdir(parents=True)
    (staging / "partial").write_bytes(b"p")
    with session_scope(live.db) as session:
        records.claim_run(session, run_id, worker_host="test")
        records.finish_run(session, run_id, status=RunStatus.FAILED, error="boom")
    assert live.http.delete(f"/v1/runs/{run_id}", headers=alice).status_code == 204
    assert not folder.parent.exists() and not staging.exists()


# --- finding 11: owners ----------------------------------------------------------------------


def test_train_keys_change_only_their_own_admin_anything_read_keys_read_all(
    live: Live, image_folder: Callable[..., Path]
) -> None:
    alice = live.key("train", "read", name="alice")
    bob = live.key("train", "read", name="bob")
    admin = live.key("admin", name="admin")
    reader = live.key("read", name="reader")
    alice_prefix = alice["Authorization"].removeprefix("Bearer ")[:8]

    queued = live.run(alice)
    done = live.succeeded_run(alice)
    second = live.succeeded_run(alice)
    experiment = live.http.post(
        "/v1/experiments",
        json={
            "name": "e",
            "architectures": ["resnet20"],
            "seeds": [0, 1],
            "base": {"data": SYNTHETIC},
        },
        headers=alice,
    )
    assert experiment.status_code == 202, experiment.text
    experiment_id = experiment.json()["id"]
    version = live.http.post("/v1/models", json={"run_id": done, "name": "pets"}, headers=alice)
    assert version.status_code == 201
    live.http.post("/v1/models", json={"run_id": second, "name": "pets"}, headers=alice)

    mutations = [
        ("post", f"/v1/runs/{queued}/cancel", None),
        ("delete", f"/v1/runs/{queued}", None),
        ("post", f"/v1/experiments/{experiment_id}/cancel", None),
        ("post", "/v1/models", {"run_id": done, "name": "stolen"}),
        ("delete", "/v1/models/pets/versions/1", None),
    ]
    for method, path, body in mutations:
        answer = live.http.request(method, path, json=body, headers=bob)
        assert answer.status_code == 403, (path, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "not_owner"
        assert "'alice'" in error["message"] and alice_prefix in error["message"], error
        assert live.http.request(method, path, json=body, headers=reader).status_code == 403
    # nothing changed
    assert live.http.get(f"/v1/runs/{queued}", headers=reader).json()["status"] == "queued"
    assert live.http.get("/v1/models/pets", headers=reader).json()["latest_version"] == 2
    assert live.http.get("/v1/models/stolen", headers=reader).status_code == 404

    # read keys read everything
    for path in (
        f"/v1/runs/{queued}",
        f"/v1/runs/{done}/epochs",
        f"/v1/experiments/{experiment_id}",
        "/v1/models/pets/versions/1",
        "/v1/runs",
        "/v1/experiments",
        "/v1/models",
    ):
        assert live.http.get(path, headers=reader).status_code == 200, path

    # the owner changes its own
    assert live.http.post(f"/v1/runs/{queued}/cancel", headers=alice).status_code == 202
    assert live.http.delete(f"/v1/runs/{queued}", headers=alice).status_code == 204
    own = live.http.post("/v1/models", json={"run_id": done, "name": "mine"}, headers=alice)
    assert own.status_code == 201
    assert live.http.delete("/v1/models/pets/versions/1", headers=alice).status_code == 204
    # an admin changes anyone's
    assert (
        live.http.post(f"/v1/experiments/{experiment_id}/cancel", headers=admin).status_code == 202
    )
    assert (
        live.http.post(
            "/v1/models", json={"run_id": done, "name": "admins"}, headers=admin
        ).status_code
        == 201
    )
    assert live.http.delete("/v1/models/mine/versions/1", headers=admin).status_code == 204
    other = live.run(bob)
    assert live.http.post(f"/v1/runs/{other}/cancel", headers=admin).status_code == 202
    assert live.http.delete(f"/v1/runs/{other}", headers=admin).status_code == 204

    # owners are recorded: datasets and model versions as runs and experiments
    image_folder(live.settings.data_dir / "pets", {"cat": 2, "dog": 2})
    registered = live.http.post(
        "/v1/datasets", json={"name": "pets", "kind": "folder", "path": "pets"}, headers=bob
    )
    assert registered.status_code == 201, registered.text
    with live.db() as session:
        ids = {
            name: session.scalars(select(ApiKey.id).where(ApiKey.name == name)).one()
            for name in ("alice", "bob", "admin")
        }
        dataset = session.scalars(select(DatasetRecord).where(DatasetRecord.name == "pets")).one()
        assert dataset.api_key_id == ids["bob"]
        assert records.get_run(session, done).api_key_id == ids["alice"]
        owners = {(v.name, v.version, v.api_key_id) for v in session.scalars(select(ModelVersion))}
        assert ("pets", 2, ids["alice"]) in owners and ("admins", 1, ids["admin"]) in owners
    assert live.http.get(f"/v1/runs/{done}", headers=reader).json()["owner_key_id"] == ids["alice"]
    answer = live.http.get(f"/v1/experiments/{experiment_id}", headers=reader).json()
    assert answer["owner_key_id"] == ids["alice"]
    answer = live.http.get("/v1/models/admins/versions/1", headers=reader).json()
    assert answer["owner_key_id"] == ids["admin"]


def test_an_upload_is_registered_again_only_by_its_uploader_or_an_admin(
    live: Live, image_folder: Callable[..., Path], tmp_path: Path
) -> None:
    import io
    import zipfile

    alice = live.key("train", "read", name="alice")
    bob = live.key("train", "read", name="bob")
    admin = live.key("admin", name="admin")
    folder = image_folder(tmp_path / "pets", {"cat": 2, "dog": 2})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for file in sorted(folder.rglob("*.png")):
            zf.write(file, file.relative_to(folder).as_posix())
    uploaded = live.http.post(
        "/v1/datasets/upload",
        data={"name": "pets"},
        files={"file": ("pets.zip", buffer.getvalue(), "application/zip")},
        headers=alice,
    )
    assert uploaded.status_code == 201, uploaded.text
    location = uploaded.json()["location"]
    assert location.startswith("uploads/")

    for path in (location, f"{location}/cat", f"./{location}/../data/dog"):
        body = {"name": "copied", "kind": "folder", "path": path}
        refused = live.http.post("/v1/datasets", json=body, headers=bob)
        assert refused.status_code == 403, (path, refused.text)
        assert "'alice'" in _message(refused) and "Upload uploads/" in _message(refused)
    assert live.http.get("/v1/datasets/copied", headers=bob).status_code == 404
    body = {"kind": "folder", "path": location}
    mine = live.http.post("/v1/datasets", json={"name": "cats", **body}, headers=alice)
    assert mine.status_code == 201, mine.text
    theirs = live.http.post("/v1/datasets", json={"name": "dogs", **body}, headers=admin)
    assert theirs.status_code == 201, theirs.text


def test_records_owned_by_no_key_are_changed_by_admin_keys_only(live: Live) -> None:
    """Runs recorded without a key (before owners, or a deleted key) are admin-only."""
    alice = live.key("train", "read", name="alice")
    admin = live.key("admin", name="admin")
    with session_scope(live.db) as session:
        orphan = records.create_run(
            session, architecture="resnet20", dataset=SYNTHETIC, config={"epochs": 1}
        ).id
    refused = live.http.post(f"/v1/runs/{orphan}/cancel", headers=alice)
    assert refused.status_code == 403 and "no key" in _message(refused)
    assert live.http.post(f"/v1/runs/{orphan}/cancel", headers=admin).status_code == 202


# --- finding 10 (quota) ----------------------------------------------------------------------


def test_active_runs_per_key_are_capped_with_429_and_retry_after(
    live_factory: Callable[..., Live],
) -> None:
    live = live_factory(max_active_runs_per_key=3)
    alice = live.key("train", "read", name="alice")
    bob = live.key("train", "read", name="bob")
    first = [live.run(alice) for _ in range(3)]
    over = live.submit(alice)
    assert over.status_code == 429
    assert over.headers["retry-after"].isdigit()
    error = over.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert "3 queued or running" in error["message"]
    assert "RESNET_MAX_ACTIVE_RUNS_PER_KEY" in error["message"]
    # an experiment counts all its runs
    grid = live.http.post(
        "/v1/experiments",
        json={
            "name": "e",
            "architectures": ["resnet20"],
            "seeds": [0, 1, 2, 3],
            "base": {"data": SYNTHETIC},
        },
        headers=bob,
    )
    assert grid.status_code == 429 and "asks for 4 more" in _message(grid)
    assert live.run(bob)  # another key has its own quota
    # a finished or cancelled run frees its place
    assert live.http.post(f"/v1/runs/{first[0]}/cancel", headers=alice).status_code == 202
    assert live.submit(alice).status_code == 202
    with live.db() as session:
        assert records.count_runs_by_status(session)[RunStatus.QUEUED] == 4


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_flood_of_concurrent_submissions_stops_exactly_at_the_quota(
    live_factory: Callable[..., Live], dialect: str, request: pytest.FixtureRequest
) -> None:
    overrides: dict[str, object] = {"max_active_runs_per_key": 5}
    if dialect == "postgresql":
        url = str(request.getfixturevalue("postgres_url"))
        upgrade_to_head(url)
        overrides["database_url"] = url
    live = live_factory(**overrides)
    alice = live.key("train", name="alice")
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: live.submit(alice).status_code, range(24)))
    assert sorted(codes) == [202] * 5 + [429] * 19
    assert _queued(live.settings) == 5


def test_stored_bytes_per_key_are_capped_with_507(live_factory: Callable[..., Live]) -> None:
    live = live_factory(max_stored_bytes_per_key=6000)
    alice = live.key("train", "read", name="alice")
    bob = live.key("train", "read", name="bob")
    run_id = live.succeeded_run(alice)  # keeps 8192 bytes
    full = live.submit(alice)
    assert full.status_code == 507
    assert "8,192 bytes" in _message(full) and "RESNET_MAX_STORED_BYTES_PER_KEY" in _message(full)
    assert live.submit(bob).status_code == 202
    assert live.http.delete(f"/v1/runs/{run_id}", headers=alice).status_code == 204
    assert live.submit(alice).status_code == 202
