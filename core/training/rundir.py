"""The layout of a run's output folder, written here once. Paths derive from the folder alone.

Everything that names a file of a run (the trainer, the CLI, the predictor, the worker's
artifact store, the API's model cache) takes the name from here::

    <run>/config.json         the validated training config
    <run>/model.keras         the trained model (Keras archive)
    <run>/labels.json         class names and the multi-label flag, beside the model
    <run>/history.json        one record per finished epoch
    <run>/metrics.json        test (or validation) metrics
    <run>/checkpoints/        epoch-0001.keras ... and state.json naming the newest
    <run>/tensorboard/        TensorBoard logs
    <run>/evaluations/        <evaluation id>.npz: stored predictions of each evaluation
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
LABELS_FILE = "labels.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "state.json"  # inside CHECKPOINTS_DIR
TENSORBOARD_DIR = "tensorboard"
EVALUATIONS_DIR = "evaluations"
CHECKPOINT_GLOB = "epoch-*.keras"
# The files a finished run leaves at its top level, in the order the CLI lists them.
RESULT_FILES = (MODEL_FILE, LABELS_FILE, CONFIG_FILE, HISTORY_FILE, METRICS_FILE)


def checkpoint_name(epoch: int) -> str:
    """The file name of the checkpoint written after ``epoch`` (1-based)."""
    return f"epoch-{epoch:04d}.keras"


def is_checkpoint_name(name: str) -> bool:
    """Whether ``name`` is one :func:`checkpoint_name` gives (what the glob matches)."""
    return name.startswith("epoch-") and name.endswith(".keras")


def predictions_name(evaluation_id: str) -> str:
    """Where an evaluation's predictions lie, relative to the run folder."""
    return f"{EVALUATIONS_DIR}/{evaluation_id}.npz"


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    @property
    def state(self) -> Path:
        """Which checkpoint is the latest, the epochs it holds and the history up to it."""
        return self.checkpoints / STATE_FILE

    @property
    def history(self) -> Path:
        return self.root / HISTORY_FILE

    @property
    def model(self) -> Path:
        return self.root / MODEL_FILE

    @property
    def labels(self) -> Path:
        return self.root / LABELS_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD_DIR

    def checkpoint_for(self, epoch: int) -> Path:
        return self.checkpoints / checkpoint_name(epoch)

    def read_state(self) -> dict[str, Any] | None:
        try:
            state: dict[str, Any] = json.loads(self.state.read_text())
            return state
        except FileNotFoundError:
            return None


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=jsonable)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def jsonable(obj: Any) -> Any:
    """``json.dump``'s ``default``: arrays and NumPy scalars as lists/numbers, paths as text."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
