"""Architectures: the paper's parameter counts, layer names, shapes and serialisation."""

import keras
import numpy as np
import pytest

from core.models import (
    CATALOGUE_NAMES,
    build_model,
    count_flops,
    count_trainable_params,
    parse_architecture,
)

# He et al. 2016, Table 6 (option A, CIFAR-10): parameters in millions, as printed.
PAPER_CIFAR_PARAMS = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}


@pytest.mark.slow
@pytest.mark.parametrize("depth", sorted(PAPER_CIFAR_PARAMS))
def test_cifar_resnet_params_round_to_the_papers_and_plain_twin_matches(depth):
    resnet = count_trainable_params(build_model(f"resnet{depth}"))
    plain = count_trainable_params(build_model(f"plain{depth}"))
    digits = 1 if depth == 110 else 2
    assert round(resnet / 1e6, digits) == PAPER_CIFAR_PARAMS[depth]
    assert plain == resnet


@pytest.mark.slow
def test_resnet1202_has_19_4m_params_like_its_plain_twin():
    resnet = count_trainable_params(build_model("resnet1202"))
    assert round(resnet / 1e6, 1) == 19.4
    assert count_trainable_params(build_model("plain1202")) == resnet


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet18", 11_689_512),
        ("resnet34", 21_797_672),
        ("resnet50", 25_557_032),
        ("resnet101", 44_549_160),
        ("resnet152", 60_192_808),
        ("resnext50_32x4d", 25_028_904),
    ],
)
def test_imagenet_params_equal_the_reference_v1_5_definition(name, expected):
    assert count_trainable_params(build_model(name, num_classes=1000)) == expected


@pytest.mark.slow
@pytest.mark.parametrize(("name", "millions"), [("wrn28_10", 36.5), ("resnext29_8x64d", 34.4)])
def test_variant_params_match_their_papers(name, millions):
    assert round(count_trainable_params(build_model(name)) / 1e6, 1) == millions


def test_option_b_adds_projection_params_and_plain_imagenet_drops_them():
    a = count_trainable_params(build_model("resnet20", shortcut="A"))
    b = count_trainable_params(build_model("resnet20", shortcut="B"))
    # Two projections: 16→32 and 32→64, each a 1×1 conv and a batch norm.
    assert b - a == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert count_trainable_params(build_model("plain34", num_classes=1000)) < 21_797_672


@pytest.mark.slow
def test_flops_follow_the_papers_convention():
    # Multiply-adds: ResNet-34 3.6 G, ResNet-50 (v1.5) ~4.1 G, ResNet-18 1.8 G.
    assert round(count_flops(build_model("resnet18", num_classes=1000)) / 1e9, 1) == 1.8
    assert round(count_flops(build_model("resnet34", num_classes=1000)) / 1e9, 1) == 3.7
    assert 3.8e9 < count_flops(build_model("resnet50", num_classes=1000)) < 4.2e9
    assert count_flops(build_model("resnet56")) == pytest.approx(1.25e8, rel=0.01)


def test_layer_names_are_hierarchical_and_stable():
    names = [layer.name for layer in build_model("resnet20").layers]
    for expected in (
        "preprocess",
        "stem_conv",
        "stage1_block1_conv1",
        "stage2_block1_shortcut",
        "stage3_block3_add",
        "pool",
        "logits",
        "probabilities",
    ):
        assert expected in names
    assert names == [layer.name for layer in build_model("resnet20").layers]
    assert "stage4_block2_conv3" in [layer.name for layer in build_model("resnet50").layers]


@pytest.mark.parametrize(
    "name",
    [
        "resnet20",
        "plain20",
        "preact_resnet20",
        "wrn10_2",
        "resnext29_2x4d",
        "resnet18",
        "preact_resnet18",
    ],
)
def test_every_family_runs_on_small_grayscale_and_rgb_inputs(name):
    spec = parse_architecture(name)
    shape = (28, 28, 1) if spec.family == "cifar" else (64, 64, 3)
    model = build_model(name, input_shape=shape, num_classes=7)
    out = model(np.random.default_rng(0).uniform(0, 255, (2, *shape)).astype("float32"))
    assert out.shape == (2, 7)
    np.testing.assert_allclose(np.sum(keras.ops.convert_to_numpy(out), axis=1), 1.0, rtol=1e-5)


def test_multi_label_head_is_sigmoid_and_many_classes_work():
    model = build_model("resnet8", input_shape=(16, 16, 3), num_classes=80, multi_label=True)
    out = keras.ops.convert_to_numpy(model(np.zeros((3, 16, 16, 3), "float32")))
    assert out.shape == (3, 80)
    assert not np.allclose(out.sum(axis=1), 1.0)
    assert ((out > 0) & (out < 1)).all()


def test_every_custom_layer_survives_a_keras_round_trip(tmp_path):
    # resnet8 with option A holds both custom layers: Preprocess and ZeroPadShortcut.
    model = build_model(
        "resnet8", input_shape=(16, 16, 3), num_classes=5, normalization="per_pixel_mean"
    )
    layer_types = {type(layer).__name__ for layer in model.layers}
    assert {"Preprocess", "ZeroPadShortcut"} <= layer_types
    rng = np.random.default_rng(1)
    model.get_layer("preprocess").set_statistics(
        rng.uniform(0, 255, (16, 16, 3)), rng.uniform(1, 80, 3)
    )
    x = rng.uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    before = keras.ops.convert_to_numpy(model(x))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)), before)
    assert loaded.get_layer("preprocess").get_config() == model.get_layer("preprocess").get_config()


def test_mixed_precision_keeps_float32_probabilities():
    model = build_model("resnet8", input_shape=(16, 16, 3), dtype_policy="mixed_bfloat16")
    assert model.get_layer("stem_conv").compute_dtype == "bfloat16"
    assert model.get_layer("probabilities").compute_dtype == "float32"


def test_unknown_architecture_error_lists_the_valid_ones():
    with pytest.raises(ValueError, match="Unknown architecture: 'resnet-xl'") as err:
        parse_architecture("resnet-xl")
    assert "resnet20" in str(err.value) and "wrn28_10" in str(err.value)
    with pytest.raises(ValueError, match="6n\\+2"):
        parse_architecture("resnet21")


def test_catalogue_names_all_parse():
    for name in CATALOGUE_NAMES:
        assert parse_architecture(name).name == name
