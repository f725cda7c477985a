"""Soak: 100 concurrent predict clients for 60 s with a training run beside them (issue 9).

Sets up a state folder as ``predict_throughput.py`` does (an untrained ResNet-20 promoted to
``r20``), starts the real API under uvicorn and a real Celery worker on it, queues a training run
(ResNet-8 on synthetic data, long enough to outlast the soak) through the API, then runs
``--clients`` keep-alive HTTP clients, each sending one 32×32 PNG per request back to back, for
``--warmup`` seconds (not counted) and then ``--seconds`` seconds. Reported: requests, errors (any
non-200 or transport error, with their kinds), p50/p99/max latency, images/s, the API process's
RSS after the warm-up and at the end (growth in %), and how many epochs the training run finished
meanwhile. The training run is cancelled at the end.

    python benchmarks/soak.py --json docs/results/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from predict_throughput import (  # noqa: E402
    PATH,
    build_model,
    free_port,
    multipart,
    png_images,
    record,
    start_server,
)

TRAINING = {
    "architecture": "resnet8",
    "data": "synthetic:20000:32x32x3:10",
    "epochs": 50,
    "batch_size": 64,
    "precision": "float32",
}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def admin_key(db_url: str) -> str:
    from jobs.records import make_engine, make_sessionmaker, session_scope
    from jobs.records import repository as records

    engine = make_engine(db_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            return records.create_api_key(session, "soak-admin", ["admin"])[1]
    finally:
        engine.dispose()


def start_worker(state: Path, db_url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RESNET_STATE_DIR": str(state), "RESNET_DATABASE_URL": db_url}
    command = [
        sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", "training",
        "--concurrency", "1", "--pool", "prefork", "--loglevel", "WARNING",
    ]  # fmt: skip
    with (state / "worker.log").open("wb") as out:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


async def client(
    http: httpx.AsyncClient, body: tuple[bytes, str], stop: float, counting: list[bool],
    latencies: list[float], errors: collections.Counter[str],
) -> None:  # fmt: skip
    content, content_type = body
    while time.perf_counter() < stop:
        started = time.perf_counter()
        try:
            response = await http.post(
                PATH, content=content, headers={"Content-Type": content_type}
            )
            kind = None if response.status_code == 200 else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            kind = type(exc).__name__
        if counting[0]:
            latencies.append(time.perf_counter() - started)
            if kind is not None:
                errors[kind] += 1


async def soak(
    url: str, secret: str, server_pid: int, *, clients: int, warmup: float, seconds: float
) -> dict[str, Any]:
    images = [multipart(i) for i in png_images(clients)]
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    counting = [False]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    timeout = httpx.Timeout(60.0)
    headers = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=timeout
    ) as http:
        stop = time.perf_counter() + warmup + seconds
        tasks = [
            asyncio.create_task(client(http, images[i], stop, counting, latencies, errors))
            for i in range(clients)
        ]
        await asyncio.sleep(warmup)
        counting[0] = True
        rss_start = rss_bytes(server_pid)
        started = time.perf_counter()
        peak = rss_start
        while time.perf_counter() < stop:
            await asyncio.sleep(1.0)
            peak = max(peak, rss_bytes(server_pid))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    rss_end = rss_bytes(server_pid)
    ms = np.array(latencies) * 1e3
    return {
        "requests": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "images_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "max_ms": round(float(ms.max()), 1),
        "api_rss_mb_after_warmup": round(rss_start / 2**20, 1),
        "api_rss_mb_peak": round(peak / 2**20, 1),
        "api_rss_mb_end": round(rss_end / 2**20, 1),
        "api_rss_growth_percent": round(100 * (rss_end - rss_start) / rss_start, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="soak-"))
    db_url = f"sqlite:///{state / 'resnet.db'}"
    model = build_model(state / "model")
    secret = record(db_url, model)
    admin = admin_key(db_url)
    port = free_port()
    server = start_server(state, db_url, port, cpus=None)
    worker = start_worker(state, db_url)
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {admin}"}
    try:
        run = httpx.post(f"{url}/v1/runs", json=TRAINING, headers=auth, timeout=30).json()
        deadline = time.monotonic() + 180
        while httpx.get(f"{url}/v1/runs/{run['id']}", headers=auth).json()["status"] != "running":
            if time.monotonic() > deadline:
                raise RuntimeError("the training run did not start in 180 s")
            time.sleep(1)
        # Load the model first (TensorFlow's import and the model's load take a while on a busy
        # machine): the soak measures serving, not the first request.
        body, content_type = multipart(png_images(1)[0])
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": content_type}
        deadline = time.monotonic() + 600
        while httpx.post(f"{url}{PATH}", content=body, headers=headers, timeout=120).is_error:
            if time.monotonic() > deadline:  # the server answers 504 while the model loads
                raise RuntimeError("the model did not load in 600 s")
        results = asyncio.run(
            soak(url, secret, server.pid, clients=args.clients, warmup=args.warmup,
                 seconds=args.seconds)
        )  # fmt: skip
        beside = httpx.get(f"{url}/v1/runs/{run['id']}", headers=auth).json()
        results["training_beside"] = {
            "status": beside["status"],
            "epochs_completed": beside["epochs_completed"],
            "progress": beside.get("progress"),
        }
        httpx.post(f"{url}/v1/runs/{run['id']}/cancel", headers=auth, timeout=30)
    finally:
        server.send_signal(signal.SIGTERM)
        os.killpg(worker.pid, signal.SIGQUIT)  # Celery's cold shutdown: the run is cancelled
        server.wait(timeout=30)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
    results.update(
        clients=args.clients,
        seconds=args.seconds,
        warmup_s=args.warmup,
        command="python benchmarks/soak.py " + " ".join(sys.argv[1:]),
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs",
    )
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
