"""Learning-rate schedules, presets and config validation."""

import keras
import numpy as np
import pytest
from pydantic import ValidationError

from core.training import PRESETS, ScheduleConfig, make_config
from core.training.schedules import ResNetSchedule, make_schedule


def lr_at(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


def test_paper_step_schedule_divides_by_ten_at_32k_and_48k():
    s = ResNetSchedule("step", 0.1, total_steps=64_000, boundaries=[32_000, 48_000])
    assert lr_at(s, 0) == pytest.approx(0.1)
    assert lr_at(s, 31_999) == pytest.approx(0.1)
    assert lr_at(s, 32_000) == pytest.approx(0.01)
    assert lr_at(s, 48_000) == pytest.approx(0.001)


def test_resnet110_warmup_holds_0_01_for_400_iterations():
    cfg = make_config("resnet110", "cifar10", preset="cifar-paper")
    s = make_schedule(cfg.schedule, steps_per_epoch=352, epochs=cfg.epochs)
    assert lr_at(s, 0) == pytest.approx(0.01)
    assert lr_at(s, 399) == pytest.approx(0.01)
    assert lr_at(s, 400) == pytest.approx(0.1)
    assert make_config("resnet56", "cifar10", preset="cifar-paper").schedule.warmup_steps == 0


def test_epoch_boundaries_become_iterations():
    s = make_schedule(
        ScheduleConfig(kind="step", base_lr=0.1, boundary_epochs=[30, 60]),
        steps_per_epoch=10,
        epochs=90,
    )
    assert lr_at(s, 299) == pytest.approx(0.1)
    assert lr_at(s, 300) == pytest.approx(0.01)
    assert lr_at(s, 600) == pytest.approx(0.001)


def test_cosine_and_onecycle_shapes():
    cos = ResNetSchedule("cosine", 0.2, total_steps=100)
    assert lr_at(cos, 0) == pytest.approx(0.2)
    assert lr_at(cos, 50) == pytest.approx(0.1, rel=1e-4)
    assert lr_at(cos, 100) == pytest.approx(0.0, abs=1e-7)
    one = ResNetSchedule("onecycle", 0.2, total_steps=100)
    lrs = [lr_at(one, i) for i in range(101)]
    assert lrs[0] == pytest.approx(0.2 / 25)
    assert int(np.argmax(lrs)) == 30
    assert lrs[-1] < 1e-3


def test_schedule_survives_serialisation():
    s = ResNetSchedule("step", 0.1, total_steps=100, boundaries=[10], warmup_steps=5)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
    assert [lr_at(again, i) for i in (0, 5, 10)] == [lr_at(s, i) for i in (0, 5, 10)]


def test_presets_hold_the_papers_recipes():
    paper = make_config("resnet20", "cifar10", preset="cifar-paper")
    assert (paper.epochs, paper.batch_size, paper.validation) == (182, 128, 5000)
    assert paper.schedule.boundaries == [32_000, 48_000]
    assert paper.optimizer.weight_decay == 1e-4 and paper.optimizer.momentum == 0.9
    imnet = make_config("resnet50", "imagenet:/data", preset="imagenet-paper")
    assert (imnet.epochs, imnet.batch_size, imnet.schedule.boundary_epochs) == (90, 256, [30, 60])
    assert set(PRESETS) == {"cifar-paper", "cifar-fast", "imagenet-paper", "coco-multilabel"}


def test_overrides_merge_into_the_preset():
    cfg = make_config(
        "resnet20", "cifar10", preset="cifar-paper", epochs=3, optimizer={"nesterov": True}
    )
    assert cfg.epochs == 3 and cfg.optimizer.nesterov and cfg.optimizer.weight_decay == 1e-4


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"architecture": "resnet21"}, "architecture"),
        ({"batch_size": 0}, "batch_size"),
        ({"validation": 1.5}, "validation"),
        ({"freeze": ["stage9"]}, "freeze"),
        ({"schedule": {"boundaries": [10, 5]}}, "boundaries"),
        ({"data": "no-kind-here"}, "data"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
def test_invalid_configs_name_the_field(overrides, field):
    args = {"architecture": "resnet20", "data": "cifar10", **overrides}
    with pytest.raises(ValidationError) as err:
        make_config(args.pop("architecture"), args.pop("data"), **args)
    assert field in str(err.value)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="cifar-fast"):
        make_config("resnet20", "cifar10", preset="fastest")
