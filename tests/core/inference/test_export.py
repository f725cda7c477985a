"""SavedModel, ONNX and Keras exports reproduce the Keras model, mixed-precision ones included.

Issue 16: a model trained in mixed bfloat16 went to ONNX with bfloat16 convolutions, which ONNX
Runtime refuses (``InvalidGraph: Type 'tensor(bfloat16)' … of operator (Conv) … is invalid``),
and that error escaped as onnxruntime's own. Exports are now float32 graphs of the same weights,
checked against the Keras model, and every failure is an ``ExportError`` naming the format.

The quick tests use an untrained ResNet-8; the slow ones export tiny runs trained for an epoch
on real CIFAR-10 images (``tests/fixtures/trained.py``), in float32 and in mixed bfloat16, to
every format and run each export in the runtime that serves it, on those images.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from core.inference import (
    ExportError,
    ExportFormat,
    export_keras,
    export_onnx,
    export_run_model,
    export_saved_model,
    float32_model,
    load_keras_model,
    zip_folder,
)
from core.inference.export import (
    MIXED_VERIFY_ATOL,
    ONNX_INPUT,
    ONNX_OUTPUT,
    SAVED_MODEL_INPUT,
    SAVED_MODEL_OUTPUT,
    SERVING_SIGNATURE,
)
from core.inference.float32 import source_precision
from core.models import build_model

SHAPE = (16, 16, 3)
# What the float32 export of the tiny mixed-bfloat16 run meets against that run's own Keras
# model on the 24 real images (measured: 1.4e-3 at most; the export's own check allows
# MIXED_VERIFY_ATOL["mixed_bfloat16"] = 0.05).
MIXED_TEST_ATOL = 5e-3


@pytest.fixture(scope="module")
def model() -> keras.Model:
    model = build_model("resnet8", num_classes=3, input_shape=SHAPE)
    model.get_layer("preprocess").set_statistics(np.full(SHAPE, 120.0))
    return model


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (5, *SHAPE)).astype(np.float32)


# --- an untrained float32 model: quick ------------------------------------------------------


def test_saved_model_matches_keras(model: keras.Model, images: np.ndarray, tmp_path: Path) -> None:
    exported = export_saved_model(model, tmp_path / "saved")
    serve = tf.saved_model.load(str(exported.path)).signatures[SERVING_SIGNATURE]
    assert serve.structured_input_signature[1]["image"].shape.as_list() == [None, *SHAPE]
    got = serve(image=tf.constant(images))[SAVED_MODEL_OUTPUT].numpy()
    want = model(images, training=False).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert exported.trained_precision == "float32" and exported.max_abs_diff is not None
    assert exported.max_abs_diff <= 1e-5


def test_onnx_matches_keras(model: keras.Model, images: np.ndarray, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    exported = export_onnx(model, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [ONNX_INPUT]
    assert [o.name for o in session.get_outputs()] == [ONNX_OUTPUT]
    (got,) = session.run(None, {ONNX_INPUT: images})
    want = model(images, training=False).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_float32_model_is_exported_as_it_is(model: keras.Model) -> None:
    assert float32_model(model) is model and source_precision(model) == "float32"


def test_an_unknown_format_and_a_bad_file_name_are_export_errors(
    model: keras.Model, tmp_path: Path
) -> None:
    from core.inference import export_model

    with pytest.raises(ExportError, match="unknown export format 'tflite'"):
        export_model(model, "tflite", tmp_path / "m.tflite")
    with pytest.raises(ExportError, match=r"Keras export.*must end in \.keras"):
        export_keras(model, tmp_path / "model.h5")


def test_tf2onnx_and_onnxruntime_failures_are_export_errors_naming_onnx(
    model: keras.Model, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    # tf2onnx refuses an opset it does not know (its own ValueError)...
    with pytest.raises(ExportError, match=r"^ONNX export failed writing the export") as info:
        export_onnx(model, tmp_path / "future.onnx", opset=30)
    assert not isinstance(info.value.__cause__, ExportError)
    # ...and writes an opset-1 graph that ONNX Runtime then refuses (onnxruntime's InvalidGraph).
    with pytest.raises(ExportError, match=r"^ONNX export failed loading and running") as info:
        export_onnx(model, tmp_path / "ancient.onnx", opset=1)
    assert "InvalidGraph" in str(info.value)
    assert type(info.value.__cause__).__module__.startswith("onnxruntime")


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_a_mixed_model_becomes_a_float32_twin_with_the_same_weights(
    policy: str, images: np.ndarray
) -> None:
    mixed = build_model("resnet8", num_classes=3, input_shape=SHAPE, dtype_policy=policy)
    mixed.get_layer("preprocess").set_statistics(np.full(SHAPE, 120.0))
    twin = float32_model(mixed)
    assert source_precision(mixed) == policy and source_precision(twin) == "float32"
    assert {layer.dtype_policy.name for layer in twin.layers} == {"float32"}
    assert [w.path for w in twin.weights] == [w.path for w in mixed.weights]
    for a, b in zip(twin.weights, mixed.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The preprocessing statistics travel with the weights: the twin normalises as trained.
    np.testing.assert_array_equal(
        np.asarray(twin.get_layer("preprocess").mean), np.full(SHAPE, 120.0)
    )
    got, want = twin(images).numpy(), mixed(images).numpy()
    assert 0 < float(np.max(np.abs(got - want))) < MIXED_VERIFY_ATOL[policy]


# --- trained runs, real images, every format: slow -------------------------------------------


def run_export(fmt: ExportFormat, base: Path, x: np.ndarray) -> np.ndarray:
    """The export under ``base/1`` run in the runtime that serves it, after checking that its
    graph computes in float32 (no bfloat16 or float16 tensor anywhere in it)."""
    if fmt == ExportFormat.SAVEDMODEL:
        serve = tf.saved_model.load(str(base / "1")).signatures[SERVING_SIGNATURE]
        graph = serve.graph.as_graph_def()
        low = {tf.bfloat16.as_datatype_enum, tf.float16.as_datatype_enum}
        for node in [*graph.node, *(n for f in graph.library.function for n in f.node_def)]:
            for value in node.attr.values():
                assert value.type not in low and not low & set(value.list.type), node.name
        outputs = serve(**{SAVED_MODEL_INPUT: tf.constant(x)})
        assert list(outputs) == [SAVED_MODEL_OUTPUT]
        return np.asarray(outputs[SAVED_MODEL_OUTPUT].numpy())
    if fmt == ExportFormat.ONNX:
        ort = pytest.importorskip("onnxruntime")
        onnx = pytest.importorskip("onnx")
        path = str(base / "1" / "model.onnx")
        inferred = onnx.shape_inference.infer_shapes(onnx.load(path)).graph
        types = {v.type.tensor_type.elem_type for v in inferred.value_info}
        types |= {t.data_type for t in inferred.initializer}
        assert not {onnx.TensorProto.BFLOAT16, onnx.TensorProto.FLOAT16} & types
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return np.asarray(session.run([ONNX_OUTPUT], {ONNX_INPUT: x})[0])
    exported = load_keras_model(base / "1" / "model.keras")
    assert {layer.dtype_policy.name for layer in exported.layers} == {"float32"}
    return np.asarray(exported(x, training=False))


# Every format of both runs; the mixed run's SavedModel goes the whole way, over HTTP into TF
# Serving's layout and through its signature, in tests/service/test_model_exports.py (the same
# export, not repeated here: the suite's time).
EXPORTS = [
    *(("float32", fmt) for fmt in ExportFormat),
    ("mixed_bfloat16", ExportFormat.ONNX),
    ("mixed_bfloat16", ExportFormat.KERAS),
]


@pytest.mark.slow
@pytest.mark.parametrize(("policy", "fmt"), EXPORTS)
def test_trained_runs_export_to_every_format_and_reproduce_the_keras_model(
    policy: str,
    fmt: ExportFormat,
    tiny_run: Callable[[str], Path],
    cifar_images: np.ndarray,
    tmp_path: Path,
) -> None:
    run = tiny_run(policy)
    trained = load_keras_model(run / "model.keras")
    assert source_precision(trained) == policy
    base = tmp_path / "tiny"
    exported = export_run_model(run / "model.keras", fmt, base)
    assert exported.trained_precision == policy

    got = run_export(fmt, base, cifar_images)
    want = np.asarray(float32_model(trained)(cifar_images, training=False))
    np.testing.assert_allclose(got, want, atol=1e-4)  # the float32 graph, in its runtime
    as_trained = np.asarray(trained(cifar_images, training=False))
    diff = float(np.max(np.abs(got - as_trained)))
    if policy == "float32":
        assert diff <= 1e-4
    else:
        assert 0 < diff <= MIXED_TEST_ATOL, diff  # bfloat16's rounding, and no more
    assert (got.argmax(1) == as_trained.argmax(1)).all()

    info = json.loads((base / "export.json").read_text())
    assert info["format"] == fmt.value and info["trained_precision"] == policy
    assert info["compute_precision"] == "float32" and info["input"]["shape"] == [None, 32, 32, 3]
    labels = json.loads((base / "labels.json").read_text())
    assert labels["class_names"] == ["airplane", "automobile", "bird"]

    names = zipfile.ZipFile(zip_folder(base, tmp_path / "tiny.zip")).namelist()
    assert "tiny/export.json" in names and "tiny/labels.json" in names
    assert {n.split("/")[1] for n in names} == {"1", "export.json", "labels.json"}


@pytest.mark.slow
def test_a_version_folder_is_never_overwritten(
    tiny_run: Callable[[str], Path], tmp_path: Path
) -> None:
    (tmp_path / "1").mkdir()
    with pytest.raises(ExportError, match="exists already"):
        export_run_model(tiny_run("float32") / "model.keras", "keras", tmp_path)
    exported = export_run_model(tiny_run("float32") / "model.keras", "keras", tmp_path, version=2)
    assert exported.path == tmp_path / "2" / "model.keras"
