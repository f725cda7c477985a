"""Fine-tuning published weights: discriminative learning rates (the backbone's updates scaled,
the head's not) and a run started from a torchvision weights file (``init_from``)."""

import keras
import numpy as np
import pytest

from core.models import CUSTOM_OBJECTS, build_model
from core.models.weights import WeightsFileError, write_safetensors
from core.training import make_config, train
from core.training.discriminative import (
    DiscriminativeAdam,
    DiscriminativeAdamW,
    DiscriminativeSGD,
)
from tests.fixtures.torchvision import random_layers, to_torchvision


def _one_step(optimizer):
    """One training step of a tiny model; the change of each layer's first weight."""
    keras.utils.set_random_seed(0)
    model = build_model("resnet8", input_shape=(8, 8, 3), num_classes=3)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", run_eagerly=True)
    before = {layer.name: layer.get_weights() for layer in model.layers if layer.trainable_weights}
    x = np.random.default_rng(0).uniform(0, 255, (16, 8, 8, 3)).astype("float32")
    y = np.arange(16) % 3
    model.train_on_batch(x, y)
    return {
        name: model.get_layer(name).get_weights()[0] - weights[0]
        for name, weights in before.items()
    }


@pytest.mark.parametrize(
    ("plain", "scaled"),
    [
        (keras.optimizers.SGD(0.1, momentum=0.9), DiscriminativeSGD(0.1, momentum=0.9,
                                                                    backbone_lr_multiplier=0.1)),
        (keras.optimizers.Adam(0.01), DiscriminativeAdam(0.01, backbone_lr_multiplier=0.1)),
        (keras.optimizers.AdamW(0.01, weight_decay=0.05),
         DiscriminativeAdamW(0.01, decoupled_weight_decay=0.05, backbone_lr_multiplier=0.1)),
    ],
)  # fmt: skip
def test_the_backbones_update_is_scaled_and_the_heads_is_not(plain, scaled):
    full, discriminative = _one_step(plain), _one_step(scaled)
    atol = 1e-3 * np.abs(full["logits"]).max()
    np.testing.assert_allclose(discriminative["logits"], full["logits"], rtol=1e-3, atol=atol)
    for name in ("stem_conv", "stage1_block1_conv1", "stage3_block1_bn2"):
        assert np.abs(full[name]).max() > 0
        # to float32's rounding of a small change to a larger weight
        atol = 1e-3 * np.abs(full[name]).max()
        np.testing.assert_allclose(discriminative[name], 0.1 * full[name], rtol=1e-3, atol=atol)


def test_a_discriminative_optimizer_survives_a_checkpoint(tmp_path):
    model = build_model("resnet8", input_shape=(8, 8, 3), num_classes=3)
    model.compile(optimizer=DiscriminativeSGD(0.1, backbone_lr_multiplier=0.25), loss="mse")
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", custom_objects=CUSTOM_OBJECTS)
    assert isinstance(loaded.optimizer, DiscriminativeSGD)
    assert loaded.optimizer.backbone_lr_multiplier == 0.25
    assert loaded.optimizer.head_layers == ("logits",)
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\]"):
        DiscriminativeSGD(0.1, backbone_lr_multiplier=2.0)


@pytest.mark.slow
def test_a_run_starts_from_torchvision_weights_with_their_layout_and_preprocessing(tmp_path):
    """ResNet-18 from a torchvision state dict, stem to stage 3 frozen, a new 3-class head, the
    backbone at a tenth of the rate: the frozen layers are the file's, the head is new."""
    layers = random_layers("resnet18", num_classes=1000)
    weights = write_safetensors(tmp_path / "r18.safetensors", to_torchvision(layers, [2, 2, 2, 2]))
    options = dict(
        epochs=1, batch_size=16, precision="float32", input_shape=(32, 32, 3), augment="none",
        validation=0.25, tensorboard=False, init_from=str(weights),
        freeze=["stem", "stage1", "stage2", "stage3"], backbone_lr_multiplier=0.1,
    )  # fmt: skip
    data = "synthetic:64:16x16x3:3"
    with pytest.raises(WeightsFileError, match=r"trained with padding='symmetric', .*"):
        train(make_config("resnet18", data, **options), tmp_path / "wrong")
    config = make_config(
        "resnet18", data, padding="symmetric", normalization="per_channel", **options
    )
    result = train(config, tmp_path / "run")
    assert result.status == "completed"
    model = keras.saving.load_model(result.model_path, custom_objects=CUSTOM_OBJECTS)
    for name in ("stem_conv", "stem_bn", "stage1_block1_conv1", "stage3_block2_bn2"):
        for got, want in zip(model.get_layer(name).get_weights(), layers[name], strict=True):
            np.testing.assert_array_equal(got, want)
    assert model.get_layer("logits").get_weights()[0].shape == (512, 3)
    assert not np.array_equal(  # stage 4 trained, from the file's values
        model.get_layer("stage4_block1_conv1").get_weights()[0], layers["stage4_block1_conv1"][0]
    )
    np.testing.assert_allclose(  # torchvision's normalisation, not the data's statistics
        model.get_layer("preprocess").get_weights()[1], [58.395, 57.12, 57.375], rtol=1e-6
    )
    assert model.optimizer.backbone_lr_multiplier == 0.1


def test_the_configs_fine_tuning_options_are_checked():
    from pydantic import ValidationError

    config = make_config("resnet50", "cifar10", stride_in="1x1", padding="symmetric")
    assert (config.spec.stride_in, config.spec.padding) == ("1x1", "symmetric")
    assert make_config("resnet50", "cifar10").model_dump()["stride_in"] == "3x3"
    for options, field in (
        ({"stride_in": "1x1"}, "stride_in"),  # resnet20 has basic blocks
        ({"padding": "reflect"}, "padding"),
        ({"backbone_lr_multiplier": 0.0}, "backbone_lr_multiplier"),
        ({"backbone_lr_multiplier": 1.5}, "backbone_lr_multiplier"),
    ):
        with pytest.raises(ValidationError) as caught:
            make_config("resnet20", "cifar10", **options)
        assert caught.value.errors()[0]["loc"] == (field,), options
