"""Predictor: safe .keras loading, sidecar labels, array and encoded-image prediction."""

import io
import json

import keras
import numpy as np
import pytest
from PIL import Image

from core.images import ImageDecodeError, decode_image, resize_for_model
from core.inference import ModelLoadError, Predictor
from core.models import build_model

SHAPE = (16, 16, 3)
NAMES = ["cat", "dog", "bird"]


def _tiny(*, multi_label: bool = False, shape: tuple[int, int, int] = SHAPE) -> keras.Model:
    model = build_model("resnet8", num_classes=3, input_shape=shape, multi_label=multi_label)
    rng = np.random.default_rng(0)
    model.get_layer("preprocess").set_statistics(rng.uniform(100, 150, shape))
    return model


def _fixed_output(model: keras.Model, bias: list[float]) -> keras.Model:
    """Make the head ignore its input: probabilities = activation(bias)."""
    logits = model.get_layer("logits")
    kernel, _ = logits.get_weights()
    logits.set_weights([np.zeros_like(kernel), np.array(bias, np.float32)])
    return model


def _save(model: keras.Model, directory, labels: dict | None = None):
    path = directory / "model.keras"
    model.save(path)
    if labels is not None:
        (directory / "labels.json").write_text(json.dumps(labels))
    return path


def _encode(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _images(n: int, h: int = 16, w: int = 16, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    model = _tiny()
    path = _save(model, directory, {"class_names": NAMES, "multi_label": False})
    return model, path


@pytest.fixture(scope="module")
def predictor(saved):
    return Predictor.load(saved[1])


def test_keras_round_trip_matches_the_model(saved, predictor):
    model, _ = saved
    images = _images(5)
    want = model(images.astype(np.float32), training=False).numpy()
    got = predictor.probabilities(images)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert predictor.class_names == NAMES and predictor.multi_label is False
    assert predictor.input_shape == SHAPE and predictor.resize_policy == "direct"


def test_repeated_calls_do_not_retrace(predictor):
    small = Predictor(predictor.model, batch_size=4)
    for n in (1, 3, 4, 9):  # 9 runs as 4 + 4 + 1
        assert small.probabilities(_images(n)).shape == (n, 3)
    assert small._forward.experimental_get_tracing_count() == 1


def test_predict_arrays_top_k_sorted(tmp_path):
    model = _fixed_output(_tiny(), [0.0, 2.0, 1.0])
    predictor = Predictor(model, class_names=NAMES)
    [top2] = predictor.predict_arrays(_images(1), top_k=2)
    assert [p["label"] for p in top2] == ["dog", "bird"]
    assert [p["index"] for p in top2] == [1, 2]
    e = np.exp([0.0, 2.0, 1.0])
    assert top2[0]["probability"] == pytest.approx(e[1] / e.sum(), abs=1e-6)
    [everything] = predictor.predict_arrays(_images(1), top_k=10)
    assert len(everything) == 3
    with pytest.raises(ValueError, match="top_k"):
        predictor.predict_arrays(_images(1), top_k=0)


def test_predict_arrays_accepts_lists_of_any_size(predictor):
    rng = np.random.default_rng(3)
    big = rng.integers(0, 256, (40, 24, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (20, 20), dtype=np.uint8)
    exact = _images(1)[0]
    got = predictor.predict_arrays([big, grey, exact, exact.astype(np.float32)])
    assert len(got) == 4 and all(len(p) == 3 for p in got)
    want = predictor.probabilities(resize_for_model(big, SHAPE, "direct")[None])[0]
    assert [p["probability"] for p in got[0]] == pytest.approx(sorted(want, reverse=True), abs=1e-6)
    _assert_same_ranking(got[2], got[3])  # one image as uint8 and as float32: same answer
    assert predictor.predict_arrays([]) == []


def test_predict_bytes_png_and_jpeg(predictor):
    img = _images(1, seed=4)[0]
    png, jpeg = _encode(img, "PNG"), _encode(np.repeat(np.repeat(img, 3, 0), 2, 1), "JPEG")
    got = predictor.predict_bytes([png, jpeg], top_k=3)
    # PNG is lossless: the same as predicting the array itself.
    _assert_same_ranking(got[0], predictor.predict_arrays(img[None], top_k=3)[0])
    # JPEG (48×32): decoded and resized exactly as the training/eval path does.
    resized = resize_for_model(decode_image(jpeg), SHAPE, "direct")
    _assert_same_ranking(got[1], predictor.predict_arrays(resized[None], top_k=3)[0])


def _assert_same_ranking(got: list[dict], want: list[dict]) -> None:
    """Same labels in the same order, probabilities equal to float32 rounding: a batch of two
    and a batch of one may run different oneDNN kernels (seen: 6e-8 apart)."""
    assert [(p["label"], p["index"]) for p in got] == [(p["label"], p["index"]) for p in want]
    assert [p["probability"] for p in got] == pytest.approx(
        [p["probability"] for p in want], abs=1e-6
    )


def test_predict_bytes_reports_which_image_is_bad(predictor):
    png = _encode(_images(1)[0], "PNG")
    with pytest.raises(ImageDecodeError, match="image 1"):
        predictor.predict_bytes([png, b"not an image"])


def test_predict_bytes_uses_the_model_channels_and_resize_policy():
    model = _tiny(shape=(16, 16, 1))
    model.get_layer("preprocess").resize = "crop"
    predictor = Predictor(model)
    rgb = np.random.default_rng(5).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    [got] = predictor.predict_bytes([_encode(rgb, "PNG")], top_k=3)
    grey = decode_image(_encode(rgb, "PNG"), channels=1)
    want = predictor.probabilities(resize_for_model(grey, (16, 16, 1), "crop")[None])[0]
    assert [p["probability"] for p in sorted(got, key=lambda p: p["index"])] == pytest.approx(
        want.tolist(), abs=1e-6
    )
    assert predictor.class_names == ["0", "1", "2"]


def test_multi_label_threshold(tmp_path):
    # sigmoid(2) ≈ 0.881, sigmoid(0.1) ≈ 0.525, sigmoid(-2) ≈ 0.119
    model = _fixed_output(_tiny(multi_label=True), [0.1, 2.0, -2.0])
    path = _save(model, tmp_path, {"class_names": NAMES, "multi_label": True})
    predictor = Predictor.load(path)
    assert predictor.multi_label is True
    [default] = predictor.predict_arrays(_images(1))
    assert [p["label"] for p in default] == ["dog", "cat"]  # >= 0.5, best first
    [strict] = predictor.predict_arrays(_images(1), threshold=0.6)
    assert [p["label"] for p in strict] == ["dog"]
    assert predictor.predict_arrays(_images(1), threshold=0.95) == [[]]
    high = Predictor.load(path, threshold=0.1)
    assert len(high.predict_arrays(_images(1), top_k=1)[0]) == 3  # top_k is single-label only
    assert Predictor(model).multi_label is True  # inferred from the sigmoid head


def test_sidecar_is_optional_and_explicit_names_win(saved, tmp_path):
    model, _ = saved
    path = _save(model, tmp_path)
    assert Predictor.load(path).class_names == ["0", "1", "2"]
    assert Predictor.load(path, class_names=["x", "y", "z"]).class_names == ["x", "y", "z"]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"class_names": ["a", "b"]}, "3 outputs but 2"),
        ({"class_names": NAMES, "multi_label": True}, "contradicts"),
        ({"class_names": NAMES, "multi_label": "yes"}, "true or false"),
        (["a", "b", "c"], "JSON object"),
    ],
)
def test_bad_sidecar_is_refused(saved, tmp_path, labels, message):
    path = _save(saved[0], tmp_path, labels)
    with pytest.raises(ModelLoadError, match=message):
        Predictor.load(path)


def test_h5_and_other_suffixes_are_refused(saved, tmp_path):
    model, _ = saved
    h5 = tmp_path / "model.h5"
    model.save(h5)  # a real legacy HDF5 file
    with pytest.raises(ModelLoadError, match="HDF5"):
        Predictor.load(h5)
    for name in ("model.hdf5", "model.pb", "model"):
        (tmp_path / name).write_bytes(b"x")
        with pytest.raises(ModelLoadError, match=r"HDF5|\.keras"):
            Predictor.load(tmp_path / name)
    # An HDF5 file renamed to .keras is no .keras archive.
    disguised = tmp_path / "disguised.keras"
    disguised.write_bytes(h5.read_bytes())
    with pytest.raises(ModelLoadError, match=r"not a valid \.keras archive"):
        Predictor.load(disguised)
    with pytest.raises(ModelLoadError, match="not found"):
        Predictor.load(tmp_path / "missing.keras")


def test_lambda_layer_is_refused(tmp_path):
    inputs = keras.Input(SHAPE)
    x = keras.layers.Lambda(lambda t: t / 255.0, name="scale")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(
        inputs, keras.layers.Dense(3, activation="softmax", name="probabilities")(x)
    )
    path = tmp_path / "model.keras"
    model.save(path)
    with pytest.raises(ModelLoadError, match=r"Lambda layer.*scale"):
        Predictor.load(path)
    # Nested inside another model, too.
    outer_in = keras.Input(SHAPE)
    outer = keras.Model(outer_in, model(outer_in))
    outer.save(tmp_path / "outer.keras")
    with pytest.raises(ModelLoadError, match="Lambda"):
        Predictor.load(tmp_path / "outer.keras")
