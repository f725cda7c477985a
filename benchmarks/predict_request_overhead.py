"""In-process CPU cost of one predict request through the whole ASGI app, model stubbed out.

Usage: ``python benchmarks/predict_request_overhead.py [N] [MODE]`` (N requests, default 3000;
MODE ``app`` or a middleware class name to start lower in the stack). Run it on two trees with
``PYTHONPATH=<tree>`` and alternate, as docs/benchmarks.md ("The predict route table") did.

Same script for both trees: the stub replaces what runs the images through the model
(``_run`` in service.routes.models before, ``predict_images`` in service.predict.handlers
after) and the model-name lookup, so what is left is HTTP parsing of the body, routing,
auth (trusted-key cache), error/metrics layers and the answer: the part the two shapes differ in.
"""

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from jobs.records import make_engine, make_sessionmaker, session_scope, upgrade_to_head
from jobs.records import repository as records
from jobs.settings import Settings
from service.app import create_app
from service.inference.cache import ModelRef
from service.inference.runtime import Inference

N = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
root = Path(tempfile.mkdtemp())
url = f"sqlite:///{root / 'r.db'}"
upgrade_to_head(url)
settings = Settings(state_dir=root, database_url=url, data_root=root)
engine = make_engine(url)
with session_scope(make_sessionmaker(engine)) as s:
    _, secret = records.create_api_key(s, "bench", ["predict"])


class FakeModel:
    num_classes, threshold, multi_label = 10, 0.5, False
    class_names = tuple(str(i) for i in range(10))


ROW = np.linspace(0, 1, 10, dtype=np.float32)


async def fake_run(inference, ref, images):
    return FakeModel, [ROW for _ in images]


async def fake_resolve(self, name, version):
    return ModelRef(run_id="0" * 32, uri="x", name=name, version=version, architecture="resnet20")


Inference.resolve = fake_resolve
try:
    import service.predict.handlers as handlers

    handlers.predict_images = fake_run  # type: ignore[assignment]
    side = "after"
except ImportError:  # the tree before the predict route table (0672045)
    import service.routes.models as models

    models._run = fake_run  # type: ignore[attr-defined]
    side = "before"

app = create_app(settings)
png = b"\x89PNG" + b"\x00" * 200
body = (
    b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n" + png + b"\r\n--b--\r\n"
)
headers = [
    (b"host", b"x"),
    (b"authorization", f"Bearer {secret}".encode()),
    (b"content-type", b"multipart/form-data; boundary=b"),
    (b"content-length", str(len(body)).encode()),
]


async def one() -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/models/r20/predict",
        "raw_path": b"/v1/models/r20/predict",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("x", 80),
        "state": {},
    }
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)

    status = 0

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await TARGET(scope, receive, send)
    return status


TARGET = app
MODE = sys.argv[2] if len(sys.argv) > 2 else "app"


async def main():
    global TARGET
    # lifespan not needed: state is set by create_app
    await one()
    if MODE != "app":  # start lower in the stack, to price the layers above
        layer = app.middleware_stack
        while type(layer).__name__ != MODE:
            layer = layer.app

        async def below(scope, receive, send, layer=layer):
            scope["app"] = app
            await layer(scope, receive, send)

        TARGET = below
    for _ in range(200):
        assert await one() == 200
    batches = []
    for _ in range(N // 100):  # the minimum over batches: least disturbed by other processes
        c0 = time.process_time()
        for _ in range(100):
            await one()
        batches.append(1e4 * (time.process_time() - c0))
    batches.sort()
    print(
        json.dumps(
            {
                "side": side,
                "mode": MODE,
                "n": N,
                "cpu_us_min": round(batches[0], 1),
                "cpu_us_p25": round(batches[len(batches) // 4], 1),
                "cpu_us_median": round(batches[len(batches) // 2], 1),
            }
        )
    )


asyncio.run(main())
