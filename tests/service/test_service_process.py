"""The API process stays free of TensorFlow; the migrate and keys commands work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.records import make_engine, make_sessionmaker
from jobs.records import repository as records

ROOT = Path(__file__).resolve().parents[2]

EXERCISE = """
import sys
from pathlib import Path
from fastapi.testclient import TestClient
from PIL import Image
from jobs.settings import Settings
from service.app import create_app
from service.keys import main as keys

state = Path(sys.argv[1])
folder = state / "data" / "pets"
for cls in ("cat", "dog"):
    (folder / cls).mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (8, 8), (i * 90, 20, 20)).save(folder / cls / f"{i}.png")
settings = Settings(state_dir=state, data_root=state / "data")
client = TestClient(create_app(settings))
headers = {"Authorization": "Bearer " + sys.argv[2]}
assert client.post("/v1/datasets", json={"name": "pets", "kind": "folder", "path": "pets"},
                   headers=headers).status_code == 201
assert client.post("/v1/runs", json={"architecture": "resnet50", "dataset": "pets",
                   "preset": "imagenet-paper", "epochs": 1}, headers=headers).status_code == 202
assert client.post("/v1/runs", json={"architecture": "nope", "data": "cifar10"},
                   headers=headers).status_code == 422
assert client.get("/v1/architectures", headers=headers).status_code == 200
assert client.get("/readyz").status_code == 200
heavy = ("tensorflow", "keras", "jax", "torch", "worker.tasks", "worker.training",
         "core.training.trainer", "core.models.builder")
print(sorted(m for m in heavy if m in sys.modules))
"""


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )


@pytest.mark.slow
def test_migrate_keys_and_an_api_process_without_tensorflow(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {**os.environ, "RESNET_STATE_DIR": str(state), "HOME": str(tmp_path)}
    env.pop("RESNET_DATABASE_URL", None)
    env.pop("RESNET_BROKER_URL", None)

    migrated = run(["-m", "service.migrate"], env)
    assert migrated.returncode == 0, migrated.stderr
    assert (state / "resnet.db").exists()
    assert run(["-m", "service.migrate"], env).returncode == 0  # at head: a no-op

    created = run(
        ["-m", "service.keys", "create", "ci", "--scope", "read", "--scope", "train"], env
    )
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("rsk_") and "\n" not in secret
    engine = make_engine(f"sqlite:///{state / 'resnet.db'}")
    with make_sessionmaker(engine)() as session:
        key = records.authenticate(session, secret)
        assert key is not None and key.scopes == ["read", "train"]
        key_id = key.id
    bad_scope = run(["-m", "service.keys", "create", "x", "--scope", "root"], env)
    assert bad_scope.returncode != 0 and "invalid choice" in bad_scope.stderr
    listed = run(["-m", "service.keys", "list"], env)
    assert key_id in listed.stdout and secret not in listed.stdout

    exercised = run(["-c", EXERCISE, str(state), secret], env)
    assert exercised.returncode == 0, exercised.stderr[-3000:]
    assert exercised.stdout.strip().splitlines()[-1] == "[]"

    assert run(["-m", "service.keys", "revoke", key_id], env).returncode == 0
    with make_sessionmaker(engine)() as session:
        assert records.authenticate(session, secret) is None
    engine.dispose()
