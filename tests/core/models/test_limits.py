"""The bounds on architectures (core.models.limits): one table, checked by the parser, the
builder and the training config, and a size counted from the spec that equals Keras' count."""

import pytest

from core.models import (
    CATALOGUE_NAMES,
    build_model,
    count_flops,
    count_trainable_params,
    parse_architecture,
)
from core.models.limits import LIMITS, check_input_shape, spec_size
from core.training.config import resolve_config


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("resnet20", (32, 32, 3)),
        ("plain20", (28, 28, 1)),
        ("preact_resnet20", (32, 32, 3)),
        pytest.param("preact_resnet164", (32, 32, 3), marks=pytest.mark.slow),
        ("wrn10_2", (24, 20, 3)),
        ("resnext29_2x4d", (32, 32, 3)),
        ("resnet18", (64, 64, 3)),
        pytest.param("resnet50", (96, 96, 3), marks=pytest.mark.slow),
        pytest.param("preact_resnet50", (64, 64, 3), marks=pytest.mark.slow),
    ],
)
def test_size_from_the_spec_equals_the_built_models(name, shape):
    model = build_model(name, input_shape=shape, num_classes=7)
    size = spec_size(parse_architecture(name), input_shape=shape, num_classes=7)
    assert size.params == count_trainable_params(model)
    assert size.macs == count_flops(model)


def test_every_catalogue_architecture_is_within_the_bounds():
    for name in CATALOGUE_NAMES:
        spec = parse_architecture(name)
        assert spec_size(spec).params <= LIMITS.max_params
        assert spec_size(spec, input_shape=spec.default_input_shape).macs <= LIMITS.max_macs


@pytest.mark.parametrize(
    ("name", "bound"),
    [
        ("resnet6000000002", "more than 6 digits"),
        ("wrn28_100000", "widening factor 100000 of 'wrn28_100000' exceeds the limit of 20"),
        ("resnet200000", "depth 200000 of 'resnet200000' exceeds the limit of 2000"),
        ("resnext29_65x4d", "cardinality 65 of 'resnext29_65x4d' exceeds the limit of 64"),
        ("resnext29_64x300d", "group width 300"),
        ("resnext29_64x200d", "parameters: the limit is 150,000,000"),
        ("wrn40_20", "parameters: the limit is 150,000,000"),
        ("resnet٢٠", "digits must be ASCII 0-9"),
        ("wrn٢٨_10", "digits must be ASCII 0-9"),
        ("resnet" + "0" * 80 + "20", "the limit is 64"),
    ],
)
def test_names_beyond_the_bounds_are_refused_naming_the_bound(name, bound):
    with pytest.raises(ValueError) as err:
        parse_architecture(name)
    assert bound in str(err.value)


@pytest.mark.parametrize(
    ("shape", "bound"),
    [
        ((0, 0, 0), "input height 0 is out of bounds"),
        ((100_000, 100_000, 3), "input height 100000 is out of bounds"),
        ((32, 2048, 3), "input width 2048"),
        ((32, 32, 0), "input channels 0"),
        ((32, 32, 5), "input channels 5"),
    ],
)
def test_input_shapes_beyond_the_bounds_are_refused_by_builder_and_config(shape, bound):
    with pytest.raises(ValueError, match=bound):
        check_input_shape(shape)
    with pytest.raises(ValueError, match=bound):
        build_model("resnet20", input_shape=shape)
    with pytest.raises(ValueError, match=bound):
        resolve_config("resnet20", "synthetic:8:8x8x3:2", overrides={"input_shape": list(shape)})


def test_a_wide_net_on_a_large_input_is_refused_for_its_work_per_image():
    with pytest.raises(ValueError, match="multiply-adds per image"):
        resolve_config(
            "wrn28_10", "synthetic:8:8x8x3:2", overrides={"input_shape": [1024, 1024, 3]}
        )
    config = resolve_config(
        "wrn28_10", "synthetic:8:8x8x3:2", overrides={"input_shape": [64, 64, 3]}
    )
    assert config.input_shape == (64, 64, 3)


@pytest.mark.parametrize(
    ("arch", "bound"),
    [
        ("wrn28_100000", "exceeds the limit of 20"),
        ("resnet6000000002", "more than 6 digits"),
        ("resnet٢٠", "digits must be ASCII 0-9"),
    ],
)
def test_the_cli_refuses_names_beyond_the_bounds_before_training(tmp_path, arch, bound):
    from typer.testing import CliRunner

    from core import cli

    out = tmp_path / "run"
    result = CliRunner().invoke(
        cli.app, ["train", arch, "--data", "synthetic:8:8x8x3:2", "--out", str(out)]
    )
    assert result.exit_code == 2
    assert bound in " ".join(result.output.split())  # rich wraps long lines
    assert not out.exists()
