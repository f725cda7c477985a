"""The engines behind a Predictor (Keras, ONNX Runtime, the SavedModel signature) give the same
answers on real images, ``auto`` keeps the fastest of those that do, and exports are made once.

The models: a ResNet-8 trained for one epoch on 18 real CIFAR-10 JPEGs (``tiny_run``), in float32
and in mixed bfloat16 (whose engines run its float32 twin), and a multi-label ResNet-8 (sigmoid
outputs); the images: the 24 JPEGs of ``tests/fixtures/cifar10-jpeg``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.inference import ModelLoadError, Predictor
from core.inference.engines import AGREE_ATOL, make_engine
from core.inference.float32 import float32_model
from core.inference.predictor import ENGINES_DIR, engine_folder, load_keras_model

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")


def _agree(got: Predictor, want: Predictor, images: np.ndarray, atol: float) -> None:
    p, q = got.probabilities(images), want.probabilities(images)
    assert np.array_equal(p.argmax(1), q.argmax(1))
    assert np.abs(p - q).max() <= atol


@pytest.mark.slow
@pytest.mark.parametrize(
    ("engine", "policy"),
    [("onnx", "float32"), ("onnx", "mixed_bfloat16"), ("savedmodel", "float32")],
)
def test_an_exported_engine_gives_keras_answers_on_real_images(
    tiny_run, cifar_images, engine, policy
):
    model_file = tiny_run(policy) / "model.keras"
    other = Predictor.load(model_file, engine=engine)
    assert other.engine.name == engine
    # Exports run the float32 twin: equal to it to float32 rounding and in every top-1 label;
    # to a mixed model as trained, within bfloat16's rounding.
    twin = Predictor(float32_model(load_keras_model(model_file)))
    _agree(other, twin, cifar_images, AGREE_ATOL)
    if policy != "float32":
        trained = Predictor.load(model_file).probabilities(cifar_images)
        assert np.abs(other.probabilities(cifar_images) - trained).max() <= 0.05
    want = twin.predict_arrays(cifar_images, top_k=3)
    got = other.predict_arrays(cifar_images, top_k=3)
    assert [[p["index"] for p in g] for g in got] == [[p["index"] for p in w] for w in want]


def test_a_multi_label_model_on_onnx_gives_keras_answers(tmp_path, cifar_images):
    import keras

    from core.models import build_model

    keras.utils.set_random_seed(3)
    model = build_model("resnet8", input_shape=(32, 32, 3), num_classes=5, multi_label=True)
    want = Predictor(model, class_names=list("abcde"))
    got = Predictor(model, class_names=list("abcde"), engine="onnx", engine_dir=tmp_path)
    assert got.multi_label and got.engine.name == "onnx"
    _agree(got, want, cifar_images, AGREE_ATOL)
    # the decisions at the threshold, not only the ranking
    decided = got.probabilities(cifar_images) >= 0.5
    assert np.array_equal(decided, want.probabilities(cifar_images) >= 0.5)


@pytest.mark.slow
def test_auto_keeps_the_faster_engine_and_exports_once(tiny_run, cifar_images):
    model_file = tiny_run("float32") / "model.keras"
    first = Predictor.load(model_file, engine="auto", batch_size=16)
    report = first.engine.report
    assert report["chosen"] in ("keras", "onnx") and report["asked"] == "auto"
    assert set(report["ms"]) == {"keras", "onnx"}  # both were timed at batch 1 and 16
    assert all(set(t) == {"1", "16"} for t in report["ms"].values())
    fastest = min(report["ms"], key=lambda n: sum(report["ms"][n].values()))
    assert report["chosen"] == fastest
    (onnx_file,) = (model_file.parent / ENGINES_DIR).glob("*/model.onnx")
    made = onnx_file.stat().st_mtime_ns
    second = Predictor.load(model_file, engine="onnx")  # the export is reused, not made again
    assert onnx_file.stat().st_mtime_ns == made
    _agree(second, Predictor.load(model_file), cifar_images, AGREE_ATOL)


@pytest.mark.slow
def test_an_engine_export_is_named_by_the_model_file_it_came_from(tiny_run, tmp_path):
    model_file = tmp_path / "model.keras"
    model_file.write_bytes((tiny_run("float32") / "model.keras").read_bytes())
    Predictor.load(model_file, engine="onnx")
    (first,) = (tmp_path / ENGINES_DIR).iterdir()
    made = (first / "model.onnx").stat().st_mtime_ns
    # Another model written to the same path gets its own export, never the old one's.
    model_file.write_bytes((tiny_run("mixed_bfloat16") / "model.keras").read_bytes())
    Predictor.load(model_file, engine="onnx")
    folders = sorted((tmp_path / ENGINES_DIR).iterdir())
    assert len(folders) == 2 and first in folders
    assert (first / "model.onnx").stat().st_mtime_ns == made


def test_an_unknown_engine_is_refused_by_name(tiny_run):
    with pytest.raises(ModelLoadError, match=r"unknown engine 'tensorrt'.*auto, keras, onnx"):
        Predictor.load(tiny_run("float32") / "model.keras", engine="tensorrt")


def test_keras_engine_needs_no_export(tmp_path):
    import keras

    from core.models import build_model

    model = build_model("resnet8", input_shape=(16, 16, 3), num_classes=3)
    engine = make_engine(model, (16, 16, 3), engine="keras", cache_dir=tmp_path)
    out = np.asarray(engine.forward(np.zeros((2, 16, 16, 3), np.float32)))
    assert out.shape == (2, 3) and not any(Path(tmp_path).iterdir())
    keras.backend.clear_session()


@pytest.mark.slow
def test_an_export_clears_what_a_killed_export_left_an_hour_ago(tiny_run, tmp_path):
    """A process killed mid-export leaves a full-size staging folder; the next export of that
    engine removes it if it is over an hour old, and leaves a younger one (in progress)."""
    import os
    import time

    model_file = tmp_path / "model.keras"
    model_file.write_bytes((tiny_run("float32") / "model.keras").read_bytes())
    folder = engine_folder(model_file)
    stale, fresh = folder / ".onnx-killed", folder / ".onnx-writing"
    for left in (stale, fresh):
        left.mkdir(parents=True)
        (left / "model.onnx").write_bytes(b"half an export")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    Predictor.load(model_file, engine="onnx")
    assert not stale.exists() and fresh.exists() and (folder / "model.onnx").is_file()
