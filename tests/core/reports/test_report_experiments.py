"""Experiment cells (grid, random search, plain twins) and their mean ± std over seeds."""

from __future__ import annotations

import random

import pytest

from core.reports import experiments as ex
from core.training.config import apply_overrides


def test_grid_is_architectures_by_params_by_seeds() -> None:
    grid = {"schedule.base_lr": [0.1, 0.05], "optimizer.weight_decay": [1e-4, 5e-4]}
    cells = ex.expand_grid(["resnet20", "plain20"], [0, 1, 2], grid)
    assert len(cells) == ex.grid_size(["resnet20", "plain20"], [0, 1, 2], grid) == 24
    assert cells[0] == {
        "architecture": "resnet20",
        "seed": 0,
        "params": {"schedule.base_lr": 0.1, "optimizer.weight_decay": 1e-4},
    }
    assert [c["seed"] for c in cells[:3]] == [0, 1, 2]  # seeds vary fastest
    assert len({(c["architecture"], c["seed"], *c["params"].values()) for c in cells}) == 24
    assert ex.expand_grid(["resnet20"], [0], {}) == [
        {"architecture": "resnet20", "seed": 0, "params": {}}
    ]


def test_the_papers_cifar_set_with_plain_twins() -> None:
    names = [f"resnet{d}" for d in (20, 32, 44, 56, 110)]
    assert ex.with_plain_twins(names) == [
        "resnet20",
        "plain20",
        "resnet32",
        "plain32",
        "resnet44",
        "plain44",
        "resnet56",
        "plain56",
        "resnet110",
        "plain110",
    ]
    assert ex.plain_twin("resnet34") == "plain34"
    assert ex.plain_twin("resnet50") is None  # the paper's ImageNet plain nets stop at 34
    assert ex.plain_twin("wrn28_10") is None and ex.plain_twin("nonsense") is None
    assert ex.with_plain_twins(["resnet20", "plain20"]) == ["resnet20", "plain20"]


def test_random_search_is_seeded_and_stays_in_range() -> None:
    space: dict[str, ex.Range] = {
        "schedule.base_lr": {"low": 0.001, "high": 0.5, "log": True},
        "epochs": {"low": 5, "high": 20, "integer": True},
        "batch_size": {"choices": [64, 128]},
    }
    cells = ex.sample_random(["resnet20", "resnet32"], [0, 1], space, trials=10, seed=7)
    assert len(cells) == 40
    assert cells == ex.sample_random(["resnet20", "resnet32"], [0, 1], space, trials=10, seed=7)
    assert cells != ex.sample_random(["resnet20", "resnet32"], [0, 1], space, trials=10, seed=8)
    for c in cells:
        assert 0.001 <= c["params"]["schedule.base_lr"] <= 0.5
        assert isinstance(c["params"]["epochs"], int) and 5 <= c["params"]["epochs"] <= 20
        assert c["params"]["batch_size"] in (64, 128)
    # every architecture gets the same draws, so the architectures are compared fairly
    r20 = [c["params"] for c in cells if c["architecture"] == "resnet20"]
    r32 = [c["params"] for c in cells if c["architecture"] == "resnet32"]
    assert r20 == r32
    lrs = [ex.draw({"low": 1e-4, "high": 1.0, "log": True}, random.Random(i)) for i in range(400)]
    assert sum(v < 1e-2 for v in lrs) > 100  # log-uniform: half the draws below the middle decade


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"low": 0.1, "high": 0.2}, None),
        ({"choices": [1, 2]}, None),
        ({"low": 0.2, "high": 0.1}, "must not exceed"),
        ({"low": 0.0, "high": 1.0, "log": True}, "low > 0"),
        ({"low": "a", "high": 1}, "numbers"),
        ({"choices": []}, "non-empty"),
        ({"choices": [1], "low": 0}, "either"),
        ({"low": 0, "high": 1, "step": 2}, "unknown keys"),
    ],
)
def test_check_range(spec: dict[str, object], problem: str | None) -> None:
    found = ex.check_range(spec)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_param_paths_and_overrides() -> None:
    assert ex.check_param_path("schedule.base_lr") is None
    assert ex.check_param_path("epochs") is None
    assert ex.check_param_path("seed") is not None
    assert ex.check_param_path("architecture") is not None
    assert ex.check_param_path("a.b.c") is not None
    assert ex.check_param_path("bad-name") is not None
    base = {"data": "cifar10", "optimizer": {"momentum": 0.9}, "epochs": 3}
    out = apply_overrides(
        base, {"optimizer.weight_decay": 5e-4, "schedule.base_lr": 0.05, "epochs": 7}
    )
    assert out == {
        "data": "cifar10",
        "optimizer": {"momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"base_lr": 0.05},
        "epochs": 7,
    }
    assert base["optimizer"] == {"momentum": 0.9}  # the base is not changed


def test_aggregate_over_seeds() -> None:
    def cell(
        run: str, arch: str, lr: float, status: str, acc: float | None, secs: float | None
    ) -> dict[str, object]:
        metrics = {"accuracy": acc, "f1_macro": acc} if acc is not None else None
        return {
            "architecture": arch,
            "params": {"schedule.base_lr": lr},
            "run_id": run,
            "status": status,
            "metrics": metrics,
            "train_seconds": secs,
        }

    groups = ex.aggregate(
        [
            cell("r1", "resnet20", 0.1, "succeeded", 0.90, 100.0),
            cell("r2", "resnet20", 0.1, "succeeded", 0.92, 140.0),
            cell("r3", "resnet20", 0.1, "failed", None, None),
            cell("r4", "resnet20", 0.05, "running", None, None),
        ]
    )
    assert len(groups) == 2
    g = groups[0]
    assert g["runs"] == 3 and g["succeeded"] == 2
    assert g["statuses"] == {"succeeded": 2, "failed": 1}
    assert g["accuracy"] == pytest.approx(91.0)
    assert g["accuracy_std"] == pytest.approx(2**0.5)
    assert g["error"] == pytest.approx(9.0)
    assert g["training_time"] == pytest.approx(120.0)
    assert g["run_ids"] == ["r1", "r2", "r3"]
    assert groups[1]["accuracy"] is None and groups[1]["statuses"] == {"running": 1}


@pytest.mark.parametrize(
    ("statuses", "cancelled", "expected"),
    [
        (["queued", "queued"], False, "queued"),
        (["queued", "running"], False, "running"),
        (["succeeded", "queued"], False, "running"),
        (["succeeded", "succeeded"], False, "succeeded"),
        (["succeeded", "failed"], False, "failed"),
        (["succeeded", "cancelled"], True, "cancelled"),
        (["running"], True, "running"),  # cancelled, but a run is still stopping
        (["succeeded", "paused"], False, "running"),  # an adaptive search's trial waits
        (["succeeded", "stopped"], False, "succeeded"),  # stopped early by its search's rule
        (["stopped", "cancelled"], False, "failed"),  # a user's cancel is not the rule's
    ],
)
def test_experiment_status(statuses: list[str], cancelled: bool, expected: str) -> None:
    assert ex.experiment_status(statuses, cancelled=cancelled) == expected
