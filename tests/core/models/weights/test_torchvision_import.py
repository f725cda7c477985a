"""torchvision weights into our ResNets: a state dict in torchvision's names and layouts, as
.safetensors and as a .pth zip, imported, computes what torchvision's model computes.

The state dict is written from our layers' weights by the test's own mapping
(tests/fixtures/torchvision.py); torchvision's forward pass is re-implemented there in NumPy
from PyTorch's definitions. Three things agree: the model the weights came from, torchvision's
forward pass on the state dict, and the imported model.
"""

import keras
import numpy as np
import pytest

from core.models import build_model, parse_architecture
from core.models.weights import WeightsFileError, import_model, open_weights_file, write_safetensors
from tests.fixtures.torchvision import (
    MEAN,
    STD,
    blocks_of,
    random_layers,
    to_torchvision,
    torchvision_logits,
    write_pth,
)

SIDE = 64


@pytest.fixture(scope="module")
def images(cifar_images):
    """Four real CIFAR-10 images, resized up to 64×64 (raw [0, 255] RGB)."""
    from PIL import Image

    return np.stack([
        np.asarray(Image.fromarray(img.astype(np.uint8)).resize((SIDE, SIDE), Image.BICUBIC))
        for img in cifar_images[::6]
    ]).astype(np.float32)  # fmt: skip


def logits(model, images):
    return keras.Model(model.input, model.get_layer("logits").output).predict(images, verbose=0)


def source_model(arch, layers):
    """The model the weights come from: ours, with torchvision's layout and preprocessing."""
    model = build_model(
        arch, input_shape=(SIDE, SIDE, 3), num_classes=10, padding="symmetric",
        normalization="per_channel",
    )  # fmt: skip
    for name, values in layers.items():
        model.get_layer(name).set_weights(values)
    model.get_layer("preprocess").set_statistics(MEAN * 255, STD * 255)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_state_dicts_import_to_the_same_outputs(tmp_path, images, arch):
    layers = random_layers(arch)
    state = to_torchvision(layers, blocks_of(arch))
    expected = logits(source_model(arch, layers), images)
    reference = torchvision_logits(state, images, blocks_of(arch))
    scale = np.abs(reference).max()
    assert scale > 1.0  # not a degenerate net
    np.testing.assert_allclose(expected, reference, atol=1e-4 * scale)

    for path in (
        write_safetensors(tmp_path / f"{arch}.safetensors", state),
        write_pth(tmp_path / f"{arch}.pth", state),
    ):
        model = import_model(path, arch, input_shape=(SIDE, SIDE, 3))
        assert model.get_layer("stage2_block1_conv1_pad" if arch == "resnet18" else "stem_conv_pad")
        np.testing.assert_allclose(logits(model, images), expected, atol=1e-4 * scale)
        np.testing.assert_allclose(
            model.predict(images, verbose=0), keras.ops.softmax(reference).numpy(), atol=1e-4
        )


@pytest.mark.slow
def test_the_same_weights_with_tensorflows_padding_compute_something_else(tmp_path, images):
    layers = random_layers("resnet18")
    reference = torchvision_logits(to_torchvision(layers, [2, 2, 2, 2]), images, [2, 2, 2, 2])
    same = build_model("resnet18", input_shape=(SIDE, SIDE, 3), num_classes=10,
                       normalization="per_channel")  # fmt: skip
    for name, values in layers.items():
        same.get_layer(name).set_weights(values)
    same.get_layer("preprocess").set_statistics(MEAN * 255, STD * 255)
    assert np.abs(logits(same, images) - reference).max() > 1e-2 * np.abs(reference).max()


def test_a_state_dict_of_another_architecture_is_refused_naming_what_differs(tmp_path):
    path = write_safetensors(
        tmp_path / "r18.safetensors", to_torchvision(random_layers("resnet18"), [2, 2, 2, 2])
    )
    file = open_weights_file(path)
    assert (file.source, file.head_classes) == ("torchvision", 10)
    file.check(parse_architecture("resnet18"))
    with pytest.raises(WeightsFileError, match=r"does not fit resnet34: \d+ tensors missing"):
        import_model(path, "resnet34")
    # shapes as the file has them: torchvision's OIHW
    with pytest.raises(
        WeightsFileError, match=r"layer1\.0\.conv1\.weight is 64×64×3×3, expected 64×64×1×1"
    ):
        import_model(path, "resnet50")
    with pytest.raises(WeightsFileError, match="for ImageNet ResNets; 'resnet20' is not one"):
        import_model(path, "resnet20")
    with pytest.raises(WeightsFileError, match="holds torchvision weights, not keras"):
        import_model(path, "resnet18", source="keras")
