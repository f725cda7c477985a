"""The one config path: a preset, dotted-path overrides, and TrainConfig as the only validator."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.training.config import (
    PRESETS,
    TrainConfig,
    apply_overrides,
    dotted_paths,
    make_config,
    override_at,
    resolve_config,
)


def test_dotted_overrides_merge_into_the_preset() -> None:
    config = resolve_config(
        "resnet20",
        "cifar10",
        preset="cifar-paper",
        overrides={"schedule.base_lr": 0.05, "optimizer.nesterov": True, "epochs": 3},
    )
    assert config.epochs == 3
    assert config.schedule.base_lr == 0.05
    assert config.schedule.boundaries == [32_000, 48_000]  # the rest of the preset's schedule
    assert config.optimizer.nesterov and config.optimizer.weight_decay == 1e-4
    assert PRESETS["cifar-paper"]["schedule"]["base_lr"] == 0.1  # the preset is not changed


def test_none_leaves_the_field_as_the_preset_has_it() -> None:
    config = resolve_config(
        "resnet20", "cifar10", preset="cifar-paper", overrides={"epochs": None, "seed": None}
    )
    assert (config.epochs, config.seed) == (182, 0)


def test_make_config_is_the_same_path_with_nested_keywords() -> None:
    nested = make_config("resnet110", "cifar10", preset="cifar-paper", schedule={"base_lr": 0.2})
    dotted = resolve_config(
        "resnet110", "cifar10", preset="cifar-paper", overrides={"schedule.base_lr": 0.2}
    )
    assert nested == dotted
    assert nested.schedule.warmup_steps == 400  # the paper's ResNet-110 warm-up


@pytest.mark.parametrize(
    ("architecture", "preset", "overrides", "loc", "names"),
    [
        ("resnet21", None, {}, ("architecture",), ["resnet20", "resnet56", "wrn28_10"]),
        ("vgg16", None, {}, ("architecture",), ["resnet20", "resnet50"]),
        ("resnet20", "fastest", {}, ("preset",), list(PRESETS)),
        ("resnet20", None, {"precision": "fp8"}, ("precision",), ["float32", "bfloat16"]),
        ("resnet20", None, {"optimizer.name": "lamb"}, ("optimizer", "name"), ["sgd", "adamw"]),
    ],
)
def test_errors_locate_the_field_and_list_the_valid_names(
    architecture: str,
    preset: str | None,
    overrides: dict[str, object],
    loc: tuple[str, ...],
    names: list[str],
) -> None:
    with pytest.raises(ValidationError) as caught:
        resolve_config(architecture, "cifar10", preset=preset, overrides=overrides)
    [error] = caught.value.errors()
    assert error["loc"] == loc
    for name in names:
        assert name in error["msg"], error["msg"]


def test_every_problem_is_reported_at_once_by_path() -> None:
    with pytest.raises(ValidationError) as caught:
        resolve_config(
            "resnet20",
            "cifar10",
            overrides={"schedule.base_lr": -1, "optimizer.nope": 1, "batch_size": 0},
        )
    locs = {error["loc"] for error in caught.value.errors()}
    assert locs == {("schedule", "base_lr"), ("optimizer", "nope"), ("batch_size",)}
    paths = ["schedule.base_lr", "optimizer.nope", "epochs"]
    assert {override_at(loc, paths) for loc in locs} == {"schedule.base_lr", "optimizer.nope", None}


def test_the_override_grammar() -> None:
    nested = {"optimizer": {"momentum": 0.8, "nesterov": True}, "epochs": 3, "freeze": ["stem"]}
    paths = dotted_paths(nested)
    assert paths == {
        "optimizer.momentum": 0.8,
        "optimizer.nesterov": True,
        "epochs": 3,
        "freeze": ["stem"],
    }
    base = {"optimizer": {"name": "adam"}}
    assert apply_overrides(base, paths) == {
        "optimizer": {"name": "adam", "momentum": 0.8, "nesterov": True},
        "epochs": 3,
        "freeze": ["stem"],
    }
    assert base == {"optimizer": {"name": "adam"}}
    assert override_at(("input_shape", 0), ["input_shape"]) == "input_shape"
    assert override_at(("optimizer",), ["optimizer.momentum"]) is None


def test_a_config_dump_names_what_to_train_first_and_round_trips() -> None:
    config = resolve_config("ResNet20", "cifar10", preset="cifar-fast", overrides={"epochs": 2})
    dumped = config.model_dump(mode="json")
    assert list(dumped)[:3] == ["architecture", "data", "preset"]
    assert dumped["architecture"] == "resnet20"
    assert TrainConfig.model_validate(dumped) == config


def test_a_nested_null_clears_the_presets_value():
    """cifar-paper counts its steps in iterations; clearing ``boundaries`` lets
    ``boundary_epochs`` count (schedules use the epochs only when the iterations are None)."""
    config = resolve_config(
        "resnet20",
        "cifar10",
        preset="cifar-paper",
        overrides={"schedule.boundaries": None, "schedule.boundary_epochs": [10, 20]},
    )
    assert config.schedule.boundaries is None
    assert config.schedule.boundary_epochs == [10, 20]
    same = make_config(
        "resnet20", "cifar10", preset="cifar-paper", schedule={"boundaries": None}, epochs=None
    )
    assert same.schedule.boundaries is None and same.epochs == 182
