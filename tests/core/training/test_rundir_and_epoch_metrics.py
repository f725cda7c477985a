"""The facts core owns once: the run folder's layout and the epoch metrics."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import get_type_hints

from core.reports.runs import EpochRow
from core.training.hooks import EPOCH_METRICS, EpochRecord
from core.training.rundir import (
    CHECKPOINT_GLOB,
    RESULT_FILES,
    RunDir,
    checkpoint_name,
    is_checkpoint_name,
    predictions_name,
)


def test_the_epoch_metrics_are_the_epoch_records_numbers() -> None:
    assert EPOCH_METRICS == (
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "learning_rate",
        "seconds",
        "images_per_second",
    )
    assert tuple(f.name for f in fields(EpochRecord)) == ("epoch", *EPOCH_METRICS)


def test_a_reports_epoch_row_has_the_same_keys() -> None:
    assert tuple(get_type_hints(EpochRow)) == ("epoch", *EPOCH_METRICS)


def test_the_run_folder_layout(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in (run.model, run.labels)] == [
        "model.keras",
        "labels.json",
    ]
    assert run.state.relative_to(tmp_path).as_posix() == "checkpoints/state.json"
    assert run.checkpoint_for(3).name == checkpoint_name(3) == "epoch-0003.keras"
    assert is_checkpoint_name(checkpoint_name(12)) and not is_checkpoint_name("state.json")
    assert Path(checkpoint_name(7)).match(CHECKPOINT_GLOB)
    assert predictions_name("e1") == "evaluations/e1.npz"
    named = {run.model, run.labels, run.config, run.history, run.metrics}
    assert {tmp_path / f for f in RESULT_FILES} == named
