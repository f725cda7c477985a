"""Where a run's files live: the artifact root, a local folder or any ``tf.io.gfile`` URL.

A run's files are ``<root>/<run_id>/`` in the layout of :class:`core.training.rundir.RunDir`
(``model.keras``, ``labels.json``, ``history.json``, ``metrics.json``, ``checkpoints/``,
``tensorboard/``); the path derives from the run id alone, never from user input.

- A plain path (the default, ``<state_dir>/runs``) is trained into directly.
- A URL (``gs://bucket/runs``, ``s3://…``, ``file:///mnt/shared/runs`` — anything with ``://``
  that ``tf.io.gfile`` opens) is storage shared by workers on many hosts. Training writes to a
  local staging folder (``<state_dir>/staging/<run_id>``); after every epoch the newest
  checkpoint is copied up, so a run whose worker died resumes on any host; when the run
  succeeds the whole folder is copied up and the staging copy removed. Keeping it this simple
  costs one checkpoint upload per epoch and a final copy; nothing streams during an epoch.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.training.rundir import (
    CHECKPOINT_GLOB,
    CHECKPOINTS_DIR,
    LABELS_FILE,
    MODEL_FILE,
    STATE_FILE,
    is_checkpoint_name,
    predictions_name,
)
from jobs.ids import RECORD_ID_RULE, is_record_id
from jobs.records import ArtifactKind
from jobs.settings import Settings
from jobs.storage import is_url

if TYPE_CHECKING:
    from core.training.rundir import RunDir


@dataclass(frozen=True)
class ArtifactFile:
    """A file (or folder) to record: what it is, where it is, and a local copy to hash."""

    kind: ArtifactKind
    uri: str
    local: Path | None  # a regular file to take size and SHA-256 from; None for folders


def _checked(run_id: str) -> str:
    if not is_record_id(run_id):
        raise ValueError(f"Invalid run id: {run_id!r}. Expected {RECORD_ID_RULE}")
    return run_id


class ArtifactStore:
    """The artifact root of a deployment.

    Args:
        root: a folder, or a ``tf.io.gfile`` URL.
        staging: where runs train before their files are copied to a URL root.
    """

    def __init__(self, root: str, *, staging: Path) -> None:
        self.remote = is_url(root)
        self.root = root.rstrip("/") if self.remote else str(Path(root).resolve())
        self.staging = staging

    @classmethod
    def from_settings(cls, settings: Settings) -> ArtifactStore:
        return cls(settings.artifacts, staging=(settings.state_dir / "staging").resolve())

    def run_uri(self, run_id: str) -> str:
        """Where the run's files are published."""
        if self.remote:
            return f"{self.root}/{_checked(run_id)}"
        return str(Path(self.root) / _checked(run_id))

    def workdir(self, run_id: str) -> Path:
        """The local folder training writes to."""
        base = self.staging if self.remote else Path(self.root)
        return base / _checked(run_id)

    def _uri(self, run_id: str, relative: str) -> str:
        return f"{self.run_uri(run_id)}/{relative}"

    def pull_checkpoint(self, run_id: str) -> bool:
        """URL root: fetch the run's newest checkpoint unless the local staging has one.

        Returns:
            Whether a checkpoint was fetched (a run resumed on another host).
        """
        local = _rundir(self.workdir(run_id))
        if not self.remote or local.read_state() is not None:
            return False
        gfile = _gfile()
        remote_state = self._uri(run_id, f"{CHECKPOINTS_DIR}/{STATE_FILE}")
        if not gfile.exists(remote_state):
            return False
        with gfile.GFile(remote_state, "r") as f:
            state = json.loads(f.read())
        local.checkpoints.mkdir(parents=True, exist_ok=True)
        name = Path(state["checkpoint"]).name
        gfile.copy(
            self._uri(run_id, f"{CHECKPOINTS_DIR}/{name}"), str(local.checkpoints / name), True
        )
        # The state last: it names a checkpoint that is already complete.
        gfile.copy(remote_state, str(local.state), True)
        return True

    def push_checkpoint(self, run_id: str) -> None:
        """URL root: copy the newest checkpoint up, then the state naming it; drop older ones."""
        if not self.remote:
            return
        local = _rundir(self.workdir(run_id))
        state = local.read_state()
        if state is None:
            return
        gfile = _gfile()
        folder = self._uri(run_id, CHECKPOINTS_DIR)
        gfile.makedirs(folder)
        name = Path(state["checkpoint"]).name
        gfile.copy(str(local.checkpoints / name), f"{folder}/{name}", True)
        gfile.copy(str(local.state), f"{folder}/{STATE_FILE}", True)
        kept = {p.name for p in local.checkpoints.glob(CHECKPOINT_GLOB)}
        for old in gfile.listdir(folder):
            old = old.rstrip("/")
            if is_checkpoint_name(old) and old not in kept:
                gfile.remove(f"{folder}/{old}")

    def publish(self, run_id: str) -> list[ArtifactFile]:
        """The finished run's files, copied up first for a URL root.

        Returns:
            The model, history, metrics, newest checkpoint and TensorBoard logs, those that
            exist, with their URIs and local copies.
        """
        local = _rundir(self.workdir(run_id))
        candidates: list[tuple[ArtifactKind, Path]] = [
            (ArtifactKind.MODEL, local.model),
            (ArtifactKind.HISTORY, local.history),
            (ArtifactKind.METRICS, local.metrics),
            (ArtifactKind.TENSORBOARD, local.tensorboard),
        ]
        state = local.read_state()
        if state is not None:
            candidates.append((ArtifactKind.CHECKPOINT, local.checkpoints / state["checkpoint"]))
        if self.remote:
            self._upload_tree(local.root, self.run_uri(run_id))
        files = []
        for kind, path in candidates:
            if not path.exists():
                continue
            relative = path.relative_to(local.root).as_posix()
            uri = self._uri(run_id, relative) if self.remote else str(path)
            files.append(ArtifactFile(kind, uri, path if path.is_file() else None))
        return files

    def predictions_uri(self, run_id: str, evaluation_id: str) -> str:
        """Where an evaluation's predictions are kept: ``<run>/evaluations/<id>.npz``."""
        name = predictions_name(_checked(evaluation_id))
        if self.remote:
            return self._uri(run_id, name)
        return str(self.workdir(run_id) / name)

    def discard_staging(self, run_id: str) -> None:
        """URL root: remove the local staging copy of a published run."""
        if self.remote:
            shutil.rmtree(self.workdir(run_id), ignore_errors=True)

    @contextmanager
    def model_file(self, run_id: str) -> Iterator[Path]:
        """The run's ``model.keras`` as a local file, its ``labels.json`` beside it."""
        if not self.remote:
            yield self.workdir(run_id) / MODEL_FILE
            return
        gfile = _gfile()
        with tempfile.TemporaryDirectory(prefix=f"resnet-model-{run_id}-") as tmp:
            for name in (MODEL_FILE, LABELS_FILE):
                source = self._uri(run_id, name)
                if gfile.exists(source):
                    gfile.copy(source, str(Path(tmp) / name), True)
            yield Path(tmp) / MODEL_FILE

    @staticmethod
    def _upload_tree(source: Path, target: str) -> None:
        gfile = _gfile()
        for path in sorted(source.rglob("*")):
            if not path.is_file() or path.name.startswith("."):  # skip half-written temp files
                continue
            destination = f"{target}/{path.relative_to(source).as_posix()}"
            gfile.makedirs(destination.rsplit("/", 1)[0])
            gfile.copy(str(path), destination, True)


def _rundir(path: Path) -> RunDir:
    # core.training imports TensorFlow: only the pool process that trains pays for it.
    from core.training.rundir import RunDir

    return RunDir(path)


def _gfile() -> Any:
    import tensorflow as tf

    return tf.io.gfile
