"""Prediction over HTTP against the raw model and a peer server, in one run (issue 11).

Sets up a state folder (SQLite at head; an untrained ResNet-20 for 32×32×3 inputs saved as a
succeeded run's ``model.keras``, promoted to the model ``r20``; a ``predict`` key), starts the
real API under uvicorn (one worker, uvloop + httptools) as a separate process and, with
``--peer bentoml``, the same model's SavedModel export under BentoML with adaptive batching
(``benchmarks/peers/bento_service.py``). Then, in ``--rounds`` interleaved rounds (medians
reported; the machine is shared by servers and clients):

- **raw**: the model alone, a ``tf.function`` forward in its own process (pinned to the
  server's CPUs), numpy in and out, at batch 256, at batch = clients (the largest batch that
  many waiting clients can ever form, hence the honest ceiling of a closed loop) and batch 1;
- **closed loop**: for each ``--clients`` count, that many keep-alive clients each sending one
  32×32 PNG per request back to back, with each client kind (``httpx``; ``minimal``, HTTP/1.1 by
  hand: see ``benchmarks/loadgen.py``), against each server; then one client alone (p50);
- **open loop** (``--open-loop RATES``): Poisson arrivals at each offered rate for
  ``--open-seconds``, latency from the scheduled send time; p50/p99 against the offered rate
  and the highest rate sustained with p99 <= ``--p99-ms``.

    python benchmarks/predict_throughput.py --clients 16,64 --peer bentoml \
        --open-loop 100,200,400,600,800,1000,1200 --json docs/results/predict_throughput.json

An A/B of a change to the request path: ``--baseline TREE`` also serves the API from another
checkout (``git worktree add /tmp/before HEAD~1``), in the same rounds, alternating who goes
first; ``closed_loop.baseline.*.ours_over_this`` is then this tree's images/s over the
baseline's, taken within each round (median over rounds).

    python benchmarks/predict_throughput.py --clients 16,64 --kinds minimal --rounds 5 \
        --baseline /tmp/before

BentoML is an optional group (``pip install -e '.[peers]'``); ``--bentoml-python`` names an
interpreter that has it if this one does not.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.loadgen import (  # noqa: E402
    CLIENTS,
    Target,
    closed_loop,
    highest_sustained,
    minimal_client,
    open_loop,
)

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
            _, secret = records.create_api_key(session, "bench", ["predict", "read"])
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
    state: Path, db_url: str, port: int, *, cpus: set[int] | None, tree: Path = ROOT,
    engine: str | None = None, extra_env: list[str] | None = None,
) -> subprocess.Popen[bytes]:  # fmt: skip
    """The API under uvicorn, from this checkout or another ``tree`` (an A/B's baseline),
    serving through ``engine`` (``RESNET_PREDICT_ENGINE``; None: the settings' default)."""
    state.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RESNET_STATE_DIR": str(state), "RESNET_DATABASE_URL": db_url}
    if engine:
        env["RESNET_PREDICT_ENGINE"] = engine
    for item in extra_env or []:  # NAME=VALUE
        name, _, value = item.partition("=")
        env[name] = value
    if tree != ROOT:
        env["PYTHONPATH"] = str(tree)  # its service/, core/ and jobs/ before this venv's
    command = [
        sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    log = state / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            command, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT,
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


def raw_model(
    model_path: Path, seconds: float, batches: list[int], engines: list[str]
) -> dict[str, float]:
    """Images/s at batch 256 and at each of ``batches`` (a closed loop of that many clients can
    batch no more), and batch-1 latency, of a tf.function over the Keras model; and for each
    other of ``engines`` (e.g. ``onnx``), its images/s at each of ``batches`` with the engine's
    own default threads (every core, as the Keras reference), as
    ``<engine>_batch<n>_images_per_s``: the reference for a server that computes on it."""
    import keras
    import tensorflow as tf

    from core.models import CUSTOM_OBJECTS

    model = keras.saving.load_model(model_path, custom_objects=CUSTOM_OBJECTS, compile=False)
    forward = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec((None, *SHAPE), tf.float32)],
    )
    rng = np.random.default_rng(1)

    def images_per_s(batch: int, budget: float, least: int) -> float:
        x = rng.integers(0, 256, (batch, *SHAPE)).astype(np.float32)
        for _ in range(3):
            forward(tf.constant(x)).numpy()
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < budget or calls < least:
            forward(tf.constant(x)).numpy()
            calls += 1
        return calls * batch / (time.perf_counter() - started)

    result = {"batch256_images_per_s": images_per_s(256, seconds, 5)}
    for batch in batches:
        result[f"batch{batch}_images_per_s"] = images_per_s(batch, seconds / 2, 20)
    one = rng.integers(0, 256, (1, *SHAPE)).astype(np.float32)
    for _ in range(20):
        forward(tf.constant(one)).numpy()
    latencies = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds / 2 or len(latencies) < 100:
        t = time.perf_counter()
        forward(tf.constant(one)).numpy()
        latencies.append(time.perf_counter() - t)
    result["batch1_p50_ms"] = statistics.median(latencies) * 1e3
    for name in engines:
        if name == "keras":
            continue
        result.update(_raw_engine(model, name, seconds / 2, batches))
    return result


def _raw_engine(model: Any, name: str, seconds: float, batches: list[int]) -> dict[str, float]:
    """Images/s of ``model`` on engine ``name`` as the server builds it (its export, checked
    against Keras), at each of ``batches``."""
    from core.inference.engines import make_engine

    forward = make_engine(model, SHAPE, engine=name).forward
    rng = np.random.default_rng(1)
    result = {}
    for batch in batches:
        x = rng.integers(0, 256, (batch, *SHAPE)).astype(np.float32)
        for _ in range(3):
            np.asarray(forward(x))
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds or calls < 20:
            np.asarray(forward(x))
            calls += 1
        elapsed = time.perf_counter() - started
        result[f"{name}_batch{batch}_images_per_s"] = calls * batch / elapsed
    return result


def measure_raw(
    model_path: Path, seconds: float, batches: list[int], cpus: set[int] | None,
    engines: list[str],
) -> dict[str, float]:  # fmt: skip
    command = [sys.executable, __file__, "--raw-only", str(model_path)]
    done = subprocess.run(
        [*command, "--seconds", str(seconds), "--clients", ",".join(map(str, batches)),
         "--raw-engines", ",".join(engines)],
        capture_output=True, text=True, check=True, preexec_fn=pinned(cpus),
    )  # fmt: skip
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- the servers ---------------------------------------------------------------------------


def png_images(count: int) -> list[bytes]:
    rng = np.random.default_rng(2)
    images = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, SHAPE, dtype=np.uint8)).save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


def multipart(image: bytes) -> tuple[bytes, str]:
    """One PNG as our predict route's multipart ``file`` (also used by ``soak.py``)."""
    return Target("ours", "", PATH, "file").body(image)


def export_saved_model(model_path: Path, out: Path) -> Path:
    """The SavedModel export the peer serves (``resnet export --format savedmodel``'s graph)."""
    import keras

    from core.inference.export import export_model
    from core.models import CUSTOM_OBJECTS

    model = keras.saving.load_model(model_path, custom_objects=CUSTOM_OBJECTS, compile=False)
    export_model(model, "savedmodel", out)
    return out


def export_onnx(model_path: Path, out: Path) -> Path:
    """The ONNX export the peer serves with ``--peer-engine onnx`` (what ours serves on)."""
    import keras

    from core.inference.export import export_model
    from core.models import CUSTOM_OBJECTS

    model = keras.saving.load_model(model_path, custom_objects=CUSTOM_OBJECTS, compile=False)
    out.mkdir(parents=True, exist_ok=True)
    export_model(model, "onnx", out / "model.onnx")
    return out / "model.onnx"


@contextmanager
def bentoml_server(
    model: Path, port: int, python: str, log: Path, *, cpus: set[int] | None
) -> Iterator[subprocess.Popen[bytes]]:
    """BentoML serving ``model``: a SavedModel folder, or a ``.onnx`` file (ONNX Runtime)."""
    variable = "BENTO_ONNX_MODEL" if model.suffix == ".onnx" else "BENTO_SAVED_MODEL"
    env = {**os.environ, variable: str(model), "PYTHONPATH": str(ROOT)}
    command = [python, "-m", "bentoml", "serve", "benchmarks.peers.bento_service:ResNet",
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with log.open("wb") as out:
        server = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=pinned(cpus),
        )  # fmt: skip
    try:
        _wait_ready(server, f"http://127.0.0.1:{port}/readyz", log)
        yield server
    except BaseException:
        print(f"BentoML's log ends:\n{log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        _stop(server, group=True)


def _wait_ready(server: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} was not ready in 180 s: {log.read_text()[-2000:]}")


def _stop(server: subprocess.Popen[bytes], *, group: bool = False) -> None:
    try:
        if group:
            os.killpg(server.pid, signal.SIGINT)
        else:
            server.send_signal(signal.SIGINT)
        server.wait(20)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL) if group else server.kill()


def warm(target: Target, image: bytes) -> None:
    """One request with time to spare: the first loads the model (ours loads it on demand)."""
    body, content_type = target.body(image)
    response = httpx.post(
        f"{target.url}{target.path}", content=body, timeout=180,
        headers={**target.headers, "Content-Type": content_type},
    )  # fmt: skip
    if response.status_code != 200:
        raise RuntimeError(f"{target.name}: {response.status_code}: {response.text[:300]}")


def settled_engine(target: Target, timeout: float = 600) -> dict[str, Any]:
    """Our model's status once its engine is settled: with ``auto`` the choice runs in the
    background after the first load, and a round must not time a server mid-export."""
    deadline = time.monotonic() + timeout
    while True:
        answer = httpx.get(f"{target.url}/v1/models/{MODEL}", headers=target.headers, timeout=10)
        status: dict[str, Any] = answer.json()["versions"][0]["status"]
        choice = status.get("engine_choice") or {}
        if choice.get("state") != "choosing" or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def batcher_summary(url: str) -> dict[str, float]:
    """Our batcher's mean batch size, queue and compute time over the whole run (/metrics)."""
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


# --- one round -------------------------------------------------------------------------------


def closed_phase(
    target: Target, kind: str, images: list[bytes], pids: list[int], *, clients: int,
    seconds: float,
) -> dict[str, float]:  # fmt: skip
    import uvloop

    client = CLIENTS[kind]

    def run(n: int, s: float) -> dict[str, float]:
        return uvloop.run(closed_loop(client, target, images, clients=n, seconds=s))

    run(clients, 1.0)  # warm the connections and the batcher
    server_cpu = sum(cpu_seconds(p) for p in pids)
    own_cpu, t = own_cpu_seconds(), time.perf_counter()
    concurrent = run(clients, seconds)
    elapsed = time.perf_counter() - t
    return {
        "images_per_s": concurrent["images_per_s"],
        "p50_ms": concurrent["p50_ms"],
        "p99_ms": concurrent["p99_ms"],
        "server_cpu_cores": (sum(cpu_seconds(p) for p in pids) - server_cpu) / elapsed,
        "client_cpu_cores": (own_cpu_seconds() - own_cpu) / elapsed,
    }


def single_phase(target: Target, images: list[bytes], seconds: float) -> dict[str, float]:
    import uvloop

    done = uvloop.run(closed_loop(minimal_client, target, images, clients=1, seconds=seconds))
    return {"p50_ms": done["p50_ms"], "p99_ms": done["p99_ms"]}


def open_phase(
    target: Target, images: list[bytes], rates: list[float], seconds: float, p99_ms: float,
    seed: int,
) -> list[dict[str, float]]:  # fmt: skip
    """Rising offered rates until one is far past the server (p99 over 20× the bound)."""
    import uvloop

    sweep = []
    for rate in rates:
        point = uvloop.run(open_loop(target, images, rate=rate, seconds=seconds, seed=seed))
        sweep.append(point)
        print(f"  open loop {target.name} {rate:g}/s: {json.dumps(point)}", file=sys.stderr)
        if point["errors"] or point["p99_ms"] > 20 * p99_ms:
            break
        time.sleep(1.0)  # let a queue left by the last rate drain
    return sweep


def server_pids(server: subprocess.Popen[bytes]) -> list[int]:
    """The server and its children (BentoML runs its service in worker processes)."""
    pids, frontier = [server.pid], [server.pid]
    while frontier:
        parent = frontier.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        pids += [int(c) for c in children]
        frontier += [int(c) for c in children]
    return pids


def one_round(
    args: argparse.Namespace, model_path: Path, targets: dict[str, tuple[Target, list[int]]],
    images: list[bytes], index: int,
) -> dict[str, Any]:  # fmt: skip
    measured: dict[str, Any] = {
        "raw": measure_raw(
            model_path,
            args.seconds / 2,
            args.clients,
            parse_cpus(args.server_cpus),
            served_engines(args),
        )
    }
    order = list(targets) if index % 2 == 0 else list(reversed(targets))  # alternate who's first
    for clients in args.clients:
        for kind in args.kinds:
            for name in order:
                target, pids = targets[name]
                measured.setdefault(name, {})[f"{kind}_{clients}"] = closed_phase(
                    target, kind, images, pids, clients=clients, seconds=args.seconds
                )
    for name in order:
        measured[name]["single"] = single_phase(targets[name][0], images, args.seconds / 2)
        if args.open_loop:
            measured[name]["open_loop"] = open_phase(
                targets[name][0], images, args.open_loop, args.open_seconds, args.p99_ms, index
            )
    return measured


# --- summary ---------------------------------------------------------------------------------


def summarise_rounds(args: argparse.Namespace, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds; ratios taken within each round, then their median."""
    names = [n for n in rounds[0] if n != "raw"]
    raw = {k: statistics.median(r["raw"][k] for r in rounds) for k in rounds[0]["raw"]}
    closed: dict[str, Any] = {}
    for name in names:
        for phase in rounds[0][name]:
            if phase in ("single", "open_loop"):
                continue
            clients = phase.rsplit("_", 1)[1]
            row = {k: statistics.median(r[name][phase][k] for r in rounds)
                   for k in rounds[0][name][phase]}  # fmt: skip
            row["ratio_to_raw_at_batch_clients"] = statistics.median(
                r[name][phase]["images_per_s"] / r["raw"][f"batch{clients}_images_per_s"]
                for r in rounds
            )
            engine = served_engine(args, name)
            if engine not in ("keras", None):  # also against the raw model on its own engine
                row[f"ratio_to_raw_{engine}_at_batch_clients"] = statistics.median(
                    r[name][phase]["images_per_s"]
                    / r["raw"][f"{engine}_batch{clients}_images_per_s"]
                    for r in rounds
                )
            if name != "ours" and "ours" in names:
                row["ours_over_this"] = statistics.median(
                    r["ours"][phase]["images_per_s"] / r[name][phase]["images_per_s"]
                    for r in rounds
                )
            closed.setdefault(name, {})[phase] = row
    single = {
        name: {k: statistics.median(r[name]["single"][k] for r in rounds) for k in ("p50_ms",
               "p99_ms")} for name in names
    }  # fmt: skip
    result: dict[str, Any] = {"raw": raw, "closed_loop": closed, "single_client": single}
    if args.open_loop:
        result["open_loop"] = {name: _open_summary(args, rounds, name) for name in names}
    return result


def _open_summary(args: argparse.Namespace, rounds: list[dict[str, Any]], name: str) -> Any:
    """Per offered rate, the median over the rounds that reached it; the highest rate held."""
    curve = []
    for i, rate in enumerate(args.open_loop):
        points = [r[name]["open_loop"][i] for r in rounds if len(r[name]["open_loop"]) > i]
        if len(points) * 2 <= len(rounds):
            break  # most rounds had stopped before this rate: past what it sustains
        curve.append({
            "rate": rate,
            **{k: statistics.median(p[k] for p in points) for k in points[0]},
            "rounds": len(points),
        })  # fmt: skip
    return {"curve": curve, "highest_rate_p99_within": highest_sustained(curve, args.p99_ms)}


def open_loop_figure(summary: dict[str, Any], p99_ms: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"baseline": "ours, --baseline tree", "bentoml": "BentoML (SavedModel)",
              "bentoml-onnx": "BentoML (ONNX Runtime)"}  # fmt: skip
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, (key, data) in enumerate(summary["open_loop"].items()):
        name = labels.get(key, key)
        curve = data["curve"]
        rates = [p["offered_per_s"] for p in curve]
        ax.plot(rates, [p["p99_ms"] for p in curve], "o-", color=f"C{i}", label=f"{name} p99")
        ax.plot(rates, [p["p50_ms"] for p in curve], "o--", color=f"C{i}", alpha=0.5,
                label=f"{name} p50")  # fmt: skip
    ax.axhline(p99_ms, color="grey", lw=0.8, ls=":", label=f"p99 bound, {p99_ms:g} ms")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (requests/s, one 32×32 PNG each, Poisson arrivals)")
    ax.set_ylabel("latency (ms, from the scheduled send)")
    ax.set_title("Open-loop predict latency, ResNet-20, this 2-core CPU")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


# --- main ------------------------------------------------------------------------------------


def served_engine(args: argparse.Namespace, name: str) -> str | None:
    """The engine a server computes on: ours and the baseline as their status says once
    settled (else as asked), the peer its own."""
    if name in getattr(args, "served", {}):
        return str(args.served[name])
    if name == "ours":
        return str(args.engine or "keras")
    if name == "baseline":
        return str(args.baseline_engine or args.engine or "keras")
    return None


def served_engines(args: argparse.Namespace) -> list[str]:
    names = {served_engine(args, n) for n in ("ours", "baseline")}
    return sorted(n for n in names if n is not None)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--clients", type=_ints, default=[16, 64], help="e.g. 16,64")
    parser.add_argument("--kinds", type=lambda t: t.split(","), default=list(CLIENTS),
                        help=f"client kinds, of {', '.join(CLIENTS)}")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="per closed-loop phase")
    parser.add_argument("--peer", choices=["none", "bentoml"], default="none")
    parser.add_argument(
        "--peer-engine", type=lambda t: t.split(","), default=["savedmodel"],
        help="what the peer computes on: savedmodel (its TensorFlow runtime), onnx (ONNX "
        "Runtime, as ours on this CPU), or both: savedmodel,onnx (two peers)",
    )  # fmt: skip
    parser.add_argument("--bentoml-python", default=sys.executable)
    parser.add_argument(
        "--baseline", type=Path,
        help="also serve the API from this checkout (e.g. a worktree at the commit before a "
        "change), interleaved with this one: an A/B of the request path",
    )  # fmt: skip
    parser.add_argument(
        "--engine", choices=["keras", "onnx", "savedmodel", "auto"],
        help="the engine our server computes on (RESNET_PREDICT_ENGINE; default: the settings')",
    )  # fmt: skip
    parser.add_argument(
        "--baseline-engine", choices=["keras", "onnx", "savedmodel", "auto"],
        help="serve the baseline on this engine (with no --baseline: from this checkout), an "
        "A/B of the engine behind the whole request path",
    )  # fmt: skip
    parser.add_argument(
        "--server-env", action="append", metavar="NAME=VALUE",
        help="a setting for our server only (repeatable), e.g. RESNET_PREDICT_COMPUTE_THREADS=2",
    )  # fmt: skip
    parser.add_argument(
        "--baseline-env", action="append", metavar="NAME=VALUE",
        help="a setting for the baseline only (with no --baseline: from this checkout): an "
        "A/B of a setting",
    )  # fmt: skip
    parser.add_argument("--open-loop", type=_floats, help="offered rates/s, e.g. 100,200,400")
    parser.add_argument("--open-seconds", type=float, default=5.0)
    parser.add_argument("--p99-ms", type=float, default=50.0)
    parser.add_argument("--server-cpus", help="pin the servers and the raw model, e.g. 0,1")
    parser.add_argument("--client-cpus", help="pin the load generator, e.g. 2-7")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--figure", type=Path, help="the open-loop figure (PNG)")
    parser.add_argument("--raw-only", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--raw-engines", type=lambda t: t.split(","), default=[],
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--figure-from", type=Path, help="redraw --figure from a --json record")
    args = parser.parse_args()
    if args.figure_from:
        measured = json.loads(args.figure_from.read_text())
        open_loop_figure(measured, args.p99_ms, args.figure)
        return
    if args.raw_only:
        print(json.dumps(raw_model(args.raw_only, args.seconds, args.clients, args.raw_engines)))
        return

    server_cpus, client_cpus = parse_cpus(args.server_cpus), parse_cpus(args.client_cpus)
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)
    state = Path(tempfile.mkdtemp(prefix="predict-bench-"))
    rounds: list[dict[str, Any]] = []
    engines: dict[str, Any] = {}  # ours (and the baseline): the status once the engine settled
    args.served = {}  # their engine names, for the raw references
    try:
        with contextlib.ExitStack() as stack:
            db_url = f"sqlite:///{state / 'resnet.db'}"
            model_path = build_model(state / "runs" / "r20")
            secret = record(db_url, model_path)
            port = free_port()
            ours = start_server(
                state, db_url, port, cpus=server_cpus, engine=args.engine,
                extra_env=args.server_env,
            )  # fmt: skip
            stack.callback(_stop, ours)
            auth = {"Authorization": f"Bearer {secret}"}
            targets = {"ours": (Target("ours", f"http://127.0.0.1:{port}", PATH, "file", auth),
                                [ours.pid])}  # fmt: skip
            if args.baseline or args.baseline_engine or args.baseline_env:
                base_port = free_port()
                base = start_server(
                    state / "baseline", db_url, base_port, cpus=server_cpus,
                    tree=(args.baseline or ROOT).resolve(),
                    engine=args.baseline_engine or args.engine, extra_env=args.baseline_env,
                )  # fmt: skip
                stack.callback(_stop, base)
                targets["baseline"] = (
                    Target("baseline", f"http://127.0.0.1:{base_port}", PATH, "file", auth),
                    [base.pid],
                )
            for peer_engine in args.peer_engine if args.peer == "bentoml" else []:
                name = "bentoml" if peer_engine == "savedmodel" else f"bentoml-{peer_engine}"
                served = (
                    export_saved_model(model_path, state / "savedmodel")
                    if peer_engine == "savedmodel"
                    else export_onnx(model_path, state / "onnx")
                )
                peer_port = free_port()
                peer = stack.enter_context(bentoml_server(
                    served, peer_port, args.bentoml_python, state / f"{name}.log",
                    cpus=server_cpus,
                ))  # fmt: skip
                time.sleep(2.0)  # its worker processes are up once /readyz answers
                targets[name] = (
                    Target(name, f"http://127.0.0.1:{peer_port}", "/predict", "images"),
                    server_pids(peer),
                )
            images = png_images(64)
            for name, (target, _) in targets.items():
                warm(target, images[0])
                if name in ("ours", "baseline"):
                    engines[name] = settled_engine(target)
                    args.served[name] = engines[name].get("engine")
                    print(f"{name} serves on {engines[name].get('engine')}: "
                          f"{engines[name].get('engine_choice')}", file=sys.stderr)  # fmt: skip
            for index in range(args.rounds):
                rounds.append(one_round(args, model_path, targets, images, index))
                print(f"round {index + 1}: {json.dumps(rounds[-1])}", file=sys.stderr)
            batcher = batcher_summary(targets["ours"][0].url)
    finally:
        shutil.rmtree(state, ignore_errors=True)

    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_at_end": os.getloadavg(),
                    "server_cpus": args.server_cpus, "client_cpus": args.client_cpus},
        "command": " ".join(["python", *sys.argv]),
        "model": "resnet20 (untrained), 32x32x3, 10 classes, float32",
        "clients": args.clients, "rounds": args.rounds, "seconds_per_phase": args.seconds,
        **summarise_rounds(args, rounds),
        "batcher": batcher,
        "engines": engines,
        "per_round": rounds,
    }  # fmt: skip
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    if args.figure and args.open_loop:
        open_loop_figure(results, args.p99_ms, args.figure)


if __name__ == "__main__":
    main()
