"""Exact resume through the command line (issue 15): a run killed with SIGKILL and continued
with ``resnet train --resume`` ends where the uninterrupted run ends, to the last bit.

Each run is a fresh ``python -m core.cli`` process. The runs train from a saved config.json
(what ``--resume`` continues): the command line has no flag for a step schedule or for
progress after every batch, and the test needs both. The config keeps the paper's CIFAR
augmentation (pad 4, random crop, flip) and drops the learning rate at the end of epoch 2,
after the point the killed runs resume from (the end of epoch 1).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from core.models import CUSTOM_OBJECTS
from core.training import make_config
from core.training.schedules import ResNetSchedule

pytestmark = pytest.mark.slow

EPOCHS = 3
CONFIG = make_config(
    "resnet8",
    "synthetic:256:16x16x3:3",
    epochs=EPOCHS,
    batch_size=16,
    precision="float32",
    augment="cifar",
    schedule={"kind": "step", "base_lr": 0.05, "boundary_epochs": [2], "factor": 0.1},
    validation=0.25,
    progress_every=1,
    tensorboard=False,
)
BATCHES = 12  # 192 training images in batches of 16
RUN_SECONDS = 300


class CliRun:
    """``resnet train --resume --out OUT`` in its own process, its live output collected."""

    def __init__(self, out: Path) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(CONFIG.model_dump(mode="json")))
        # A terminal-like console, so that the progress bar (epoch, batch) reaches the pipe.
        env = {**os.environ, "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "200"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "core.cli", "train", "--resume", "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self._output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        while chunk := os.read(self.process.stdout.fileno(), 65536):
            self._output.extend(chunk)

    @property
    def output(self) -> str:
        return self._output.decode(errors="replace")

    def wait_until(self, condition, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + RUN_SECONDS
        while not condition():
            if self.process.poll() is not None:
                pytest.fail(f"the run ended before {what}:\n{self.output[-3000:]}")
            if time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"no {what} within {RUN_SECONDS}s:\n{self.output[-3000:]}")
            time.sleep(0.01)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=60) == -signal.SIGKILL
        self._reader.join(timeout=10)

    def finish(self) -> None:
        assert self.process.wait(timeout=RUN_SECONDS) == 0, self.output[-3000:]
        self._reader.join(timeout=10)


def _epochs_checkpointed(out: Path) -> int:
    try:
        return int(json.loads((out / "checkpoints" / "state.json").read_text())["epoch"])
    except (FileNotFoundError, ValueError):  # not yet written (writes are atomic)
        return 0


def _in_epoch_2(run: CliRun) -> bool:
    # The bar reads "epoch 2/3 ━━━ 5/12 loss …" once a batch of epoch 2 is done.
    return _epochs_checkpointed(run.out) == 1 and bool(
        re.search(rf"epoch 2/{EPOCHS}[^\r\n]*?\b([1-9]|1[01])/{BATCHES}\b", run.output)
    )


def _history(out: Path) -> list[tuple[float, float, float | None, float]]:
    records = json.loads((out / "history.json").read_text())
    return [(r["loss"], r["accuracy"], r["val_loss"], r["learning_rate"]) for r in records]


def _weights(out: Path) -> list[np.ndarray]:
    custom = {**CUSTOM_OBJECTS, "ResNetSchedule": ResNetSchedule}  # the optimizer's schedule
    model = keras.saving.load_model(out / "model.keras", custom_objects=custom)
    variables = [*model.weights, *model.optimizer.variables]
    return [keras.ops.convert_to_numpy(v) for v in variables]


def _resume(out: Path) -> CliRun:
    run = CliRun(out)
    run.finish()
    assert "epoch 1/" not in run.output  # it continued; it did not start again
    return run


def _assert_same_run(a: Path, b: Path) -> None:
    assert _history(b) == _history(a)  # every digit of every epoch
    wa, wb = _weights(a), _weights(b)
    assert len(wa) == len(wb)
    for x, y in zip(wa, wb, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    CliRun(out).finish()
    history = _history(out)
    assert len(history) == EPOCHS
    # The step schedule drops after epoch 2's last step, after the resume point (the end of
    # epoch 1); a record holds the rate its epoch ends with.
    assert [lr for *_, lr in history] == pytest.approx([0.05, 0.005, 0.005])
    return out


def test_two_uninterrupted_runs_agree_exactly(uninterrupted: Path, tmp_path: Path) -> None:
    """The premise of the others: training is deterministic on this machine."""
    CliRun(tmp_path).finish()
    _assert_same_run(uninterrupted, tmp_path)


def test_sigkill_mid_epoch_then_resume_is_the_uninterrupted_run(
    uninterrupted: Path, tmp_path: Path
) -> None:
    run = CliRun(tmp_path)
    run.wait_until(lambda: _in_epoch_2(run), "batch of epoch 2")
    run.kill()
    assert _epochs_checkpointed(tmp_path) == 1  # killed inside epoch 2
    assert not (tmp_path / "model.keras").exists()
    _resume(tmp_path)
    _assert_same_run(uninterrupted, tmp_path)


def test_sigkill_at_an_epoch_boundary_then_resume_is_the_uninterrupted_run(
    uninterrupted: Path, tmp_path: Path
) -> None:
    run = CliRun(tmp_path)
    run.wait_until(lambda: _epochs_checkpointed(tmp_path) == 1, "checkpoint of epoch 1")
    run.kill()
    assert _epochs_checkpointed(tmp_path) == 1
    _resume(tmp_path)
    _assert_same_run(uninterrupted, tmp_path)
