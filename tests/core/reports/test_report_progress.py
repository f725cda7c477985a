"""Live progress and the "behind the curve" flag."""

from __future__ import annotations

import pytest

from core.reports.progress import behind_the_curve, snapshot, twins_of
from tests.core.reports.factory import make_run


def rows(*points: tuple[float, float], val: bool = True) -> list[dict[str, float | int | None]]:
    return [
        {
            "epoch": i,
            "loss": loss,
            "accuracy": acc,
            "val_loss": loss + 0.1 if val else None,
            "val_accuracy": acc - 0.02 if val else None,
        }
        for i, (loss, acc) in enumerate(points, 1)
    ]


def test_twins_share_architecture_data_and_recipe_but_not_the_seed() -> None:
    recipe = {"architecture": "resnet20", "data": "cifar10", "epochs": 10, "batch_size": 128}
    me = make_run("me" * 16, "resnet20", status="running", config={**recipe, "seed": 0})
    twin = make_run("tw" * 16, "resnet20", config={**recipe, "seed": 3, "progress_every": 5})
    other_lr = make_run("lr" * 16, "resnet20", config={**recipe, "batch_size": 64})
    unfinished = make_run("un" * 16, "resnet20", status="failed", config=recipe)
    other_data = make_run("da" * 16, "resnet20", dataset="folder:x", config=recipe)
    found = twins_of(me, [me, twin, other_lr, unfinished, other_data])
    assert [t["id"] for t in found] == ["tw" * 16]


def test_behind_when_accuracy_trails_the_twins() -> None:
    twins = [rows((1.0, 0.60), (0.8, 0.70)), rows((1.1, 0.62), (0.9, 0.72))]
    mine = rows((1.05, 0.61), (1.30, 0.60))
    verdict = behind_the_curve(mine, twins, twin_ids=["t1", "t2"])
    assert verdict is not None and verdict["behind"]
    assert verdict["epoch"] == 2 and verdict["basis"] == "validation"
    assert verdict["expected_accuracy"] == pytest.approx(0.69)
    assert verdict["twins"] == ["t1", "t2"]
    assert len(verdict["reasons"]) == 2  # accuracy and loss


def test_not_behind_within_the_margin_and_training_metrics_without_validation() -> None:
    twins = [rows((1.0, 0.60), val=False)]
    verdict = behind_the_curve(rows((1.05, 0.59), val=False), twins)
    assert verdict is not None and not verdict["behind"] and verdict["basis"] == "training"
    assert verdict["reasons"] == []


def test_nothing_to_compare() -> None:
    assert behind_the_curve([], [rows((1.0, 0.5))]) is None
    assert behind_the_curve(rows((1.0, 0.5)), []) is None
    assert behind_the_curve(rows((1.0, 0.5), (0.9, 0.6)), [rows((1.0, 0.5))]) is None


def test_snapshot_progress_and_eta() -> None:
    run = {
        "status": "running",
        "epochs_planned": 4,
        "progress": {"epoch": 2, "epochs": 4, "fraction": 0.5, "eta_seconds": 30.0, "batch": 5},
    }
    state = snapshot(run, rows((1.0, 0.5)))  # type: ignore[arg-type]
    assert state["fraction"] == pytest.approx(1.5 / 4)
    assert state["eta_seconds"] == 30.0 and state["epochs_completed"] == 1
    assert state["latest"]["epoch"] == 1
    done = snapshot({"status": "succeeded", "epochs_planned": 2}, rows((1.0, 0.5), (0.5, 0.7)))  # type: ignore[arg-type]
    assert done["fraction"] == 1.0 and done["eta_seconds"] is None
