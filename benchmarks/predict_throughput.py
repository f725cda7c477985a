"""Prediction over HTTP against the raw model, in one run: throughput and single-image latency.

Sets up a state folder (SQLite at head, an untrained ResNet-20 for 32×32×3 inputs saved as a
succeeded run's ``model.keras``, promoted to the model ``r20``, a ``predict`` key), starts the
real API under uvicorn (one worker, uvloop + httptools, as a separate process), then measures:

(a) the raw model in this process: a ``tf.function`` forward at batch 256, images/s;
(b) the raw model at batch 1: p50 latency of one call (ms);
(c) ``--clients`` concurrent HTTP clients (asyncio + httpx, keep-alive), each sending one 32×32
    PNG per request, back to back: images/s, and its ratio to (a);
(d) one client sending one image at a time: p50 latency, and its difference to (b).

(a) and (b) are measured before and after the HTTP phases; the higher throughput and the lower
latency are the baseline (the conservative choice on a shared machine). The load generator runs
on the same machine as the server: on a 2-core VM the clients' own CPU time competes with the
server's, and the report says how much CPU each side used.

    python benchmarks/predict_throughput.py --json docs/results/predict_throughput.json
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from core.records import make_engine, make_sessionmaker, session_scope, upgrade_to_head  # noqa: E402
from core.records import repository as records  # noqa: E402

MODEL = "r20"
SHAPE = (32, 32, 3)
CLASSES = 10


# --- setup -----------------------------------------------------------------------------------


def build_model(folder: Path) -> Path:
    """An untrained ResNet-20 (accuracy does not matter for speed), saved as a run saves it."""
    from core.models import build_model as build

    folder.mkdir(parents=True, exist_ok=True)
    model = build("resnet20", input_shape=SHAPE, num_classes=CLASSES)
    rng = np.random.default_rng(0)
    model.get_layer("preprocess").set_statistics(rng.uniform(100, 150, SHAPE))
    path = folder / "model.keras"
    model.save(path)
    names = [f"class_{i}" for i in range(CLASSES)]
    (folder / "labels.json").write_text(json.dumps({"class_names": names, "multi_label": False}))
    return path


def record(db_url: str, model_path: Path) -> str:
    """A succeeded run with the model artifact, promoted to ``r20``; returns a predict key."""
    upgrade_to_head(db_url)
    engine = make_engine(db_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            run = records.create_run(
                session, architecture="resnet20", dataset="synthetic", config={}
            )
            records.claim_run(session, run.id, worker_host="bench")
            records.finish_run(session, run.id, status="succeeded")
            uri = str(model_path)
            records.add_artifact(session, run.id, kind="model", uri=uri, path=model_path)
            records.promote_run(session, run.id, MODEL)
            _, secret = records.create_api_key(session, "bench", ["predict"])
    finally:
        engine.dispose()
    return secret


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(state: Path, db_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RESNET_STATE_DIR": str(state),
        "RESNET_DATABASE_URL": db_url,
        "RESNET_ARTIFACT_ROOT": str(state / "runs"),
    }
    command = [
        sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not start in 120 s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- (a), (b): the raw model -----------------------------------------------------------------


def raw_model(model_path: Path, *, seconds: float) -> dict[str, float]:
    import keras
    import tensorflow as tf

    from core.models import CUSTOM_OBJECTS

    model = keras.saving.load_model(model_path, custom_objects=CUSTOM_OBJECTS, compile=False)
    forward = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec((None, *SHAPE), tf.float32)],
    )
    rng = np.random.default_rng(1)
    big = tf.constant(rng.integers(0, 256, (256, *SHAPE)).astype(np.float32))
    one = rng.integers(0, 256, (1, *SHAPE)).astype(np.float32)
    for _ in range(3):
        forward(big).numpy()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or calls < 5:
        forward(big).numpy()
        calls += 1
    throughput = calls * 256 / (time.perf_counter() - started)
    for _ in range(20):
        forward(tf.constant(one)).numpy()
    latencies = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds / 2 or len(latencies) < 100:
        t = time.perf_counter()
        forward(tf.constant(one)).numpy()  # as the server does: array → tensor → numpy
        latencies.append(time.perf_counter() - t)
    return {
        "batch256_images_per_s": throughput,
        "batch1_p50_ms": statistics.median(latencies) * 1e3,
        "batch1_p90_ms": float(np.percentile(latencies, 90)) * 1e3,
    }


# --- (c), (d): over HTTP ---------------------------------------------------------------------


def png_images(count: int) -> list[bytes]:
    rng = np.random.default_rng(2)
    images = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, SHAPE, dtype=np.uint8)).save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


def request_kwargs(body: str, image: bytes) -> dict[str, Any]:
    if body == "multipart":
        return {"files": {"file": ("image.png", image, "image/png")}}
    return {"content": image, "headers": {"Content-Type": "image/png"}}


async def load_test(
    url: str, secret: str, images: list[bytes], *, clients: int, seconds: float, body: str
) -> dict[str, float]:
    """``clients`` clients, each with its own keep-alive connection, one image per request."""
    done = 0
    errors = 0
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def client(index: int) -> None:
        nonlocal done, errors
        headers = {"Authorization": f"Bearer {secret}"}
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits) as http:
            i = index
            while time.perf_counter() < stop:
                kwargs = request_kwargs(body, images[i % len(images)])
                t = time.perf_counter()
                response = await http.post(f"/v1/models/{MODEL}/predict?top_k=1", **kwargs)
                latencies.append(time.perf_counter() - t)
                if response.status_code == 200:
                    done += 1
                else:
                    errors += 1
                i += clients

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    return {
        "images_per_s": done / elapsed,
        "requests": done,
        "errors": errors,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p90_ms": float(np.percentile(latencies, 90)) * 1e3,
        "seconds": elapsed,
    }


def measure_http(
    url: str, secret: str, server_pid: int, *, clients: int, seconds: float, body: str
) -> dict[str, Any]:
    images = png_images(64)
    # warm-up: load the model, fill connection pools, let the batcher settle
    asyncio.run(load_test(url, secret, images, clients=clients, seconds=2, body=body))
    server_cpu, own_cpu = cpu_seconds(server_pid), own_cpu_seconds()
    concurrent = asyncio.run(
        load_test(url, secret, images, clients=clients, seconds=seconds, body=body)
    )
    concurrent["server_cpu_cores"] = (cpu_seconds(server_pid) - server_cpu) / concurrent["seconds"]
    concurrent["client_cpu_cores"] = (own_cpu_seconds() - own_cpu) / concurrent["seconds"]
    single = asyncio.run(load_test(url, secret, images, clients=1, seconds=seconds / 2, body=body))
    return {"concurrent": concurrent, "single": single}


def batcher_summary(url: str) -> dict[str, float]:
    """Mean batch size, queue and compute time over the whole run, from /metrics."""
    values: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        for name in ("batch_size", "queue_seconds", "compute_seconds"):
            for part in ("sum", "count"):
                metric = f"resnet_predict_{name}_{part}"
                if line.startswith(metric + "{"):
                    values[f"{name}_{part}"] = values.get(f"{name}_{part}", 0.0) + float(
                        line.rsplit(" ", 1)[1]
                    )
    count = values.get("batch_size_count", 0.0) or 1.0
    images = values.get("queue_seconds_count", 0.0) or 1.0
    return {
        "model_calls": values.get("batch_size_count", 0.0),
        "mean_batch_size": values.get("batch_size_sum", 0.0) / count,
        "mean_queue_ms": values.get("queue_seconds_sum", 0.0) / images * 1e3,
        "mean_compute_ms": values.get("compute_seconds_sum", 0.0) / count * 1e3,
    }


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="per HTTP phase")
    parser.add_argument(
        "--body", choices=["multipart", "raw", "both"], default="both",
        help="how each image is sent: a multipart file, or a bare image/png body",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="predict-bench-"))
    server = None
    try:
        db_url = f"sqlite:///{state / 'resnet.db'}"
        model_path = build_model(state / "runs" / "r20")
        secret = record(db_url, model_path)
        port = free_port()
        server = start_server(state, db_url, port, state / "server.log")
        url = f"http://127.0.0.1:{port}"

        raw_before = raw_model(model_path, seconds=args.seconds / 2)
        bodies = ["multipart", "raw"] if args.body == "both" else [args.body]
        http = {
            body: measure_http(
                url, secret, server.pid, clients=args.clients, seconds=args.seconds, body=body
            )
            for body in bodies
        }
        raw_after = raw_model(model_path, seconds=args.seconds / 2)
        batcher = batcher_summary(url)
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(state, ignore_errors=True)

    raw_throughput = max(raw_before["batch256_images_per_s"], raw_after["batch256_images_per_s"])
    raw_latency = min(raw_before["batch1_p50_ms"], raw_after["batch1_p50_ms"])
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "model": "resnet20 (untrained), 32x32x3, 10 classes, float32",
        "clients": args.clients,
        "seconds_per_phase": args.seconds,
        "raw": {"before": raw_before, "after": raw_after,
                "batch256_images_per_s": raw_throughput, "batch1_p50_ms": raw_latency},
        "http": {},
        "batcher": batcher,
    }  # fmt: skip
    for body, measured in http.items():
        results["http"][body] = {
            **measured,
            "ratio_to_raw_throughput": measured["concurrent"]["images_per_s"] / raw_throughput,
            "latency_over_raw_ms": measured["single"]["p50_ms"] - raw_latency,
        }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
