"""The stride placement (v1 / v1.5) and padding options, and the weight table of a spec
(core.models.layout), which the weight importers and the API's init_from check rely on."""

import keras
import numpy as np
import pytest

from core.models import build_model, count_flops, parse_architecture
from core.models.layout import weight_shapes
from core.models.limits import spec_size


@pytest.mark.parametrize(
    "name",
    [
        "resnet20",
        "plain20",
        "preact_resnet20",
        "wrn10_2",
        "resnext29_2x4d",
        "resnet18",
        pytest.param("resnet50", marks=pytest.mark.slow),
        "preact_resnet18",
        "resnext50_2x4d",
        pytest.param("preact_resnet164", marks=pytest.mark.slow),
    ],
)
def test_the_weight_table_is_the_built_models(name):
    model = build_model(name, num_classes=7, input_shape=(32, 32, 3))
    built = {
        layer.name: [tuple(w.shape) for w in layer.weights]
        for layer in model.layers
        if layer.weights and layer.name != "preprocess"
    }
    assert built == weight_shapes(parse_architecture(name), num_classes=7)
    headless = weight_shapes(parse_architecture(name))
    assert "logits" not in headless and len(headless) == len(built) - 1


@pytest.mark.slow
def test_v1_strides_the_first_1x1_and_does_fewer_multiply_adds():
    v15 = build_model("resnet50", num_classes=1000)
    v1 = build_model("resnet50", num_classes=1000, stride_in="1x1")
    assert v1.get_layer("stage2_block1_conv1").strides == (2, 2)
    assert v1.get_layer("stage2_block1_conv2").strides == (1, 1)
    assert v15.get_layer("stage2_block1_conv1").strides == (1, 1)
    assert v15.get_layer("stage2_block1_conv2").strides == (2, 2)
    # Same weights; v1 runs its first 1×1 on the downsampled grid: 3.86 G against 4.09 G
    # multiply-adds at 224×224 (the paper's "3.8 G" for ResNet-50 is v1's).
    assert v1.count_params() == v15.count_params()
    assert round(count_flops(v1) / 1e9, 2) == 3.86
    assert round(count_flops(v15) / 1e9, 2) == 4.09
    spec = parse_architecture("resnet50").with_layout(stride_in="1x1")
    assert spec_size(spec, input_shape=(224, 224, 3)).macs == count_flops(v1)


@pytest.mark.parametrize(
    ("side", "shifted"), [(64, True), pytest.param(65, False, marks=pytest.mark.slow)]
)
def test_symmetric_padding_keeps_the_shapes_and_shifts_the_grid_of_even_sides(side, shifted):
    """TensorFlow's "same" pads an even side by one pixel more at the bottom than at the top,
    and an odd side (here at every stride) evenly: only even sides see another grid."""
    keras.utils.set_random_seed(0)
    same = build_model("resnet18", input_shape=(side, side, 3), num_classes=5)
    symmetric = build_model(
        "resnet18", input_shape=(side, side, 3), num_classes=5, padding="symmetric"
    )
    for layer in same.layers:
        if layer.weights:
            symmetric.get_layer(layer.name).set_weights(layer.get_weights())
    assert [tuple(layer.output.shape) for layer in same.layers if "pad" not in layer.name] == [
        tuple(layer.output.shape) for layer in symmetric.layers if "pad" not in layer.name
    ]
    assert symmetric.get_layer("stem_conv_pad").padding == ((3, 3), (3, 3))
    assert symmetric.get_layer("stage2_block1_conv1_pad").padding == ((1, 1), (1, 1))
    x = np.random.default_rng(0).uniform(0, 255, (2, side, side, 3)).astype("float32")
    features = [
        keras.Model(m.input, m.get_layer("pool").output).predict(x, verbose=0)
        for m in (same, symmetric)
    ]
    difference = np.abs(features[0] - features[1]).max()
    assert (difference > 1e-3 * np.abs(features[0]).max()) == shifted


def test_the_layout_options_are_checked():
    with pytest.raises(ValueError, match="ImageNet bottleneck nets"):
        parse_architecture("resnet18").with_layout(stride_in="1x1")
    with pytest.raises(ValueError, match="ImageNet bottleneck nets"):
        build_model("resnet20", stride_in="1x1")
    with pytest.raises(ValueError, match="Unknown padding 'valid'"):
        parse_architecture("resnet50").with_layout(padding="valid")
    spec = parse_architecture("resnext50_32x4d").with_layout(stride_in="1x1", padding="symmetric")
    assert (spec.stride_in, spec.padding) == ("1x1", "symmetric")
    assert parse_architecture("resnet50").stride_in == "3x3"  # the default stays v1.5
