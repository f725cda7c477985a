"""Request limits at the door, against the API in a uvicorn process of its own (issue 9).

Memory before auth (finding 2), bodies over a route's limit, stalled bodies, JSON that nests
too deep or carries huge numbers, bodies that are not UTF-8, booleans sent as numbers, the
OpenAPI document's references, and failed keys (items of 10). Each was reproduced over HTTP,
so each is checked over HTTP, with the server's memory read from ``/proc/<pid>/status``.
"""

from __future__ import annotations

import json
import re
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobs.records import make_engine, make_sessionmaker, session_scope, upgrade_to_head
from jobs.records import repository as records
from tests.service.api_process import ApiProcess, api_process, read_response

pytestmark = pytest.mark.slow

JSON_LIMIT = 64 * 1024
IDLE_TIMEOUT_S = 1.0
TOTAL_TIMEOUT_S = 4.0
FAILURES_BURST = 3
MiB = 1024**2
JSON = "application/json"
RUN = {"architecture": "resnet20", "data": "synthetic:64:8x8x3:2", "epochs": 1}


@dataclass
class Served:
    api: ApiProcess
    key: dict[str, str]


def make_state(root: Path) -> tuple[dict[str, str], str]:
    """A database at head under ``root`` and an admin key: the environment and the secret."""
    url = f"sqlite:///{root / 'resnet.db'}"
    upgrade_to_head(url)
    engine = make_engine(url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            _, secret = records.create_api_key(session, "admin", ["admin"])
    finally:
        engine.dispose()
    (root / "data").mkdir(exist_ok=True)
    env = {
        "RESNET_STATE_DIR": str(root),
        "RESNET_DATABASE_URL": url,
        "RESNET_DATA_ROOT": str(root / "data"),
    }
    return env, secret


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("limits-http")
    env, secret = make_state(root)
    env.update(
        RESNET_REQUEST_MAX_JSON_BYTES=str(JSON_LIMIT),
        RESNET_REQUEST_BODY_IDLE_TIMEOUT_S=str(IDLE_TIMEOUT_S),
        RESNET_REQUEST_BODY_TIMEOUT_S=str(TOTAL_TIMEOUT_S),
        RESNET_AUTH_FAILURES_BURST=str(FAILURES_BURST),
        RESNET_AUTH_FAILURES_PER_SECOND="0.2",
    )
    with api_process(env, root / "api.log") as api:
        yield Served(api, {"Authorization": f"Bearer {secret}"})


def head(
    path: str,
    *,
    length: int | None,
    key: dict[str, str] | None = None,
    kind: str = "application/json",
) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", f"Content-Type: {kind}"]
    lines.append(
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    )
    lines += [f"{name}: {value}" for name, value in (key or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def piece(data: bytes, chunked: bool) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if chunked else data


def keep_sending(sock: socket.socket, total: int, chunked: bool) -> int:
    """Send up to ``total`` more bytes of body, until the server stops taking them."""
    sent, block = 0, piece(b"\0" * MiB, chunked)
    sock.settimeout(2)
    try:
        while sent < total:
            sock.sendall(block)
            sent += MiB
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass
    return sent


BIG_BODY_PATHS = ("/v1/runs", "/v1/models/tiny/predict", "/v1/datasets/upload")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", BIG_BODY_PATHS)
def test_a_large_body_without_a_key_is_401_before_any_of_it_is_read(
    served: Served, path: str, chunked: bool
) -> None:
    """Finding 2: a 300 MB body with no key raised the API's memory by ~0.9 GB before its 401."""
    api = served.api
    before = api.rss_bytes()
    with api.connect() as sock:
        started = time.monotonic()
        sock.sendall(head(path, length=None if chunked else 300 * MiB))
        sock.sendall(piece(b"[" * 65536, chunked))
        status, headers, body = read_response(sock, timeout=5)
        answered = time.monotonic() - started
        keep_sending(sock, 200 * MiB, chunked)  # the rest is discarded, never held
    assert status == 401, body[:300]
    assert answered < 2, answered
    assert json.loads(body)["error"]["code"] == "unauthorized"
    assert headers["www-authenticate"].startswith("Bearer")
    grown = api.rss_bytes() - before
    assert grown < 30 * MiB, f"the API grew by {grown / MiB:.0f} MiB"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_route_limit_is_413_and_never_held(served: Served, chunked: bool) -> None:
    api = served.api
    before = api.rss_bytes()
    with api.connect() as sock:
        sock.sendall(head("/v1/runs", length=None if chunked else 300 * MiB, key=served.key))
        if chunked:
            keep_sending(sock, 4 * JSON_LIMIT // MiB + 1, chunked=True)
        status, _, body = read_response(sock, timeout=5)
    assert status == 413, body[:300]
    error = json.loads(body)["error"]
    assert error["code"] == "payload_too_large"
    assert f"{JSON_LIMIT} bytes (request_max_json_bytes)" in error["message"]
    assert api.rss_bytes() - before < 30 * MiB


def test_malformed_json_without_a_key_is_401_and_with_one_422(served: Served) -> None:
    """Item 10: malformed JSON got its 422 before the key was checked."""
    with served.api.client() as client:
        bare = client.post(
            "/v1/runs", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        keyed = client.post(
            "/v1/runs", content=b"{not json",
            headers={"Content-Type": "application/json", **served.key},
        )  # fmt: skip
    assert bare.status_code == 401, bare.text
    assert keyed.status_code == 422, keyed.text
    assert keyed.json()["error"]["details"][0]["field"].startswith("body")


def test_a_body_that_is_not_utf8_is_a_documented_422(served: Served) -> None:
    """Item 10: a non-UTF-8 body got a 400 that the OpenAPI document does not list."""
    with served.api.client() as client:
        response = client.post(
            "/v1/runs", content=b'{"architecture": "\xff\xfe"}',
            headers={"Content-Type": "application/json", **served.key},
        )  # fmt: skip
        spec = client.get("/openapi.json").json()
    assert response.status_code == 422, response.text
    assert "UTF-8" in response.json()["error"]["message"]
    assert "422" in spec["paths"]["/v1/runs"]["post"]["responses"]


JSON_BOMBS = {
    "nested 30,000 deep": (b"[" * 30_000 + b"]" * 30_000, "request_json_max_depth"),
    "a 5,000-digit integer": (
        b'{"epochs": 1' + b"0" * 5000 + b"}",
        "request_json_max_number_chars",
    ),
    "a 5,000-digit float": (b'{"epochs": 0.' + b"1" * 5000 + b"}", "request_json_max_number_chars"),
    "deep inside a string is fine, deep outside is not": (
        b'{"a": "' + b"[" * 5000 + b'", "b": ' + b"[" * 40 + b"]" * 40 + b"}",
        "request_json_max_depth",
    ),
}


@pytest.mark.parametrize("path", ["/v1/runs", "/v1/experiments", "/v1/datasets"])
def test_json_too_deep_or_with_huge_numbers_is_a_422_naming_the_limit(
    served: Served, path: str
) -> None:
    with served.api.client() as client:
        for what, (body, setting) in JSON_BOMBS.items():
            response = client.post(
                path, content=body, headers={"Content-Type": "application/json", **served.key}
            )
            assert response.status_code == 422, (what, response.text[:300])
            assert setting in response.json()["error"]["message"], what
        assert client.get("/healthz").status_code == 200


def test_a_stalled_body_is_408_within_the_idle_timeout(served: Served) -> None:
    """Item 10: a stalled upload stayed open indefinitely."""
    upload = "multipart/form-data; boundary=b"
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n\r\nPK'
    start = b'{"architecture": '
    cases = [
        ("/v1/runs", False, JSON, start),
        ("/v1/runs", True, JSON, start),
        ("/v1/datasets/upload", False, upload, part),
    ]
    for path, chunked, kind, first in cases:
        with served.api.connect() as sock:
            sock.sendall(head(path, length=None if chunked else 1000, key=served.key, kind=kind))
            sock.sendall(piece(first, chunked))
            started = time.monotonic()
            status, _, body = read_response(sock, timeout=IDLE_TIMEOUT_S + 5)
            waited = time.monotonic() - started
        assert status == 408, (path, body[:300])
        assert "request_body_idle_timeout_s" in json.loads(body)["error"]["message"]
        assert IDLE_TIMEOUT_S * 0.9 <= waited < IDLE_TIMEOUT_S + 2, waited


def test_a_body_that_drips_in_is_408_at_the_total_timeout(served: Served) -> None:
    """A byte now and then keeps the idle timeout away; the whole body still has a deadline."""
    with served.api.connect() as sock:
        sock.sendall(head("/v1/runs", length=1000, key=served.key))
        started = time.monotonic()
        while time.monotonic() - started < TOTAL_TIMEOUT_S + 3:
            readable, _, _ = select.select([sock], [], [], IDLE_TIMEOUT_S / 3)
            if readable:
                break
            sock.sendall(b" ")
        waited = time.monotonic() - started
        status, _, body = read_response(sock, timeout=5)
    assert status == 408, body[:300]
    assert "request_body_timeout_s" in json.loads(body)["error"]["message"]
    assert TOTAL_TIMEOUT_S * 0.9 <= waited < TOTAL_TIMEOUT_S + 2, waited


def test_booleans_are_not_numbers(served: Served) -> None:
    """Item 10: ``seeds: [false]`` was accepted as seed 0."""
    experiment = {"name": "bools", "architectures": ["resnet20"], "base": {"data": RUN["data"]}}
    cases = [
        ("/v1/experiments", {**experiment, "seeds": [False]}, "seeds.0"),
        ("/v1/experiments", {**experiment, "random": {"trials": True, "space": {
            "schedule.base_lr": {"low": 0.01, "high": 0.1}}}}, "random.trials"),
        ("/v1/experiments", {**experiment, "base": {**experiment["base"], "epochs": True}},
         "epochs"),
        ("/v1/runs", {**RUN, "epochs": True}, "epochs"),
        ("/v1/runs", {**RUN, "schedule": {"base_lr": False}}, "schedule.base_lr"),
        ("/v1/runs", {**RUN, "input_shape": [8, True, 3]}, "input_shape.1"),
        ("/v1/runs", {**RUN, "seed": False}, "seed"),
    ]  # fmt: skip
    with served.api.client() as client:
        for path, body, field in cases:
            response = client.post(path, json=body, headers=served.key)
            assert response.status_code == 422, (path, body, response.text)
            assert field in response.text, (field, response.text)
        # a boolean where one belongs is still fine
        assert (
            client.post("/v1/runs", json={**RUN, "xla": False}, headers=served.key).status_code
            == 202
        )


def test_every_openapi_reference_resolves(served: Served) -> None:
    """Item 10: ``$ref``s to ``_B64``, ``PredictionScore`` and ``PredictionRow`` dangled."""
    with served.api.client() as client:
        spec = client.get("/openapi.json").json()
    text = json.dumps(spec)
    refs = set(re.findall(r'"\$ref": "([^"]+)"', text))
    schemas = spec["components"]["schemas"]
    dangling = [r for r in refs if r.removeprefix("#/components/schemas/") not in schemas]
    assert refs and not dangling, dangling
    assert "$defs" not in text
    for path in ("/v1/models/{name}/predict", "/v1/models/{name}/versions/{version}/predict"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"] == {"$ref": "#/components/schemas/PredictJson"}
    tf_body = spec["paths"]["/v1/models/{name}:predict"]["post"]["requestBody"]["content"]
    assert tf_body["application/json"]["schema"] == {"$ref": "#/components/schemas/TFServingJson"}
    image = schemas["Base64Image"]
    assert set(image["properties"]) == {"b64", "name"}


def test_failed_keys_are_logged_and_slowed_but_valid_keys_are_not(served: Served) -> None:
    """Item 10: failed keys were neither slowed nor logged."""
    bad = {"Authorization": "Bearer rsk_guessed-0000000000000000"}
    with served.api.client() as client:
        answers = [client.get("/v1/runs", headers=bad) for _ in range(FAILURES_BURST + 2)]
        valid = client.get("/v1/runs", headers=served.key)
    assert [a.status_code for a in answers[:FAILURES_BURST]] == [401] * FAILURES_BURST
    for throttled in answers[FAILURES_BURST:]:
        assert throttled.status_code == 429, throttled.text
        assert int(throttled.headers["Retry-After"]) >= 1
    assert valid.status_code == 200, valid.text
    log = served.api.log()
    assert log.count("refused API key 'rsk_gues'") == FAILURES_BURST + 2
    assert "from 127.0.0.1" in log
    assert "rsk_guessed-0000" not in log  # only the prefix is written down
