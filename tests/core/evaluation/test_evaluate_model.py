"""evaluate_model / predict_arrays on a tiny ResNet."""

import numpy as np
import pytest
import tensorflow as tf

from core.evaluation import classification_metrics, multilabel_metrics
from core.evaluation.evaluate import evaluate_model, make_forward, predict_arrays
from core.models import build_model

SHAPE = (16, 16, 3)
NAMES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def model():
    return build_model("resnet8", num_classes=3, input_shape=SHAPE)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (21, *SHAPE), dtype=np.uint8)
    labels = rng.integers(0, 3, 21)
    return images, labels


def test_predict_arrays_equals_direct_call(model, data):
    images, _ = data
    got = predict_arrays(model, images, batch_size=8)  # 8 + 8 + 5: a ragged last batch
    want = model(images.astype(np.float32), training=False).numpy()
    assert got.shape == (21, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_predict_arrays_rejects_wrong_size(model):
    with pytest.raises(ValueError, match="shape"):
        predict_arrays(model, np.zeros((2, 8, 8, 3), np.uint8))


def test_forward_traces_once_for_any_batch_size(model):
    forward = make_forward(model)
    for b in (1, 5, 8, 3):
        forward(tf.zeros((b, *SHAPE)))
    assert forward.experimental_get_tracing_count() == 1


def test_evaluate_model_single_label(model, data):
    images, labels = data
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    got = evaluate_model(model, ds, class_names=NAMES)
    want = classification_metrics(labels, predict_arrays(model, images), NAMES)
    for key in ("accuracy", "error", "loss", "f1_macro"):
        assert got[key] == pytest.approx(want[key]), key
    assert got["confusion_matrix"] == want["confusion_matrix"]
    assert got["n"] == 21
    assert got["seconds"] > 0 and got["images_per_second"] > 0
    assert got["ten_crop"] is False


def test_evaluate_model_one_hot_labels_and_steps(model, data):
    images, labels = data
    one_hot = np.eye(3, dtype=np.float32)[labels]
    ds = tf.data.Dataset.from_tensor_slices((images, one_hot)).batch(8)
    got = evaluate_model(model, ds, class_names=NAMES, steps=2)
    want = classification_metrics(labels[:16], predict_arrays(model, images[:16]), NAMES)
    assert got["n"] == 16
    assert got["confusion_matrix"] == want["confusion_matrix"]


def test_evaluate_model_column_of_labels(model, data):
    images, labels = data
    ds = tf.data.Dataset.from_tensor_slices((images, labels[:, None])).batch(8)
    got = evaluate_model(model, ds, class_names=NAMES)
    want = classification_metrics(labels, predict_arrays(model, images), NAMES)
    assert got["loss"] == pytest.approx(want["loss"])
    assert got["confusion_matrix"] == want["confusion_matrix"]


def test_ten_crop_refuses_images_smaller_than_the_model(model):
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((2, 12, 20, 3)), np.array([0, 1]))).batch(2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 16x16"):
        evaluate_model(model, ds, class_names=NAMES, ten_crop=True)


def test_evaluate_model_multi_label(data):
    images, _ = data
    model = build_model("resnet8", num_classes=3, input_shape=SHAPE, multi_label=True)
    y = np.random.default_rng(1).integers(0, 2, (21, 3))
    ds = tf.data.Dataset.from_tensor_slices((images, y)).batch(10)
    got = evaluate_model(model, ds, class_names=NAMES, multi_label=True, threshold=0.4)
    want = multilabel_metrics(y, predict_arrays(model, images), NAMES, threshold=0.4)
    for key in ("mAP", "CP", "CR", "OF1", "subset_accuracy", "loss"):
        assert got[key] == pytest.approx(want[key]), key


def test_ten_crop_averages_corners_centre_and_mirrors(model):
    rng = np.random.default_rng(2)
    big = rng.uniform(0, 255, (2, 20, 22, 3)).astype(np.float32)
    crops = [big[:, :16, :16], big[:, :16, 6:], big[:, 4:, :16], big[:, 4:, 6:], big[:, 2:18, 3:19]]
    crops += [c[:, :, ::-1] for c in crops]
    want = np.mean([model(c, training=False).numpy() for c in crops], axis=0)
    got = make_forward(model, ten_crop=True)(tf.constant(big)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)

    ds = tf.data.Dataset.from_tensor_slices((big, np.array([0, 1]))).batch(2)
    result = evaluate_model(model, ds, class_names=NAMES, ten_crop=True)
    assert result["ten_crop"] is True
    assert result["loss"] == pytest.approx(classification_metrics([0, 1], want, NAMES)["loss"])


def test_evaluate_model_refuses_images_of_another_size(model):
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((2, 20, 20, 3)), np.array([0, 1]))).batch(2)
    with pytest.raises(ValueError, match="ten_crop"):
        evaluate_model(model, ds, class_names=NAMES)
