"""Prediction over HTTP against the raw model, in one run: throughput and single-image latency.

Sets up a state folder (SQLite at head; an untrained ResNet-20 for 32×32×3 inputs saved as a
succeeded run's ``model.keras``, promoted to the model ``r20``; a ``predict`` key), starts the
real API under uvicorn (one worker, uvloop + httptools) as a separate process, then measures, in
``--rounds`` interleaved rounds (medians reported; the machine is shared):

(a) the raw model: a ``tf.function`` forward at batch 256 (images/s), in a separate process
    pinned to the server's CPUs;
(a') the same at batch ``--clients``: the most that many single-image clients can ever batch
    together, hence the ceiling of (c) with a free HTTP stack;
(b) the raw model at batch 1: p50 latency of one call, numpy in and out (ms);
(c) ``--clients`` concurrent HTTP clients (asyncio + httpx, keep-alive), each sending one
    32×32 PNG per request as a multipart file, back to back: images/s, and the ratio to (a);
(d) one client sending one image at a time: p50 latency, and the difference to (b).

(c) and (d) are also measured with the image as a bare ``image/png`` body, and with a minimal
client (hand-written HTTP/1.1 on asyncio streams, a few µs per request) that shows what the
server sustains when the load generator's own CPU cost is taken out of the picture. The CPU
seconds each side used are reported: on a 2-core machine the clients compete with the server.

    python benchmarks/predict_throughput.py --json docs/results/predict_throughput.json

On a bigger machine, give the server (and the raw model) the same CPUs and the clients others:

    python benchmarks/predict_throughput.py --server-cpus 0,1 --client-cpus 2-7
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

MODEL = "r20"
SHAPE = (32, 32, 3)
CLASSES = 10
PATH = f"/v1/models/{MODEL}/predict?top_k=1"


# --- setup -----------------------------------------------------------------------------------


def build_model(folder: Path) -> Path:
    """An untrained ResNet-20 (accuracy does not matter for speed), saved as a run saves it."""
    from core.models import build_model as build
    from core.training.rundir import LABELS_FILE, MODEL_FILE

    folder.mkdir(parents=True, exist_ok=True)
    model = build("resnet20", input_shape=SHAPE, num_classes=CLASSES)
    rng = np.random.default_rng(0)
    model.get_layer("preprocess").set_statistics(rng.uniform(100, 150, SHAPE))
    path = folder / MODEL_FILE
    model.save(path)
    names = [f"class_{i}" for i in range(CLASSES)]
    (folder / LABELS_FILE).write_text(json.dumps({"class_names": names, "multi_label": False}))
    return path


def record(db_url: str, model_path: Path) -> str:
    """A succeeded run with the model artifact, promoted to ``r20``; returns a predict key."""
    from jobs.records import make_engine, make_sessionmaker, session_scope, upgrade_to_head
    from jobs.records import repository as records

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


def parse_cpus(spec: str | None) -> set[int] | None:
    """``"0,1"`` or ``"2-7"`` → a CPU set (None: no pinning)."""
    if not spec:
        return None
    cpus: set[int] = set()
    for part in spec.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def pinned(cpus: set[int] | None) -> Callable[[], None] | None:
    return None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    state: Path, db_url: str, port: int, *, cpus: set[int] | None
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RESNET_STATE_DIR": str(state), "RESNET_DATABASE_URL": db_url}
    command = [
        sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    log = state / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=pinned(cpus),
        )  # fmt: skip
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
    """User + system CPU seconds of a process and its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- (a), (b): the raw model, in its own process ---------------------------------------------


def raw_model(model_path: Path, seconds: float, clients: int) -> dict[str, float]:
    """Images/s at batch 256 and at batch ``clients`` (the largest batch that many single-image
    clients can form), and batch-1 latency, of a tf.function over the Keras model."""
    import keras
    import tensorflow as tf

    from core.models import CUSTOM_OBJECTS

    model = keras.saving.load_model(model_path, custom_objects=CUSTOM_OBJECTS, compile=False)
    forward = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec((None, *SHAPE), tf.float32)],
    )
    rng = np.random.default_rng(1)
    big = rng.integers(0, 256, (256, *SHAPE)).astype(np.float32)
    one = rng.integers(0, 256, (1, *SHAPE)).astype(np.float32)
    for _ in range(3):
        forward(tf.constant(big)).numpy()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or calls < 5:
        forward(tf.constant(big)).numpy()
        calls += 1
    throughput = calls * 256 / (time.perf_counter() - started)
    small = rng.integers(0, 256, (clients, *SHAPE)).astype(np.float32)
    for _ in range(3):
        forward(tf.constant(small)).numpy()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds / 2 or calls < 20:
        forward(tf.constant(small)).numpy()
        calls += 1
    at_clients = calls * clients / (time.perf_counter() - started)
    for _ in range(20):
        forward(tf.constant(one)).numpy()
    latencies = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds / 2 or len(latencies) < 100:
        t = time.perf_counter()
        forward(tf.constant(one)).numpy()
        latencies.append(time.perf_counter() - t)
    return {
        "batch256_images_per_s": throughput,
        "batch_clients_images_per_s": at_clients,
        "batch1_p50_ms": statistics.median(latencies) * 1e3,
    }


def measure_raw(
    model_path: Path, seconds: float, clients: int, cpus: set[int] | None
) -> dict[str, float]:
    command = [sys.executable, __file__, "--raw-only", str(model_path)]
    done = subprocess.run(
        [*command, "--seconds", str(seconds), "--clients", str(clients)],
        capture_output=True, text=True, check=True, preexec_fn=pinned(cpus),
    )  # fmt: skip
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- (c), (d): over HTTP ---------------------------------------------------------------------


def png_images(count: int) -> list[bytes]:
    rng = np.random.default_rng(2)
    images = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, SHAPE, dtype=np.uint8)).save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


def multipart(image: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="image.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def bodies(images: list[bytes], kind: str) -> list[tuple[bytes, str]]:
    return [multipart(i) if kind == "multipart" else (i, "image/png") for i in images]


async def httpx_client(
    url: str, secret: str, requests: list[tuple[bytes, str]], stop: float, first: int, step: int,
    latencies: list[float],
) -> int:  # fmt: skip
    """One keep-alive httpx client sending requests back to back until ``stop``."""
    done = 0
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    auth = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(base_url=url, headers=auth, limits=limits) as http:
        i = first
        while time.perf_counter() < stop:
            body, content_type = requests[i % len(requests)]
            t = time.perf_counter()
            response = await http.post(PATH, content=body, headers={"Content-Type": content_type})
            latencies.append(time.perf_counter() - t)
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
            done += 1
            i += step
    return done


_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


async def minimal_client(
    url: str, secret: str, requests: list[tuple[bytes, str]], stop: float, first: int, step: int,
    latencies: list[float],
) -> int:  # fmt: skip
    """HTTP/1.1 by hand on one keep-alive connection: the cheapest possible load generator."""
    host, port = url.removeprefix("http://").split(":")
    raw = [
        (f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {secret}\r\n"
         f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        for body, content_type in requests
    ]  # fmt: skip
    reader, writer = await asyncio.open_connection(host, int(port))
    done, i = 0, first
    try:
        while time.perf_counter() < stop:
            t = time.perf_counter()
            writer.write(raw[i % len(raw)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = _LENGTH.search(head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            latencies.append(time.perf_counter() - t)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.decode(errors="replace"))
            done += 1
            i += step
    finally:
        writer.close()
    return done


async def load(
    client: Any, url: str, secret: str, requests: list[tuple[bytes, str]], *,
    clients: int, seconds: float,
) -> dict[str, float]:  # fmt: skip
    latencies: list[float] = []
    started = time.perf_counter()
    stop = started + seconds
    counts = await asyncio.gather(
        *(client(url, secret, requests, stop, i, clients, latencies) for i in range(clients))
    )
    elapsed = time.perf_counter() - started
    return {
        "images_per_s": sum(counts) / elapsed,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p90_ms": float(np.percentile(latencies, 90)) * 1e3,
    }


def http_phase(
    client: Any, url: str, secret: str, requests: list[tuple[bytes, str]], server_pid: int, *,
    clients: int, seconds: float,
) -> dict[str, float]:  # fmt: skip
    import uvloop

    def run(n: int, s: float) -> dict[str, float]:
        return uvloop.run(load(client, url, secret, requests, clients=n, seconds=s))

    run(clients, 1.0)  # warm the connections and the batcher
    server_cpu, own_cpu, t = cpu_seconds(server_pid), own_cpu_seconds(), time.perf_counter()
    concurrent = run(clients, seconds)
    elapsed = time.perf_counter() - t
    single = run(1, seconds / 2)
    return {
        "concurrent_images_per_s": concurrent["images_per_s"],
        "concurrent_p50_ms": concurrent["p50_ms"],
        "server_cpu_cores": (cpu_seconds(server_pid) - server_cpu) / elapsed,
        "client_cpu_cores": (own_cpu_seconds() - own_cpu) / elapsed,
        "single_p50_ms": single["p50_ms"],
        "single_p90_ms": single["p90_ms"],
    }


def batcher_summary(url: str) -> dict[str, float]:
    """Mean batch size, queue and compute time over the whole run, from /metrics."""
    values: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        match = re.match(
            r"resnet_predict_(batch_size|queue_seconds|compute_seconds)_(sum|count)\{", line
        )
        if match:
            key = f"{match[1]}_{match[2]}"
            values[key] = values.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    calls = values.get("batch_size_count", 0.0) or 1.0
    images = values.get("queue_seconds_count", 0.0) or 1.0
    return {
        "model_calls": values.get("batch_size_count", 0.0),
        "mean_batch_size": values.get("batch_size_sum", 0.0) / calls,
        "mean_queue_ms": values.get("queue_seconds_sum", 0.0) / images * 1e3,
        "mean_compute_ms": values.get("compute_seconds_sum", 0.0) / calls * 1e3,
    }


# --- main ------------------------------------------------------------------------------------

PHASES = {  # name: (client, body)
    "httpx_multipart": (httpx_client, "multipart"),
    "httpx_png_body": (httpx_client, "png"),
    "minimal_multipart": (minimal_client, "multipart"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="per concurrent phase")
    parser.add_argument("--server-cpus", help="pin the server and the raw model, e.g. 0,1")
    parser.add_argument("--client-cpus", help="pin the load generator, e.g. 2-7")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"which of {', '.join(PHASES)}")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--raw-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_only:
        print(json.dumps(raw_model(args.raw_only, args.seconds, args.clients)))
        return

    phases = {name: PHASES[name] for name in args.phases.split(",")}
    server_cpus, client_cpus = parse_cpus(args.server_cpus), parse_cpus(args.client_cpus)
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)
    state = Path(tempfile.mkdtemp(prefix="predict-bench-"))
    server = None
    rounds: list[dict[str, Any]] = []
    try:
        db_url = f"sqlite:///{state / 'resnet.db'}"
        model_path = build_model(state / "runs" / "r20")
        secret = record(db_url, model_path)
        port = free_port()
        server = start_server(state, db_url, port, cpus=server_cpus)
        url = f"http://127.0.0.1:{port}"
        images = png_images(64)
        requests = {kind: bodies(images, kind) for kind in ("multipart", "png")}
        for index in range(args.rounds):
            measured: dict[str, Any] = {
                "raw": measure_raw(model_path, args.seconds / 2, args.clients, server_cpus)
            }
            for name, (client, kind) in phases.items():
                measured[name] = http_phase(
                    client, url, secret, requests[kind], server.pid,
                    clients=args.clients, seconds=args.seconds,
                )  # fmt: skip
            rounds.append(measured)
            print(f"round {index + 1}: {json.dumps(measured)}", file=sys.stderr)
        batcher = batcher_summary(url)
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(state, ignore_errors=True)

    def median(path: tuple[str, str]) -> float:
        return statistics.median(r[path[0]][path[1]] for r in rounds)

    raw = {key: median(("raw", key)) for key in rounds[0]["raw"]}
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "server_cpus": args.server_cpus, "client_cpus": args.client_cpus},
        "model": "resnet20 (untrained), 32x32x3, 10 classes, float32",
        "clients": args.clients,
        "rounds": args.rounds,
        "seconds_per_phase": args.seconds,
        "raw": raw,
        "http": {},
        "batcher": batcher,
        "per_round": rounds,
    }  # fmt: skip
    for name in phases:
        summary = {key: median((name, key)) for key in rounds[0][name]}
        summary["ratio_to_raw_throughput"] = statistics.median(
            r[name]["concurrent_images_per_s"] / r["raw"]["batch256_images_per_s"] for r in rounds
        )
        summary["latency_over_raw_ms"] = statistics.median(
            r[name]["single_p50_ms"] - r["raw"]["batch1_p50_ms"] for r in rounds
        )
        results["http"][name] = summary
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
