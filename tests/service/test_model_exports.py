"""``GET /v1/models/{name}/versions/{v}/export?format=…`` (issue 16).

Over a real uvicorn process (``tests/service/api_process.py``): a tiny ResNet-8 trained in mixed
bfloat16 on real CIFAR-10 images is promoted, downloaded as a SavedModel (TF Serving's
``NAME/VERSION/`` layout) and as ONNX, and each export, run in its own runtime on the images,
reproduces the Keras model; the API keeps answering while it exports, and a second download is
the cached archive. In-process (TensorFlow only for the 503): the 4xx of an unknown or missing
format, a version or model that does not exist, a version without a model file, a model over the
size limit, a server without tf2onnx (503); a cached archive is served as it is, and deleting
the version removes it.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from core.inference.formats import ExportFormat
from jobs.records import RunStatus, make_engine, make_sessionmaker, session_scope
from jobs.records import repository as records
from jobs.settings import Settings
from service.app import create_app
from service.exports import ExportJob, archive_path
from tests.service.api_process import ApiProcess, api_process
from tests.service.conftest import make_settings
from tests.service.test_limits_http import make_state

# The float32 export against the mixed-bfloat16 Keras model (as tests/core/inference/test_export).
MIXED_ATOL = 5e-3


def record_succeeded_run(db: sessionmaker[Session], model: Path) -> str:
    with session_scope(db) as session:
        run = records.create_run(
            session, architecture="resnet8", dataset="cifar10-jpeg", config={"epochs": 1}
        )
        records.claim_run(session, run.id, worker_host="test")
        records.finish_run(session, run.id, status=RunStatus.SUCCEEDED)
        records.add_artifact(session, run.id, kind="model", uri=str(model), path=model)
        return run.id


# --- in-process: the 4xx, the cache, deletion -----------------------------------------------


@dataclass
class Local:
    client: TestClient
    settings: Settings
    key: dict[str, str]
    run_id: str
    model: Path

    def export(
        self, version: int | str = 1, fmt: str | None = "onnx", name: str = "tiny"
    ) -> httpx.Response:
        query = "" if fmt is None else f"?format={fmt}"
        return self.client.get(
            f"/v1/models/{name}/versions/{version}/export{query}", headers=self.key
        )

    def archive(self, fmt: ExportFormat) -> Path:
        return archive_path(self.settings, ExportJob("tiny", 1, self.run_id, str(self.model), fmt))


@pytest.fixture
def local(tmp_path: Path, _db_at_head: Path) -> Iterator[Local]:
    """A version ``tiny`` 1 whose model file is 4 KiB of bytes: enough for every route that
    never loads it, under an export limit of 2 KiB."""
    settings = make_settings(tmp_path, _db_at_head, export_max_bytes=2048)
    engine = make_engine(settings.db_url)
    db = make_sessionmaker(engine)
    model = Path(settings.artifacts) / "run" / "model.keras"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"k" * 1024)
    run_id = record_succeeded_run(db, model)
    with session_scope(db) as session:
        _, secret = records.create_api_key(session, "admin", ["admin"])
        records.promote_run(session, run_id, "tiny")
    with TestClient(create_app(settings)) as client:
        yield Local(client, settings, {"Authorization": f"Bearer {secret}"}, run_id, model)
    engine.dispose()


def error(response: httpx.Response) -> dict[str, object]:
    return dict(response.json()["error"])


def test_an_unknown_or_missing_format_is_422_naming_the_parameter(local: Local) -> None:
    unknown = local.export(fmt="tflite")
    assert unknown.status_code == 422
    (detail,) = error(unknown)["details"]  # type: ignore[misc]
    assert detail["field"] == "query.format" and detail["received"] == "tflite"
    assert "'savedmodel', 'onnx' or 'keras'" in detail["message"]
    missing = local.export(fmt=None)
    assert (
        missing.status_code == 422 and error(missing)["message"] == "query.format: Field required"
    )


def test_a_version_or_model_that_does_not_exist_is_404(local: Local) -> None:
    assert local.export(version=2).status_code == 404
    assert "tiny version 2" in str(error(local.export(version=2))["message"])
    assert local.export(name="other").status_code == 404
    assert local.export(version=0).status_code == 422  # versions count from 1


def test_a_version_without_its_model_file_is_409_saying_so(local: Local) -> None:
    local.model.unlink()
    response = local.export()
    assert response.status_code == 409
    assert error(response)["message"] == (
        f"tiny version 1 has no model to export: model file not found: {local.model}"
    )


def test_a_model_over_the_export_limit_is_409_naming_the_setting(local: Local) -> None:
    local.model.write_bytes(b"k" * 4096)
    response = local.export(fmt="savedmodel")
    assert response.status_code == 409
    message = str(error(response)["message"])
    assert "model file is 4096 bytes" in message and "RESNET_EXPORT_MAX_BYTES" in message
    assert not local.archive(ExportFormat.SAVEDMODEL).exists()


def test_a_cached_archive_is_served_as_it_is_and_deleting_the_version_removes_it(
    local: Local,
) -> None:
    cached = local.archive(ExportFormat.KERAS)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK cached archive")
    # Beside the version's files: in the run's folder, which quotas count and deletion frees.
    assert cached.is_relative_to(local.model.parent)
    response = local.export(fmt="keras")
    assert response.status_code == 200 and response.content == b"PK cached archive"
    assert response.headers["content-type"] == "application/zip"
    assert 'filename="tiny-v1-keras.zip"' in response.headers["content-disposition"]

    assert local.client.delete("/v1/models/tiny/versions/1", headers=local.key).status_code == 204
    assert not cached.exists()
    assert local.export(fmt="keras").status_code == 404


@pytest.mark.slow
def test_a_server_without_tf2onnx_answers_503_saying_so(
    local: Local, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.models import build_model

    build_model("resnet8", num_classes=3, input_shape=(16, 16, 3)).save(local.model)
    local.settings.export_max_bytes = 64 * 1024**2
    # The export extra not installed: `import tf2onnx` fails, as it does there.
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    response = local.export(fmt="onnx")
    assert response.status_code == 503
    message = str(error(response)["message"])
    assert message.startswith("Cannot export tiny version 1: ONNX export needs tf2onnx")
    assert "pip install 'resnet-service[export]'" in message
    assert list(local.archive(ExportFormat.ONNX).parent.iterdir()) == []  # nothing half-made


def test_a_model_on_shared_storage_has_its_exports_in_the_hosts_copy_of_the_run(
    local: Local,
) -> None:
    from service.exports import exports_folder

    folder = exports_folder(local.settings, local.run_id, "gs://bucket/runs/x/model.keras")
    assert folder == local.settings.state_dir.resolve() / "model-cache" / local.run_id / "exports"


# --- over a real server: a trained mixed-precision model ------------------------------------


@dataclass
class Served:
    api: ApiProcess
    key: dict[str, str]
    run: Path  # the run folder the version's model.keras is in
    as_trained: np.ndarray  # the mixed Keras model's probabilities of the CIFAR images
    float32: np.ndarray  # its float32 twin's

    def assert_reproduced_by(self, got: np.ndarray) -> None:
        np.testing.assert_allclose(got, self.float32, atol=1e-4)
        assert float(np.max(np.abs(got - self.as_trained))) <= MIXED_ATOL


@pytest.fixture(scope="module")
def served(
    tiny_run: Callable[[str], Path],
    cifar_images: np.ndarray,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    from core.inference import float32_model, load_keras_model

    root = tmp_path_factory.mktemp("exports-http")
    env, secret = make_state(root)
    run = shutil.copytree(tiny_run("mixed_bfloat16"), root / "runs" / "tiny-run")
    trained = load_keras_model(run / "model.keras")
    as_trained = np.asarray(trained(cifar_images, training=False))
    float32 = np.asarray(float32_model(trained)(cifar_images, training=False))
    engine = make_engine(env["RESNET_DATABASE_URL"])
    try:
        run_id = record_succeeded_run(make_sessionmaker(engine), run / "model.keras")
    finally:
        engine.dispose()
    with api_process(env, root / "api.log") as api:
        key = {"Authorization": f"Bearer {secret}"}
        with api.client() as client:
            promoted = client.post(
                "/v1/models", json={"run_id": run_id, "name": "tiny"}, headers=key
            )
            assert promoted.status_code == 201, promoted.text
        yield Served(api, key, run, as_trained, float32)


def _dtypes(node: object) -> set[int]:
    """The dtypes a GraphDef node's attributes name."""
    found: set[int] = set()
    for value in node.attr.values():  # type: ignore[attr-defined]
        found.add(value.type)
        found.update(value.list.type)
    return found


@dataclass
class Download:
    response: httpx.Response
    seconds: float  # the export request, start to end
    health_checks: int  # /healthz answers while it ran
    slowest_health_check: float


def download(served: Served, fmt: str) -> Download:
    """The export, asking /healthz over and over while it is being made."""
    answered: list[httpx.Response] = []

    def fetch() -> None:
        with served.api.client(timeout=120) as client:
            answered.append(
                client.get(f"/v1/models/tiny/versions/1/export?format={fmt}", headers=served.key)
            )

    started = time.perf_counter()
    thread = threading.Thread(target=fetch)
    thread.start()
    checks, slowest = 0, 0.0
    with served.api.client(timeout=30) as client:
        while thread.is_alive():
            asked = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            checks, slowest = checks + 1, max(slowest, time.perf_counter() - asked)
            time.sleep(0.05)
    thread.join()
    (response,) = answered
    assert response.status_code == 200, response.text
    return Download(response, time.perf_counter() - started, checks, slowest)


@pytest.mark.slow
def test_the_savedmodel_download_is_tf_servings_layout_and_reproduces_the_model(
    served: Served, cifar_images: np.ndarray, tmp_path: Path
) -> None:
    import tensorflow as tf

    made = download(served, "savedmodel")
    # An export on the event loop would hold /healthz for all of it (TensorFlow's import
    # included); in its thread, the loop answers throughout (here 0.3-0.9 s at worst, on two
    # cores shared with other work, against an export of several seconds).
    assert made.health_checks >= 3
    assert made.slowest_health_check < made.seconds / 3, made
    response = made.response
    assert response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    names = set(archive.namelist())
    assert {"tiny/1/saved_model.pb", "tiny/labels.json", "tiny/export.json"} <= names
    assert {n.split("/")[1] for n in names} == {"1", "labels.json", "export.json"}
    archive.extractall(tmp_path)

    # What tensorflow_model_server --model_base_path=tmp_path/tiny loads: the highest version.
    serve = tf.saved_model.load(str(tmp_path / "tiny" / "1")).signatures["serving_default"]
    got = serve(image=tf.constant(cifar_images))["output_0"].numpy()
    served.assert_reproduced_by(got)
    graph = serve.graph.as_graph_def()  # a float32 graph: no bfloat16 left from training
    nodes = [*graph.node, *(node for f in graph.library.function for node in f.node_def)]
    assert not [n.name for n in nodes if tf.bfloat16.as_datatype_enum in _dtypes(n)]
    info = json.loads(archive.read("tiny/export.json"))
    assert info["trained_precision"] == "mixed_bfloat16" and info["path"] == "1"

    cached = served.run / "exports" / "tiny" / "v1-savedmodel.zip"
    before = cached.stat()
    with served.api.client() as client:
        again = client.get(
            "/v1/models/tiny/versions/1/export?format=savedmodel", headers=served.key
        )
    assert again.status_code == 200 and again.content == response.content
    after = cached.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.slow
def test_the_onnx_download_runs_in_onnx_runtime_and_reproduces_the_model(
    served: Served, cifar_images: np.ndarray
) -> None:
    ort = pytest.importorskip("onnxruntime")
    response = download(served, "onnx").response
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    session = ort.InferenceSession(
        archive.read("tiny/1/model.onnx"), providers=["CPUExecutionProvider"]
    )
    (got,) = session.run(["probabilities"], {"image": cifar_images})
    served.assert_reproduced_by(got)
    assert "Traceback" not in served.api.log()
