"""/v1/models: promote runs to model versions and predict over HTTP with a real trained model.

One tiny ResNet-8 is trained once for the module (3 synthetic classes, 32×32×3) and recorded
as a succeeded run with its model artifact in a real SQLite database at the head migration.
Predictions over HTTP are checked against the core Predictor and against the Keras model
called directly, and every kind of bad input must get its 4xx while the server stays healthy.

Accepted as conversions, not errors (as in training): CMYK JPEG, 16-bit PNG, animated GIF
(first frame), grey, palette and RGBA images, and images of another size (resized with the
model's policy).
"""

from __future__ import annotations

import base64
import io
import json
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from jobs.records import make_engine, make_sessionmaker, session_scope, upgrade_to_head
from jobs.records import repository as records
from jobs.settings import Settings
from service.app import create_app

CLASSES = 3
BODY_LIMIT = 256 * 1024
MAX_IMAGES = 8
NO_FILE = b'--b\r\nContent-Disposition: form-data; name="top_k"\r\n\r\n2\r\n--b--\r\n'


# --- fixtures --------------------------------------------------------------------------------


@dataclass
class Served:
    app: FastAPI
    client: TestClient
    settings: Settings
    run_dir: Path
    run_id: str
    admin: dict[str, str]
    predictor_key: dict[str, str]
    reader: dict[str, str]
    queued_run: str
    missing_run: str
    make_succeeded_run: Callable[[str], str]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from core.training import make_config, train

    out = tmp_path_factory.mktemp("predict-model") / "run"
    config = make_config(
        "resnet8", f"synthetic:96:32x32x3:{CLASSES}", epochs=1, batch_size=32,
        precision="float32", tensorboard=False, validation=0.25,
    )  # fmt: skip
    train(config, out)
    return out


def _settings(root: Path, **overrides: Any) -> Settings:
    root.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{root / 'resnet.db'}"
    upgrade_to_head(url)
    values: dict[str, Any] = {
        "state_dir": root,
        "database_url": url,
        "data_root": root,
        "predict_max_body_bytes": BODY_LIMIT,
        "predict_max_images": MAX_IMAGES,
        **overrides,
    }
    return Settings(**values)


def _record_run(settings: Settings, model_uri: str, *, succeed: bool = True) -> str:
    engine = make_engine(settings.db_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            run = records.create_run(
                session, architecture="resnet8", dataset="synthetic", config={"epochs": 1}
            )
            if succeed:
                records.claim_run(session, run.id, worker_host="test")
                records.finish_run(session, run.id, status="succeeded", metrics={"accuracy": 0.5})
                records.add_artifact(session, run.id, kind="model", uri=model_uri, path=model_uri)
            return run.id
    finally:
        engine.dispose()


def _key(settings: Settings, *scopes: str) -> dict[str, str]:
    engine = make_engine(settings.db_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            _, secret = records.create_api_key(session, "test", scopes)
    finally:
        engine.dispose()
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
def served(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    settings = _settings(tmp_path_factory.mktemp("predict-state"))
    model_uri = str(run_dir / "model.keras")
    run_id = _record_run(settings, model_uri)
    app = create_app(settings)
    with TestClient(app) as client:
        admin = _key(settings, "admin")
        response = client.post("/v1/models", json={"run_id": run_id, "name": "tiny"}, headers=admin)
        assert response.status_code == 201, response.text
        yield Served(
            app=app,
            client=client,
            settings=settings,
            run_dir=run_dir,
            run_id=run_id,
            admin=admin,
            predictor_key=_key(settings, "predict"),
            reader=_key(settings, "read"),
            queued_run=_record_run(settings, model_uri, succeed=False),
            missing_run=_record_run(settings, str(run_dir / "gone" / "model.keras")),
            make_succeeded_run=lambda uri: _record_run(settings, uri),
        )


# --- images ----------------------------------------------------------------------------------


def pixels(n: int, h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def encode(arr: np.ndarray | Image.Image, fmt: str, **options: Any) -> bytes:
    img = arr if isinstance(arr, Image.Image) else Image.fromarray(arr)
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def huge_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit greyscale PNG of width × height zeros: ~50 KB, 400 Mpx when decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(
        b"IEND", b"")  # fmt: skip


def convertible_images() -> dict[str, bytes]:
    rgb = pixels(1, 40, 24, seed=7)[0]
    frames = [Image.fromarray(a) for a in pixels(3, 32, 32, seed=8)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    wide = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 61).astype(np.uint16)
    rgba = np.dstack([pixels(1, seed=9)[0], np.full((32, 32), 128, np.uint8)])
    return {
        "cmyk.jpg": encode(Image.fromarray(rgb).convert("CMYK"), "JPEG"),
        "sixteen-bit.png": encode(Image.frombytes("I;16", (32, 32), wide.tobytes()), "PNG"),
        "animated.gif": gif.getvalue(),
        "grey.png": encode(Image.fromarray(rgb[..., 0]), "PNG"),
        "palette.png": encode(Image.fromarray(rgb).convert("P"), "PNG"),
        "rgba.png": encode(Image.fromarray(rgba), "PNG"),
        "other-size.bmp": encode(rgb, "BMP"),
        "photo.webp": encode(rgb, "WEBP"),
    }


def files(*blobs: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (name, data, "application/octet-stream")) for name, data in blobs]


def probabilities(answer: dict[str, Any]) -> np.ndarray:
    """Per image, the probability of every class (from a top-k answer with k = all)."""
    out = np.zeros((len(answer["predictions"]), CLASSES))
    for i, prediction in enumerate(answer["predictions"]):
        assert len(prediction["labels"]) == CLASSES
        for item in prediction["labels"]:
            out[i, item["index"]] = item["probability"]
    return out


# --- models ----------------------------------------------------------------------------------


def test_promote_list_and_status(served: Served) -> None:
    client, admin = served.client, served.admin
    second = client.post(
        "/v1/models", json={"run_id": served.run_id, "name": "tiny"}, headers=admin
    )
    assert second.status_code == 201 and second.json()["version"] == 2
    assert second.headers["location"] == "/v1/models/tiny/versions/2"
    other = client.post(
        "/v1/models", json={"run_id": served.run_id, "name": "other"}, headers=admin
    )
    assert other.json()["version"] == 1

    listed = client.get("/v1/models", headers=served.reader).json()["items"]
    assert [(m["name"], m["version"]) for m in listed] == [("other", 1), ("tiny", 2)]
    tiny = listed[1]
    assert tiny["run_id"] == served.run_id and tiny["architecture"] == "resnet8"
    assert tiny["classes"] == ["class_0", "class_1", "class_2"] and tiny["multi_label"] is False
    assert tiny["metrics"] == {"accuracy": 0.5} and tiny["created_at"]

    model = client.get("/v1/models/tiny", headers=served.reader).json()
    assert model["latest_version"] == 2 and [v["version"] for v in model["versions"]] == [2, 1]
    one = client.get("/v1/models/tiny/versions/1", headers=served.reader).json()
    assert one["version"] == 1 and one["status"]["state"] in ("loaded", "not_loaded")
    by_run = client.get(f"/v1/models/{served.run_id}", headers=served.reader).json()
    assert (
        by_run["versions"][0]["name"] is None and by_run["versions"][0]["run_id"] == served.run_id
    )

    # promoting what cannot be served
    queued = client.post(
        "/v1/models", json={"run_id": served.queued_run, "name": "nope"}, headers=admin
    )
    assert queued.status_code == 409 and "queued" in queued.json()["error"]["message"]
    missing = client.post("/v1/models", json={"run_id": "f" * 32, "name": "nope"}, headers=admin)
    assert missing.status_code == 404
    for bad_name in ("", "-dash", "a/b", "x" * 129, "0123456789abcdef0123456789abcdef"):
        bad = client.post(
            "/v1/models", json={"run_id": served.run_id, "name": bad_name}, headers=admin
        )
        assert bad.status_code == 422, bad_name
        assert bad.json()["error"]["details"][0]["field"] == "body.name"
    assert client.get("/v1/models/nope", headers=served.reader).status_code == 404
    assert client.get("/v1/models/tiny/versions/9", headers=served.reader).status_code == 404


def test_scopes(served: Served) -> None:
    image = encode(pixels(1)[0], "PNG")
    as_reader = served.client.post(
        "/v1/models/tiny/predict", files=files(("a.png", image)), headers=served.reader
    )
    assert as_reader.status_code == 403
    as_predictor = served.client.post(
        "/v1/models/tiny/predict", files=files(("a.png", image)), headers=served.predictor_key
    )
    assert as_predictor.status_code == 200
    promote = served.client.post(
        "/v1/models", json={"run_id": served.run_id, "name": "x"}, headers=served.predictor_key
    )
    assert promote.status_code == 403
    assert (
        served.client.post("/v1/models/tiny/predict", files=files(("a.png", image))).status_code
        == 401
    )


# --- predictions -----------------------------------------------------------------------------


def test_http_matches_the_predictor_and_the_keras_model(served: Served) -> None:
    import keras

    from core.inference import Predictor
    from core.models import CUSTOM_OBJECTS

    arrays = pixels(6, seed=3)
    blobs = [encode(a, "PNG") for a in arrays]
    model_path = served.run_dir / "model.keras"

    # the Keras model itself, on the same pixels (lossless PNGs at the model's size)
    model = keras.saving.load_model(model_path, custom_objects=CUSTOM_OBJECTS, compile=False)
    direct = np.asarray(model(arrays.astype(np.float32), training=False))
    predictor = Predictor.load(model_path)
    core_answer = predictor.predict_bytes(blobs, top_k=CLASSES)
    via_core = np.zeros_like(direct)
    for i, labels in enumerate(core_answer):
        for item in labels:
            via_core[i, item["index"]] = item["probability"]
    np.testing.assert_allclose(via_core, direct, atol=1e-5)

    client, headers = served.client, served.predictor_key
    named = [(f"img{i}.png", b) for i, b in enumerate(blobs)]
    multipart = client.post(
        "/v1/models/tiny/predict", files=files(*named), data={"top_k": "3"}, headers=headers
    )
    as_json = client.post(
        "/v1/models/tiny/versions/1/predict",
        json={"images": [{"b64": b64(b), "name": n} for n, b in named], "top_k": CLASSES},
        headers=headers,
    )
    by_run_id = client.post(
        f"/v1/models/{served.run_id}/predict?top_k=3", files=files(*named), headers=headers
    )
    for response in (multipart, as_json, by_run_id):
        assert response.status_code == 200, response.text
        answer = response.json()
        got = probabilities(answer)
        np.testing.assert_allclose(got, direct, atol=1e-5)
        np.testing.assert_allclose(got, via_core, atol=1e-5)
        top1 = [p["labels"][0]["label"] for p in answer["predictions"]]
        assert top1 == [labels[0]["label"] for labels in core_answer]
    assert [p["name"] for p in multipart.json()["predictions"]] == [n for n, _ in named]
    assert multipart.json()["model"] == {"name": "tiny", "version": 2, "run_id": served.run_id}
    assert as_json.json()["model"]["version"] == 1
    assert by_run_id.json()["model"] == {"name": None, "version": None, "run_id": served.run_id}

    # a bare image body; top_k defaults to 5, at most the number of classes
    raw = client.post(
        "/v1/models/tiny/predict?top_k=1",
        content=blobs[0],
        headers={**headers, "Content-Type": "image/png"},
    )
    assert raw.status_code == 200
    (top,) = raw.json()["predictions"][0]["labels"]
    assert top["index"] == core_answer[0][0]["index"]
    assert top["probability"] == pytest.approx(core_answer[0][0]["probability"], abs=1e-5)
    default_k = client.post(
        "/v1/models/tiny/predict", files=files(("a.png", blobs[0])), headers=headers
    )
    assert len(default_k.json()["predictions"][0]["labels"]) == CLASSES
    many = client.post(  # as the Predictor: more than the classes gives every class
        "/v1/models/tiny/predict", json={"images": [{"b64": b64(blobs[0])}], "top_k": 10},
        headers=headers,
    )  # fmt: skip
    assert len(many.json()["predictions"][0]["labels"]) == CLASSES

    # other formats and sizes take the Predictor's decoding and resizing path exactly
    others = {"photo.jpg": encode(pixels(1, 45, 60, seed=4)[0], "JPEG", quality=90),
              "wide.png": encode(pixels(1, 20, 50, seed=5)[0], "PNG")}  # fmt: skip
    want = predictor.predict_bytes(list(others.values()), top_k=CLASSES)
    got = client.post(
        "/v1/models/tiny/predict?top_k=3", files=files(*others.items()), headers=headers
    ).json()["predictions"]
    for mine, theirs in zip(got, want, strict=True):
        assert [x["index"] for x in mine["labels"]] == [x["index"] for x in theirs]
        np.testing.assert_allclose(
            [x["probability"] for x in mine["labels"]],
            [x["probability"] for x in theirs],
            atol=1e-5,
        )


def test_small_requests_decode_on_the_loop_and_answer_as_the_decode_threads_do(
    run_dir: Path, tmp_path: Path
) -> None:
    """``predict_inline_decode_pixels``: a request small enough (by its headers) is decoded
    on the event loop; the answers, and a bad image's error, are those of the threads."""
    from service.inference.runtime import get_inference

    small = [(f"s{i}.png", encode(a, "PNG")) for i, a in enumerate(pixels(3, seed=11))]
    large = [("big.jpg", encode(pixels(1, 80, 90, seed=12)[0], "JPEG", quality=90))]
    bad = [("ok.png", small[0][1]), ("bad.png", small[1][1][:60])]  # cut after the header
    text = PngInfo()
    text.add_text("padding", "x" * 70_000)  # 1,024 pixels in 70 KB: over the inline byte cap
    padded = [("padded.png", encode(pixels(1, seed=13)[0], "PNG", pnginfo=text))]
    answers: dict[int, list[Any]] = {}
    handed_off: dict[int, int] = {}
    for inline_pixels in (0, 4096):
        settings = _settings(
            tmp_path / str(inline_pixels), predict_inline_decode_pixels=inline_pixels
        )
        run_id = _record_run(settings, str(run_dir / "model.keras"))
        app = create_app(settings)
        with TestClient(app) as client:
            headers = _key(settings, "predict")
            answers[inline_pixels] = [
                client.post(f"/v1/models/{run_id}/predict?top_k={CLASSES}", files=files(*blobs),
                            headers=headers)
                for blobs in (small, large, bad, padded)
            ]  # fmt: skip
            handed_off[inline_pixels] = get_inference(app)._decoder._arrivals
    threaded, inline = answers[0], answers[4096]
    for theirs, mine in zip(threaded[:2] + threaded[3:], inline[:2] + inline[3:], strict=True):
        assert theirs.status_code == mine.status_code == 200, mine.text
        np.testing.assert_array_equal(probabilities(mine.json()), probabilities(theirs.json()))
    assert threaded[2].status_code == inline[2].status_code == 422
    assert threaded[2].json() == inline[2].json()
    assert "bad.png" in json.dumps(inline[2].json())
    # 3 x 1,024 pixels fit in 4,096: only the 7,200-pixel JPEG and the 70 KB PNG went to the
    # threads
    assert handed_off == {0: 4, 4096: 2}


def test_a_multi_label_model_answers_every_label_over_the_threshold(
    served: Served, tmp_path: Path
) -> None:
    from core.inference import Predictor
    from core.models import build_model

    model = build_model("resnet8", num_classes=4, input_shape=(16, 16, 3), multi_label=True)
    model.get_layer("logits").set_weights(  # fixed sigmoid outputs: 0.88, 0.27, 0.62, 0.05
        [np.zeros_like(model.get_layer("logits").get_weights()[0]),
         np.array([2.0, -1.0, 0.5, -3.0], np.float32)]
    )  # fmt: skip
    model.save(tmp_path / "model.keras")
    labels = {"class_names": ["cat", "dog", "sky", "car"], "multi_label": True}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    run = served.make_succeeded_run(str(tmp_path / "model.keras"))
    blob = encode(pixels(1, 16, 16)[0], "PNG")
    predictor = Predictor.load(tmp_path / "model.keras")
    for threshold, expected in ((None, ["cat", "sky"]), (0.2, ["cat", "sky", "dog"]), (0.9, [])):
        query = "" if threshold is None else f"?threshold={threshold}&top_k=1"  # top_k: n/a
        response = served.client.post(
            f"/v1/models/{run}/predict{query}", files=files(("a.png", blob)),
            headers=served.predictor_key,
        )  # fmt: skip
        assert response.status_code == 200, response.text
        got = response.json()["predictions"][0]["labels"]
        assert [x["label"] for x in got] == expected
        want = predictor.predict_bytes([blob], threshold=threshold)[0]
        assert [x["label"] for x in want] == expected
        np.testing.assert_allclose(
            [x["probability"] for x in got], [x["probability"] for x in want], atol=1e-5
        )


def test_tf_serving_alias(served: Served) -> None:
    from core.inference import Predictor

    arrays = pixels(3, seed=11)
    blobs = [encode(a, "PNG") for a in arrays]
    want = Predictor.load(served.run_dir / "model.keras").probabilities(arrays)
    client, headers = served.client, served.predictor_key
    for body in (
        {"instances": [{"b64": b64(b)} for b in blobs]},
        {"signature_name": "serving_default", "instances": [{"image_bytes": {"b64": b64(b)}}
                                                            for b in blobs]},
        {"inputs": [{"b64": b64(b)} for b in blobs]},
    ):  # fmt: skip
        for path in ("/v1/models/tiny:predict", "/v1/models/tiny/versions/1:predict"):
            response = client.post(path, json=body, headers=headers)
            assert response.status_code == 200, response.text
            assert set(response.json()) == {"predictions"}
            np.testing.assert_allclose(response.json()["predictions"], want, atol=1e-5)
    single = client.post(
        "/v1/models/tiny:predict", json={"inputs": {"b64": b64(blobs[0])}}, headers=headers
    )
    np.testing.assert_allclose(single.json()["predictions"], want[:1], atol=1e-5)
    bad = client.post(
        "/v1/models/tiny:predict", json={"instances": [{"b64": "%%%"}]}, headers=headers
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["field"] == "body.instances[0].b64"


def test_convertible_images_are_accepted(served: Served) -> None:
    images = convertible_images()
    response = served.client.post(
        "/v1/models/tiny/predict", files=files(*images.items()), headers=served.predictor_key
    )
    assert response.status_code == 200, response.text
    answer = response.json()["predictions"]
    assert [p["name"] for p in answer] == list(images)
    for prediction in answer:
        assert sum(x["probability"] for x in prediction["labels"]) == pytest.approx(1, abs=1e-4)


@dataclass(frozen=True)
class Bad:
    what: str
    status: int
    code: str
    request: dict[str, Any]  # url and httpx keyword arguments, without the key


URL = "/v1/models/tiny/predict"
TF_URL = "/v1/models/tiny:predict"


def upload(*blobs: tuple[str, bytes], url: str = URL, **extra: Any) -> dict[str, Any]:
    return {"url": url, "files": files(*blobs), **extra}


def send_json(body: Any, url: str = URL) -> dict[str, Any]:
    return {"url": url, "json": body}


def send_raw(content: Any, content_type: str, url: str = URL) -> dict[str, Any]:
    return {"url": url, "content": content, "headers": {"Content-Type": content_type}}


def bad_inputs(queued_run: str) -> list[Bad]:
    """Every kind of bad input, with the status and error code it must get."""
    good = encode(pixels(1)[0], "PNG")
    one = [{"b64": b64(good)}]
    jpeg = encode(pixels(1, 64, 64)[0], "JPEG")
    tiff = encode(pixels(1)[0], "TIFF")
    ico = encode(Image.fromarray(pixels(1)[0]), "ICO", sizes=[(32, 32)])
    nine = [(f"{i}.png", good) for i in range(MAX_IMAGES + 1)]
    big, chunks = b"\x00" * (BODY_LIMIT + 1), iter([b"\x00" * 65536] * 5)
    bad_image, too_large, unsupported = (
        "invalid_image",
        "image_too_large",
        "unsupported_image_format",
    )
    invalid, media = "validation_error", "unsupported_media_type"
    return [
        # images
        Bad("empty file", 422, bad_image, upload(("empty.png", b""))),
        Bad("truncated JPEG", 422, bad_image, upload(("cut.jpg", jpeg[: len(jpeg) // 2]))),
        Bad("text named .png", 422, bad_image, upload(("notes.png", b"just some text"))),
        Bad("20000x20000 PNG", 413, too_large, upload(("huge.png", huge_png()))),
        Bad("TIFF", 415, unsupported, upload(("scan.tiff", tiff))),
        Bad("ICO", 415, unsupported, upload(("favicon.ico", ico))),
        Bad("a bad one among good", 422, bad_image,
            upload(("ok.png", good), ("bad.png", good[: len(good) // 2]))),
        Bad("base64 of text", 422, bad_image, send_json({"images": [{"b64": b64(b"hello")}]})),
        Bad("an empty image body", 422, bad_image, send_raw(b"", "image/png")),
        # multipart
        Bad("no file part", 422, invalid, send_raw(NO_FILE, "multipart/form-data; boundary=b")),
        Bad("unknown form field", 422, invalid, upload(("a.png", good), data={"colour": "red"})),
        Bad("top_k not a number", 422, invalid, upload(("a.png", good), data={"top_k": "many"})),
        Bad("threshold over 1", 422, invalid, upload(("a.png", good), url=f"{URL}?threshold=2")),
        Bad("too many images (multipart)", 422, invalid, upload(*nine)),
        # JSON
        Bad("top_k 0", 422, invalid, send_json({"images": one, "top_k": 0})),
        Bad("top_k over 1000", 422, invalid, send_json({"images": one, "top_k": 1001})),
        Bad("too many images (JSON)", 422, invalid, send_json({"images": one * 9})),
        Bad("JSON that does not parse", 422, invalid, send_raw(b"{images: [", "application/json")),
        Bad("JSON without images", 422, invalid, send_json({"top_k": 2})),
        Bad("JSON with no images", 422, invalid, send_json({"images": []})),
        Bad("JSON images not a list", 422, invalid, send_json({"images": one[0]})),
        Bad("JSON b64 not a string", 422, invalid, send_json({"images": [{"b64": 12345}]})),
        Bad("JSON unknown key", 422, invalid, send_json({"images": one, "colour": 1})),
        Bad("JSON a list", 422, invalid, send_json(one)),
        Bad("broken base64", 422, invalid, send_json({"images": [{"b64": "not*base64!"}]})),
        # TF Serving
        Bad("TF: instances not a list", 422, invalid, send_json({"instances": {"x": 1}}, TF_URL)),
        Bad("TF: both", 422, invalid, send_json({"instances": one, "inputs": one}, TF_URL)),
        Bad("TF: other signature", 422, invalid,
            send_json({"signature_name": "classify", "instances": one}, TF_URL)),
        Bad("TF: multipart", 415, media, upload(("a.png", good), url=TF_URL)),
        # bodies
        Bad("a text body", 415, media, send_raw(b"hello", "text/plain")),
        Bad("a body over the limit", 413, "payload_too_large", send_raw(big, "image/png")),
        Bad("a chunked body over the limit", 413, "payload_too_large",
            send_raw(chunks, "image/png")),
        # models
        Bad("unknown model", 404, "not_found", send_json({"images": one}, "/v1/models/no/predict")),
        Bad("unknown model (TF)", 404, "not_found",
            send_json({"instances": one}, "/v1/models/no:predict")),
        Bad("unknown version", 404, "not_found",
            send_json({"images": one}, "/v1/models/tiny/versions/99/predict")),
        Bad("version not a number", 422, invalid,
            send_json({"images": one}, "/v1/models/tiny/versions/latest/predict")),
        Bad("a run that has not succeeded", 409, "conflict",
            send_json({"images": one}, f"/v1/models/{queued_run}/predict")),
    ]  # fmt: skip


def post(client: TestClient, request: dict[str, Any], key: dict[str, str]) -> Any:
    kwargs = dict(request)
    kwargs["headers"] = {**key, **kwargs.get("headers", {})}
    return client.post(kwargs.pop("url"), **kwargs)


def test_bad_inputs_get_their_4xx_and_the_server_stays_healthy(served: Served) -> None:
    cases = bad_inputs(served.queued_run)
    assert len(cases) >= 20
    client, key = served.client, served.predictor_key
    answers = {}
    for case in cases:
        response = post(client, case.request, key)
        assert response.status_code == case.status, (case.what, response.text)
        error = response.json()["error"]
        assert error["code"] == case.code and error["message"], (case.what, error)
        answers[case.what] = error
    # a bad image is named: which one, and what is wrong with it
    mixed = answers["a bad one among good"]
    assert mixed["details"][0]["field"] == "body.file[1]" and "bad.png" in mixed["message"]
    assert "truncated" in mixed["message"]
    assert "400000000 pixels" in answers["20000x20000 PNG"]["message"]
    assert "'TIFF' is not allowed" in answers["TIFF"]["message"]
    assert answers["broken base64"]["details"][0]["field"] == "body.images[0].b64"
    assert answers["top_k over 1000"]["details"][0]["field"] == "body.top_k"

    assert client.get("/healthz").status_code == 200
    ok = post(client, upload(("a.png", encode(pixels(1)[0], "PNG"))), key)
    assert ok.status_code == 200
    assert 'status="500"' not in client.get("/metrics").text


def test_a_model_that_cannot_be_loaded_is_503(served: Served) -> None:
    response = served.client.post(
        f"/v1/models/{served.missing_run}/predict",
        files=files(("a.png", encode(pixels(1)[0], "PNG"))),
        headers=served.predictor_key,
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_unavailable"
    status = served.client.get(f"/v1/models/{served.missing_run}", headers=served.reader).json()
    assert status["versions"][0]["status"]["state"] == "failed"


# --- batching, overload, timeout -------------------------------------------------------------


def _loaded(served: Served) -> Any:
    """The loaded ``tiny`` model (other tests load other models into the same cache)."""
    return served.app.state.inference.cache._models[str(served.run_dir / "model.keras")]


def _hold_model_thread(served: Served) -> threading.Event:
    """Hold the model's calls until the returned event is set (then they run as before)."""
    release = threading.Event()
    batcher = _loaded(served).batcher
    model_call = batcher.run_batch

    def held(batch: np.ndarray) -> np.ndarray:
        release.wait(30)
        batcher.run_batch = model_call
        return model_call(batch)

    batcher.run_batch = held
    return release


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.inference import Predictor

    arrays = pixels(12, seed=21)
    want = Predictor.load(served.run_dir / "model.keras").probabilities(arrays)
    client, headers = served.client, served.predictor_key
    served.client.post(  # make sure the model is loaded
        "/v1/models/tiny/predict", files=files(("a.png", encode(arrays[0], "PNG"))),
        headers=headers,
    )  # fmt: skip
    batches_before = _metric(client, "resnet_predict_batch_size_count")

    def one(i: int) -> np.ndarray:
        r = client.post(
            "/v1/models/tiny/predict?top_k=3",
            files=files((f"{i}.png", encode(arrays[i], "PNG"))),
            headers=headers,
        )
        assert r.status_code == 200, r.text
        return probabilities(r.json())[0]

    # While one more request is still decoding (a place reserved), the batcher waits for it
    # (here without a deadline), so all twelve that arrive meanwhile share one model call.
    batcher = _loaded(served).batcher
    monkeypatch.setattr(batcher, "max_delay_s", 60.0)
    decoding = on_loop(client, batcher.reserve, 1)
    with ThreadPoolExecutor(12) as pool:
        results = [pool.submit(one, i) for i in range(12)]
        try:
            _wait_for(lambda: batcher.depth == 13)
        finally:
            on_loop(client, decoding.release)
        got = np.stack([r.result() for r in results])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert _metric(client, "resnet_predict_batch_size_count") - batches_before == 1
    assert "resnet_predict_queue_seconds_count" in client.get("/metrics").text


def test_a_full_queue_is_503_and_a_slow_answer_is_504(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, headers = served.client, served.predictor_key
    request = {"files": files(("a.png", encode(pixels(1)[0], "PNG"))), "headers": headers}
    assert client.post("/v1/models/tiny/predict", **request).status_code == 200
    batcher = _loaded(served).batcher
    everything = on_loop(client, batcher.reserve, served.settings.predict_queue_limit)
    try:
        full = client.post("/v1/models/tiny/predict", **request)
    finally:
        on_loop(client, everything.release)
    assert full.status_code == 503 and full.json()["error"]["code"] == "overloaded"
    assert full.headers["retry-after"] == "1"

    monkeypatch.setattr(served.settings, "predict_timeout_s", 0.3)
    release = _hold_model_thread(served)
    try:
        slow = client.post("/v1/models/tiny/predict", **request)
    finally:
        release.set()
    assert slow.status_code == 504 and slow.json()["error"]["code"] == "timeout"
    monkeypatch.undo()
    _wait_for(lambda: batcher.depth == 0)
    assert client.post("/v1/models/tiny/predict", **request).status_code == 200


def test_the_cache_evicts_the_least_recently_used_model(run_dir: Path, tmp_path: Path) -> None:
    settings = _settings(tmp_path / "state", model_cache_bytes=1)  # room for one model only
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("model.keras", "labels.json"):
        (copy / name).write_bytes((run_dir / name).read_bytes())
    first = _record_run(settings, str(run_dir / "model.keras"))
    second = _record_run(settings, str(copy / "model.keras"))
    headers = _key(settings, "admin")
    image = files(("a.png", encode(pixels(1)[0], "PNG")))
    with TestClient(create_app(settings)) as client:

        def state(run: str) -> str:
            answer = client.get(f"/v1/models/{run}", headers=headers).json()
            return str(answer["versions"][0]["status"]["state"])

        assert state(first) == "not_loaded"
        assert (
            client.post(f"/v1/models/{first}/predict", files=image, headers=headers).status_code
            == 200
        )
        assert state(first) == "loaded"
        assert (
            client.post(f"/v1/models/{second}/predict", files=image, headers=headers).status_code
            == 200
        )
        assert (state(first), state(second)) == ("not_loaded", "loaded")
        metrics = client.get("/metrics").text
        assert "resnet_model_evictions_total 1.0" in metrics


def _copy_run(run_dir: Path, to: Path) -> Path:
    to.mkdir()
    for name in ("model.keras", "labels.json"):
        (to / name).write_bytes((run_dir / name).read_bytes())
    return to / "model.keras"


def _model_status(client: TestClient, run: str, headers: dict[str, str]) -> dict[str, Any]:
    answer = client.get(f"/v1/models/{run}", headers=headers).json()
    return dict(answer["versions"][0]["status"])


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["onnx", "auto"])
def test_an_exported_engine_answers_as_the_keras_model_over_http(
    run_dir: Path, tmp_path: Path, engine: str
) -> None:
    pytest.importorskip("tf2onnx")
    import keras

    from core.models import CUSTOM_OBJECTS

    settings = _settings(tmp_path / "state", predict_engine=engine)
    model_file = _copy_run(run_dir, tmp_path / "run")
    run = _record_run(settings, str(model_file))
    headers = _key(settings, "admin")
    arrays = pixels(6, seed=5)
    model = keras.saving.load_model(model_file, custom_objects=CUSTOM_OBJECTS)
    direct = np.asarray(model(arrays.astype(np.float32), training=False))
    blobs = files(*[(f"{i}.png", encode(a, "PNG")) for i, a in enumerate(arrays)])
    with TestClient(create_app(settings)) as client:

        def predict() -> np.ndarray:
            answer = client.post(
                f"/v1/models/{run}/predict", files=blobs, data={"top_k": str(CLASSES)},
                headers=headers,
            )  # fmt: skip
            assert answer.status_code == 200, answer.text
            return probabilities(answer.json())

        first = predict()
        keras_bytes = _model_status(client, run, headers)["weight_bytes"]
        if engine == "auto":  # served on Keras at once; the choice is made in the background
            assert _model_status(client, run, headers)["engine_choice"] is not None
            answers, deadline = [], time.monotonic() + 120
            while _model_status(client, run, headers)["engine_choice"]["state"] == "choosing":
                assert time.monotonic() < deadline, "the engine choice took over 120 s"
                answers.append(predict())  # the model keeps answering meanwhile
            for got in answers:
                np.testing.assert_allclose(got, direct, atol=1e-4)
        got = predict()
        status = _model_status(client, run, headers)
    for answer in (first, got):
        assert np.array_equal(answer.argmax(1), direct.argmax(1))
        np.testing.assert_allclose(answer, direct, atol=1e-4)
    if engine == "onnx":
        assert status["engine"] == "onnx" and status["engine_choice"] is None
    else:
        choice = status["engine_choice"]
        assert choice["state"] == "chosen", choice
        assert status["engine"] == choice["chosen"] and set(choice["ms"]) == {"keras", "onnx"}
        (export,) = (model_file.parent / "engines").glob("*/model.onnx")
        # an exported engine's runtime holds the weights again: the cache counts them
        onnx_bytes = export.stat().st_size if choice["chosen"] == "onnx" else 0
        assert status["weight_bytes"] == keras_bytes + onnx_bytes
    assert list((model_file.parent / "engines").glob("*/model.onnx")), "kept beside the model"


@pytest.mark.slow
def test_a_failed_engine_choice_leaves_the_model_on_keras_and_says_why(
    run_dir: Path, tmp_path: Path
) -> None:
    settings = _settings(tmp_path / "state", predict_engine="auto")
    model_file = _copy_run(run_dir, tmp_path / "run")
    (model_file.parent / "engines").write_text("a file where the exports' folder would go")
    run = _record_run(settings, str(model_file))
    headers = _key(settings, "admin")
    image = files(("a.png", encode(pixels(1)[0], "PNG")))
    with TestClient(create_app(settings)) as client:
        assert client.post(f"/v1/models/{run}/predict", files=image, headers=headers).is_success
        deadline = time.monotonic() + 120
        while (status := _model_status(client, run, headers))["engine_choice"][
            "state"
        ] == "choosing" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.post(f"/v1/models/{run}/predict", files=image, headers=headers).is_success
    choice = status["engine_choice"]
    assert status["engine"] == "keras" and choice["chosen"] == "keras", choice
    assert "could not keep its export" in choice["skipped"]["onnx"], choice


# --- the body limit streams ------------------------------------------------------------------


def test_a_chunked_body_is_refused_without_reading_it_all(served: Served) -> None:
    """Straight through ASGI: the app stops asking for chunks once the limit is passed."""
    import asyncio

    chunk = b"\x00" * 16384
    asked = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal asked
        asked += 1
        return {"type": "http.request", "body": chunk, "more_body": asked < 10_000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    token = served.predictor_key["Authorization"].encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/models/tiny/predict", "raw_path": b"/v1/models/tiny/predict",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("t", 80),
        "headers": [(b"content-type", b"image/png"), (b"transfer-encoding", b"chunked"),
                    (b"authorization", token)],
    }  # fmt: skip
    asyncio.run(served.app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert asked <= BODY_LIMIT // len(chunk) + 2  # not the 160 MB on offer
    assert json.loads(sent[1]["body"])["error"]["code"] == "payload_too_large"


# --- helpers ---------------------------------------------------------------------------------


def on_loop(client: TestClient, fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn`` on the app's event loop (the batcher is not thread-safe, by design)."""
    assert client.portal is not None
    return client.portal.call(fn, *args)


def _metric(client: TestClient, name: str) -> float:
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


# --- the CLI through the service -------------------------------------------------------------


def test_the_cli_predicts_through_the_service(served: Served, tmp_path: Path) -> None:
    """``resnet predict --server URL --model NAME IMAGE...`` against uvicorn on a real port."""
    import uvicorn
    from typer.testing import CliRunner

    from core.inference import Predictor
    from jobs.cli import app as cli
    from tests.fixtures.servers import free_port

    port = free_port()
    config = uvicorn.Config(
        create_app(served.settings), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait_for(lambda: server.started)
    arrays = pixels(2, seed=31)
    paths = []
    for i, arr in enumerate(arrays):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(encode(arr, "PNG"))
    (tmp_path / "notes.png").write_text("not an image")
    secret = served.predictor_key["Authorization"].removeprefix("Bearer ")
    url = f"http://127.0.0.1:{port}"
    try:
        runner = CliRunner()
        args = ["predict", "--server", url, "--model", "tiny", "--top-k", "2", "--json"]
        result = runner.invoke(
            cli, [*args, *map(str, paths), str(tmp_path / "notes.png")],
            env={"RESNET_API_KEY": secret},
        )  # fmt: skip
        assert result.exit_code == 1, result.output  # one image could not be read
        answers = json.loads(result.stdout)
        want = Predictor.load(served.run_dir / "model.keras").predict_arrays(arrays, top_k=2)
        for answer, expected in zip(answers[:2], want, strict=True):
            assert [p["index"] for p in answer["predictions"]] == [p["index"] for p in expected]
            assert answer["predictions"][0]["probability"] == pytest.approx(
                expected[0]["probability"], abs=1e-5
            )
        assert "not a recognised image file" in answers[2]["error"]

        unknown = runner.invoke(
            cli, ["predict", "--server", url, "--model", "nope", str(paths[0])],
            env={"RESNET_API_KEY": secret},
        )  # fmt: skip
        assert unknown.exit_code == 1 and "404" in unknown.output
        no_key = runner.invoke(
            cli, ["predict", "--server", url, "--model", "tiny", str(paths[0])],
            env={"RESNET_API_KEY": ""},
        )  # fmt: skip
        assert no_key.exit_code == 1 and "401" in no_key.output
    finally:
        server.should_exit = True
        thread.join(10)


def test_predict_routes_answer_as_registered_routes_and_are_counted(served: Served) -> None:
    """The predict paths bypass FastAPI's router (service.predict.dispatch); what a client sees
    and what /metrics counts must not tell the difference."""
    client, key = served.client, served.predictor_key
    image = encode(pixels(1)[0], "PNG")

    def counted(route: str, status: int) -> float:
        pattern = (
            rf'resnet_http_requests_total\{{method="POST",route="{re.escape(route)}",'
            rf'status="{status}"\}} ([0-9.e+]+)'
        )
        found = re.search(pattern, client.get("/metrics").text)
        return float(found.group(1)) if found else 0.0

    routes = {
        "/v1/models/tiny/predict": "/v1/models/{name}/predict",
        "/v1/models/tiny/versions/1/predict": "/v1/models/{name}/versions/{version}/predict",
    }
    for path, route in routes.items():
        before_ok, before_bad = counted(route, 200), counted(route, 415)
        assert client.post(path, content=image, headers={**key, "content-type": "image/png"}).json()
        refused = client.post(path, content=b"x", headers={**key, "content-type": "text/plain"})
        assert refused.status_code == 415 and refused.json()["error"]["code"]
        assert counted(route, 200) == before_ok + 1 and counted(route, 415) == before_bad + 1
    alias = "/v1/models/{name}:predict"
    before = counted(alias, 401)
    assert client.post("/v1/models/tiny:predict", json={"instances": []}).status_code == 401
    assert counted(alias, 401) == before + 1

    # Paths FastAPI refuses still get FastAPI's answers: 422 for a bad version, 405 for GET.
    for version in ("0", "2147483648", "x"):
        response = client.post(f"/v1/models/tiny/versions/{version}/predict", headers=key)
        assert response.status_code == 422, (version, response.text)
        assert response.json()["error"]["details"][0]["field"] == "path.version"
    assert client.get("/v1/models/tiny/predict", headers=key).status_code == 405


def test_the_dispatch_answers_exactly_as_the_fastapi_routes(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parity: every request, good or bad, through PredictDispatch (``served.app``) and through
    the registered FastAPI routes (an app without the dispatch) gets the same status, headers,
    body and request metric; and the dispatch really is what answered."""
    from service.predict.dispatch import PredictDispatch
    from service.predict.table import PREDICT_ROUTES
    from service.routes.models import router

    # Count the FastAPI routes' own calls: the dispatch must not reach them.
    reached: list[str] = []
    for route in router.routes:
        if getattr(route, "path", None) in {r.path for r in PREDICT_ROUTES}:
            handle = route.handle

            async def counted(scope: Any, receive: Any, send: Any, handle: Any = handle) -> None:
                reached.append(scope["path"])
                await handle(scope, receive, send)

            monkeypatch.setattr(route, "handle", counted)

    routed = create_app(served.settings)
    routed.user_middleware = [m for m in routed.user_middleware if m.cls is not PredictDispatch]
    png = encode(pixels(1)[0], "PNG")
    one = [{"b64": b64(png)}]

    def requests() -> list[tuple[dict[str, Any], dict[str, str]]]:
        """(request, key): fresh each time, as a chunked body can be sent only once."""
        key, reader = served.predictor_key, served.reader
        good = [
            upload(("a.png", png), ("b.png", encode(pixels(1, seed=2)[0], "PNG"))),
            upload(("a.png", png), url=f"{URL}?top_k=2"),
            send_raw(png, "image/png", url="/v1/models/tiny/versions/1/predict?top_k=1"),
            send_json({"images": one, "top_k": 3}),
            send_json({"instances": one}, TF_URL),
            send_json({"inputs": one}, "/v1/models/tiny/versions/1:predict"),
            send_json({"images": one}, f"/v1/models/{served.run_id}/predict"),
        ]
        auth = [
            (send_json({"images": one}), {}),
            (send_json({"images": one}), {"Authorization": "Bearer rsk_unknown"}),
            (send_json({"images": one}), reader),
            (send_json({"instances": one}, TF_URL), reader),
        ]
        bad = [case.request for case in bad_inputs(served.queued_run)]
        return [(r, key) for r in good + bad] + auth

    def template(url: str) -> str:
        path = url.partition("?")[0]
        return next(
            r.path for r in PREDICT_ROUTES
            if re.fullmatch(re.sub(r"\{\w+\}", "[^/]+", r.path), path)
        )  # fmt: skip

    def request_counts(app: FastAPI) -> dict[tuple[str, ...], float]:
        return {
            (sample.labels["method"], sample.labels["route"], sample.labels["status"]): sample.value
            for family in app.state.metrics.registry.collect()
            for sample in family.samples
            if sample.name == "resnet_http_requests_total"
        }

    def answered(client: TestClient, app: FastAPI) -> list[tuple[Any, ...]]:
        """Per request: its URL, the status, headers and body, and what the metrics counted."""
        answers = []
        for request, key in requests():
            before = request_counts(app)
            response = post(client, request, key)
            after = request_counts(app)
            counted = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k)}
            status = response.status_code
            assert counted == {("POST", template(request["url"]), str(status)): 1.0}, request
            answers.append(
                (request["url"], status, dict(response.headers), response.content, counted)
            )
        return answers

    dispatched = answered(served.client, served.app)
    assert reached == ["/v1/models/tiny/versions/latest/predict"]  # refused: FastAPI's answer
    reached.clear()
    with TestClient(routed) as client:
        through_fastapi = answered(client, routed)
    # Every request reaches FastAPI's route but those the door (service.limits) answers before
    # any route: the four key refusals (no key, an unknown one, two without the scope) and
    # the body whose Content-Length is over the limit.
    assert len(reached) == len(through_fastapi) - 5
    assert [a[1] for a in dispatched].count(200) == 7
    for ours, theirs in zip(dispatched, through_fastapi, strict=True):
        assert ours == theirs
