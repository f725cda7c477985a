"""The artifact store (a local folder or a tf.io.gfile URL as root) and small worker helpers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel, Field

from jobs.ids import new_id
from jobs.records import ArtifactKind
from worker.artifacts import ArtifactStore
from worker.runtime import describe_error, jsonable

RUN = "0123456789abcdef0123456789abcdef"


def _fake_run(folder: Path, epoch: int) -> None:
    """A run folder as the trainer leaves it after ``epoch`` (contents are placeholders)."""
    checkpoints = folder / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    for old in checkpoints.glob("epoch-*.keras"):
        old.unlink()
    name = f"epoch-{epoch:04d}.keras"
    (checkpoints / name).write_bytes(f"weights after epoch {epoch}".encode())
    (checkpoints / "state.json").write_text(json.dumps({"epoch": epoch, "checkpoint": name}))


def test_local_root_trains_in_place(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "runs"), staging=tmp_path / "staging")
    assert not store.remote
    assert store.workdir(RUN) == tmp_path / "runs" / RUN
    assert store.run_uri(RUN) == str(tmp_path / "runs" / RUN)
    _fake_run(store.workdir(RUN), 2)
    (store.workdir(RUN) / "model.keras").write_bytes(b"model")
    (store.workdir(RUN) / "history.json").write_text("[]")
    files = {f.kind: f for f in store.publish(RUN)}
    assert set(files) == {ArtifactKind.MODEL, ArtifactKind.HISTORY, ArtifactKind.CHECKPOINT}
    assert files[ArtifactKind.CHECKPOINT].uri == str(
        tmp_path / "runs" / RUN / "checkpoints" / "epoch-0002.keras"
    )
    assert files[ArtifactKind.MODEL].local == tmp_path / "runs" / RUN / "model.keras"


@pytest.mark.parametrize("run_id", ["../x", "a/b", "", "x" * 65, "run id"])
def test_paths_derive_from_safe_run_ids_only(tmp_path: Path, run_id: str) -> None:
    store = ArtifactStore(str(tmp_path), staging=tmp_path)
    with pytest.raises(ValueError, match="Invalid run id"):
        store.workdir(run_id)


def test_url_root_resumes_on_another_host(tmp_path: Path) -> None:
    """Checkpoints go up every epoch; a worker elsewhere (empty staging) brings the last down."""
    shared = tmp_path / "bucket"
    first = ArtifactStore(f"file://{shared}", staging=tmp_path / "host-a")
    assert first.remote and first.workdir(RUN) == tmp_path / "host-a" / RUN
    for epoch in (1, 2):
        _fake_run(first.workdir(RUN), epoch)
        first.push_checkpoint(RUN)
    remote = shared / RUN / "checkpoints"
    assert sorted(p.name for p in remote.iterdir()) == ["epoch-0002.keras", "state.json"]

    second = ArtifactStore(f"file://{shared}", staging=tmp_path / "host-b")
    assert second.pull_checkpoint(RUN)
    local = second.workdir(RUN) / "checkpoints"
    assert json.loads((local / "state.json").read_text())["epoch"] == 2
    assert (local / "epoch-0002.keras").read_bytes() == b"weights after epoch 2"
    assert not second.pull_checkpoint(RUN)  # it has one now: nothing fetched

    (second.workdir(RUN) / "model.keras").write_bytes(b"model")
    (second.workdir(RUN) / "labels.json").write_text('{"class_names": ["a"]}')
    files = {f.kind: f for f in second.publish(RUN)}
    assert files[ArtifactKind.MODEL].uri == f"file://{shared}/{RUN}/model.keras"
    assert (shared / RUN / "labels.json").is_file()
    with second.model_file(RUN) as path:
        assert path.read_bytes() == b"model" and (path.parent / "labels.json").is_file()
        assert not path.is_relative_to(tmp_path)  # a temporary copy
    second.discard_staging(RUN)
    assert not second.workdir(RUN).exists()


def test_describe_error_names_type_and_fields() -> None:
    class Config(BaseModel):
        epochs: int = Field(ge=1)

    try:
        Config(epochs=0)
    except Exception as exc:
        assert describe_error(exc).startswith("ValidationError: epochs: Input should be greater")
    assert describe_error(KeyError("x")) == "KeyError: 'x'"
    long = describe_error(RuntimeError("x" * 5000))
    assert len(long) == 2000 and long.startswith("RuntimeError: xxx") and long.endswith("…")


def test_jsonable_makes_strict_json() -> None:
    value = {"a": float("nan"), "b": [np.float32(1.5), np.int64(2), math.inf], "c": np.eye(2)}
    assert jsonable(value) == {"a": None, "b": [1.5, 2, None], "c": [[1.0, 0.0], [0.0, 1.0]]}
    json.dumps(jsonable(value), allow_nan=False)


def test_the_artifact_store_takes_record_ids_only(tmp_path: Path) -> None:
    # It once had its own, looser "run id" under the same name; now it is the records' one.
    store = ArtifactStore(str(tmp_path), staging=tmp_path)
    run_id = new_id()
    assert store.workdir(run_id) == tmp_path.resolve() / run_id
    with pytest.raises(ValueError, match="Invalid run id"):
        store.workdir("run_1")
