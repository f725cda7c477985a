"""SavedModel and ONNX exports reproduce the Keras model."""

import numpy as np
import pytest
import tensorflow as tf

from core.inference import ExportError, export_onnx, export_saved_model
from core.inference.export import ONNX_INPUT, ONNX_OUTPUT, SERVING_SIGNATURE
from core.models import build_model

SHAPE = (16, 16, 3)


@pytest.fixture(scope="module")
def model():
    model = build_model("resnet8", num_classes=3, input_shape=SHAPE)
    model.get_layer("preprocess").set_statistics(np.full(SHAPE, 120.0))
    return model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, (5, *SHAPE)).astype(np.float32)


def test_saved_model_matches_keras(model, images, tmp_path):
    out = export_saved_model(model, tmp_path / "saved")
    serve = tf.saved_model.load(str(out)).signatures[SERVING_SIGNATURE]
    assert serve.structured_input_signature[1]["image"].shape.as_list() == [None, *SHAPE]
    got = serve(image=tf.constant(images))["output_0"].numpy()
    want = model(images, training=False).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_onnx_matches_keras(model, images, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    try:
        path = export_onnx(model, tmp_path / "model.onnx")
    except ExportError as exc:
        if "needs tf2onnx" in str(exc):
            pytest.skip(str(exc))
        raise
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [ONNX_INPUT]
    assert [o.name for o in session.get_outputs()] == [ONNX_OUTPUT]
    (got,) = session.run(None, {ONNX_INPUT: images})
    want = model(images, training=False).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
