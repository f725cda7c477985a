"""keras.applications weights into our ResNets: ResNet50(weights=None), randomly initialised
with a fixed seed, saved as Keras saves weights (a Keras 3 ``.weights.h5`` and the named
layout Keras publishes its ImageNet files in), imported, computes the same outputs to 1e-4 on
real images given to both as raw pixels: Keras' model after its own ``preprocess_input``
(BGR, mean subtracted), ours on the RGB pixels.

The conv biases and batch norm statistics, zeros and ones at initialisation, are drawn at random
too: the import folds each bias into its batch norm and the ε difference into the variance, and
with the initial values neither would be tested.
"""

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

from core.models import build_model, parse_architecture
from core.models.weights import WeightsFileError, import_model, open_weights_file
from core.models.weights.importer import apply_weights, read_weights

pytestmark = pytest.mark.slow
SIDE = 64
CLASSES = 10


@pytest.fixture(scope="module")
def images(cifar_images):
    from PIL import Image

    return np.stack([
        np.asarray(Image.fromarray(img.astype(np.uint8)).resize((SIDE, SIDE), Image.BICUBIC))
        for img in cifar_images[::4]
    ]).astype(np.float32)  # fmt: skip


@pytest.fixture(scope="module")
def keras_resnet50(tmp_path_factory, images):
    """The Keras applications model's weight files and its logits on ``images``."""
    keras.utils.set_random_seed(0)
    source = keras.applications.ResNet50(
        weights=None, input_shape=(SIDE, SIDE, 3), classes=CLASSES, classifier_activation=None
    )
    rng = np.random.default_rng(0)
    for layer in source.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape
            layer.set_weights([rng.uniform(0.5, 1.0, c), rng.normal(0, 0.1, c),
                               rng.normal(0, 0.1, c), rng.uniform(0.5, 1.5, c)])  # fmt: skip
        elif isinstance(layer, keras.layers.Conv2D):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape)])
    folder = tmp_path_factory.mktemp("keras-weights")
    source.save_weights(folder / "resnet50.weights.h5")
    with h5py.File(folder / "resnet50_named.h5", "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    preprocessed = keras.applications.resnet.preprocess_input(images.copy())
    return folder, source.predict(preprocessed, verbose=0)


def logits(model, images):
    return keras.Model(model.input, model.get_layer("logits").output).predict(images, verbose=0)


@pytest.mark.parametrize(
    ("file", "layout"),
    [("resnet50.weights.h5", "keras-weights-h5"), ("resnet50_named.h5", "keras-h5")],
)
def test_keras_applications_resnet50_weights_import_to_the_same_outputs(
    keras_resnet50, images, file, layout
):
    folder, expected = keras_resnet50
    weights = open_weights_file(folder / file)
    assert (weights.source, weights.format, weights.head_classes) == ("keras", layout, CLASSES)
    model = import_model(folder / file, "resnet50", input_shape=(SIDE, SIDE, 3))
    # v1: the stride on the first 1×1; the stem pads 3 on every side as Keras' ZeroPadding2D
    assert model.get_layer("stage2_block1_conv1").strides == (2, 2)
    assert model.get_layer("stem_conv_pad").padding == ((3, 3), (3, 3))
    assert model.get_layer("preprocess").mode == "per_channel"
    assert np.abs(expected).max() > 1.0  # not a degenerate net
    np.testing.assert_allclose(logits(model, images), expected, atol=1e-4)
    np.testing.assert_allclose(
        model.predict(images, verbose=0), keras.ops.softmax(expected).numpy(), atol=1e-4
    )


def test_keras_weights_in_the_v1_5_placement_compute_something_else(keras_resnet50, images):
    folder, expected = keras_resnet50
    _, weights = read_weights(
        folder / "resnet50_named.h5",
        parse_architecture("resnet50"),
    )
    v15 = build_model("resnet50", input_shape=(SIDE, SIDE, 3), num_classes=CLASSES,
                      normalization="per_channel", padding="symmetric")  # fmt: skip
    apply_weights(v15, weights)
    v15.get_layer("preprocess").set_statistics(np.array([123.68, 116.779, 103.939]), np.ones(3))
    assert np.abs(logits(v15, images) - expected).max() > 1e-2


def test_a_keras_file_of_another_depth_is_refused(keras_resnet50):
    folder, _ = keras_resnet50
    with pytest.raises(WeightsFileError, match=r"does not fit resnet101: .*tensors missing"):
        import_model(folder / "resnet50_named.h5", "resnet101")
    with pytest.raises(WeightsFileError, match=r"does not fit resnet101: \d+ tensors expected"):
        import_model(folder / "resnet50.weights.h5", "resnet101")
    with pytest.raises(WeightsFileError, match="ResNet50, ResNet101 and ResNet152 only"):
        import_model(folder / "resnet50_named.h5", "resnet18")
