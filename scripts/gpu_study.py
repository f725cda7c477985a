"""Issue 10, item 4: the paper's CIFAR schedule, Figure 1 and ResNet-50 throughput on one GPU.

One command, run once on a lent GPU machine (JAX, no TensorFlow), under a hard deadline:

1. **The paper's schedule** through the library's own training path (``core.training.train``,
   preset ``cifar-paper``: 45k/5k split, 64k iterations of batch 128, option A shortcuts, lr 0.1
   divided by 10 at 32k and 48k, weight decay 1e-4, momentum 0.9, pad-4/crop/flip), float32, on the
   CIFAR-10 JPEG folder; each net in its own process, one after the other, each given the time left.
2. **Timings** once training is done, with the GPU to themselves: Figure 1 (seconds per epoch of
   45k images for ResNet-20…1202, from a few hundred timed steps each, ``core.bench``) and
   ResNet-50 training throughput at batch 256 in mixed bfloat16 with XLA, through Keras' ``fit`` and
   through a jitted loop of Keras' stateless train step (what Keras' per-step work costs).

Everything small that the runs write (configs, per-epoch histories, metrics, logs, timings) is
packed into ``OUT/gpu_study.tar.gz`` every 20 s, so a run cut off by the deadline still returns
what it did.

    KERAS_BACKEND=jax python scripts/gpu_study.py --data cifar10-jpeg --out $OUT --deadline 520
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EPOCH_IMAGES = 45_000  # the paper's 45k/5k split
FIGURE1_DEPTHS = (20, 32, 44, 56, 110, 1202)
SMALL_SUFFIXES = (".json", ".txt", ".log", ".jsonl", ".csv")


def main() -> None:
    args = _parse()
    started = time.monotonic()
    deadline = started + args.deadline
    out = Path(args.out)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    packer = threading.Thread(target=_pack_every, args=(work, out, stop), daemon=True)
    packer.start()
    monitor = _start_gpu_monitor(work / "nvidia_smi_dmon.txt")

    try:
        _write(work / "environment.json", _environment())
    except Exception as exc:  # the record of the machine must not cost the study
        _log(work, f"environment: {exc!r}")
    for arch in args.train:
        left = deadline - time.monotonic() - args.reserve
        if left < 60:
            _log(work, f"skip training {arch}: {left:.0f} s left")
            continue
        _train_in_child(arch, args, work / "runs" / arch, timeout=left, log_dir=work)
    for case in _timing_cases(args):
        left = deadline - time.monotonic() - 5
        if left < 20:
            _log(work, f"skip timing {case}: {left:.0f} s left")
            continue
        _time_in_child(case, work / "timings.jsonl", timeout=min(left, case["cap"]), log_dir=work)

    if monitor is not None:
        monitor.terminate()
    stop.set()
    packer.join()
    _pack(work, out)
    _log(work, f"done in {time.monotonic() - started:.0f} s")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", required=True, help="the extracted cifar10-jpeg folder")
    p.add_argument("--out", required=True, help="where the packed results go ($OUT)")
    p.add_argument("--work", default="/tmp/gpu_study", help="run folders (large files stay here)")
    p.add_argument("--deadline", type=float, default=520, help="seconds for everything")
    p.add_argument("--reserve", type=float, default=0, help="seconds kept back from training")
    p.add_argument("--train", nargs="*", default=["resnet20"], help="nets on the full schedule")
    p.add_argument("--precision", default="float32")
    p.add_argument("--epochs", type=int, default=None, help="override the preset (smoke tests)")
    p.add_argument("--train-limit", type=int, default=None, help="smoke tests only")
    p.add_argument("--figure1", nargs="*", type=int, default=list(FIGURE1_DEPTHS))
    p.add_argument("--steps", type=int, default=200, help="timed steps per Figure 1 depth")
    p.add_argument("--resnet50-steps", type=int, default=40)
    p.add_argument("--resnet50-size", type=int, default=224)
    p.add_argument("--child", choices=["train", "time"], help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    return p.parse_args()


# --- children -------------------------------------------------------------------------------


def _train_in_child(
    arch: str, args: argparse.Namespace, run: Path, *, timeout: float, log_dir: Path
) -> None:
    spec = {
        "arch": arch,
        "data": f"folder:{Path(args.data).resolve()}",
        "run": str(run),
        "precision": args.precision,
        "epochs": args.epochs,
        "train_limit": args.train_limit,
    }
    _child("train", spec, timeout=timeout, log=log_dir / f"train_{arch}.log")


def _time_in_child(case: dict[str, Any], sink: Path, *, timeout: float, log_dir: Path) -> None:
    spec = dict(case, sink=str(sink))
    _child("time", spec, timeout=timeout, log=log_dir / f"time_{case['name']}.log")


def _child(kind: str, spec: dict[str, Any], *, timeout: float, log: Path) -> None:
    """Run one piece in a fresh interpreter: a hung compile or a crash costs only that piece."""
    cmd = [
        sys.executable,
        __file__,
        "--data",
        "-",
        "--out",
        "-",
        "--child",
        kind,
        "--spec",
        json.dumps(spec),
    ]
    t0 = time.monotonic()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc: int | str = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            rc = "deadline"
    _log(
        log.parent,
        f"{kind} {spec.get('arch') or spec.get('name')}: rc={rc} "
        f"after {time.monotonic() - t0:.0f} s (limit {timeout:.0f} s)",
    )


def _run_train(spec: dict[str, Any]) -> None:
    from core.training import make_config, train

    overrides: dict[str, Any] = {"precision": spec["precision"], "tensorboard": False}
    if spec["epochs"]:
        overrides["epochs"] = spec["epochs"]
    if spec["train_limit"]:
        overrides["train_limit"] = spec["train_limit"]
        overrides["validation"] = max(16, spec["train_limit"] // 10)
    config = make_config(spec["arch"], spec["data"], preset="cifar-paper", **overrides)
    t0 = time.perf_counter()
    result = train(config, spec["run"])
    summary = {
        "architecture": spec["arch"],
        "status": result.status,
        "epochs": result.epochs_completed,
        "seconds": time.perf_counter() - t0,
        "metrics": result.metrics,
    }
    _write(Path(spec["run"]) / "summary.json", summary)
    # The model and checkpoints stay on the machine: only small files come back.


def _run_time(spec: dict[str, Any]) -> None:
    if spec["kind"] == "bench":
        from core.bench import train_throughput

        row = train_throughput(
            spec["arch"],
            batch_size=spec["batch"],
            precision=spec["precision"],
            steps=spec["steps"],
            warmup=spec["warmup"],
            input_shape=tuple(spec["shape"]) if spec.get("shape") else None,
            xla=True,
        )
        row["seconds_per_epoch_45k"] = EPOCH_IMAGES / row["images_per_second"]
    else:
        row = _stateless_loop(spec)
    row["name"] = spec["name"]
    with open(spec["sink"], "a") as fh:
        fh.write(json.dumps(row) + "\n")


def _stateless_loop(spec: dict[str, Any]) -> dict[str, Any]:
    """ResNet-50's train step as one jitted function over device-resident data, `inner` steps per
    call (a `lax.fori_loop`): the model's and optimizer's arithmetic without Keras' per-step work.
    """
    import jax
    import keras
    import numpy as np

    from core.models import build_model

    keras.utils.set_random_seed(0)
    size, batch, inner = spec["shape"][0], spec["batch"], spec["inner"]
    model = build_model(
        spec["arch"],
        input_shape=(size, size, 3),
        num_classes=1000,
        dtype_policy="mixed_bfloat16",
        weight_decay=1e-4,
    )
    opt = keras.optimizers.SGD(0.1, momentum=0.9)
    opt.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    rng = np.random.default_rng(0)
    x = jax.device_put(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8))
    y = jax.device_put(rng.integers(0, 1000, (batch,)))

    def loss_of(tv: Any, ntv: Any) -> Any:
        pred, ntv = model.stateless_call(tv, ntv, x, training=True)
        return loss_fn(y, pred), ntv

    grad_fn = jax.value_and_grad(loss_of, has_aux=True)

    def one(_: int, state: Any) -> Any:
        tv, ntv, ov = state
        (_, ntv), grads = grad_fn(tv, ntv)
        tv, ov = opt.stateless_apply(ov, grads, tv)
        return tv, ntv, ov

    @jax.jit
    def many(state: Any) -> Any:
        return jax.lax.fori_loop(0, inner, one, state)

    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in opt.variables],
    )
    t0 = time.perf_counter()
    state = jax.block_until_ready(many(state))
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(spec["calls"]):
        state = many(state)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - t0
    steps = inner * spec["calls"]
    return {
        "architecture": spec["arch"],
        "batch_size": batch,
        "input_shape": [size, size, 3],
        "precision": "bfloat16",
        "loop": f"jax.jit(fori_loop of {inner} stateless steps)",
        "steps": steps,
        "warmup_seconds": warm,
        "seconds": seconds,
        "step_ms": 1000 * seconds / steps,
        "images_per_second": batch * steps / seconds,
        "note": "weight decay left out of this loop's loss (Keras adds it in fit)",
    }


def _timing_cases(args: argparse.Namespace) -> list[dict[str, Any]]:
    size = args.resnet50_size
    cases: list[dict[str, Any]] = [
        {
            "name": "resnet50_bf16_fit",
            "kind": "bench",
            "arch": "resnet50",
            "batch": 256,
            "precision": "bfloat16",
            "steps": args.resnet50_steps,
            "warmup": 5,
            "shape": [size, size, 3],
            "cap": 120,
        },
    ]
    cases += [
        {
            "name": f"figure1_resnet{d}",
            "kind": "bench",
            "arch": f"resnet{d}",
            "batch": 128,
            "precision": "float32",
            "steps": args.steps if d < 1000 else max(20, args.steps // 5),
            "warmup": 10 if d < 1000 else 3,
            "shape": None,
            "cap": 90 if d < 1000 else 150,
        }
        for d in args.figure1
    ]
    cases.append(
        {
            "name": "resnet50_bf16_stateless_loop",
            "kind": "loop",
            "arch": "resnet50",
            "batch": 256,
            "inner": 10,
            "calls": max(1, args.resnet50_steps // 10),
            "shape": [size, size, 3],
            "cap": 120,
        }
    )
    cases.append(
        {
            "name": "resnet50_f32_fit",
            "kind": "bench",
            "arch": "resnet50",
            "batch": 256,
            "precision": "float32",
            "steps": args.resnet50_steps,
            "warmup": 5,
            "shape": [size, size, 3],
            "cap": 90,
        }
    )
    return cases


# --- packing and records ---------------------------------------------------------------------


def _pack_every(work: Path, out: Path, stop: threading.Event) -> None:
    while not stop.wait(20):
        _pack(work, out)


def _pack(work: Path, out: Path) -> None:
    """The small files under ``work`` into ``out/gpu_study.tar.gz``, replaced atomically."""
    if str(out) == "-":
        return
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".gpu_study.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(work.rglob("*")):
            if path.is_file() and path.suffix in SMALL_SUFFIXES and path.stat().st_size < 4 << 20:
                tar.add(path, arcname=str(path.relative_to(work)))
    tmp.replace(out / "gpu_study.tar.gz")
    log = work / "study.log"
    if log.exists():
        shutil.copy(log, out / "study.log")


def _start_gpu_monitor(path: Path) -> subprocess.Popen[bytes] | None:
    if shutil.which("nvidia-smi") is None:
        return None
    fh = path.open("w")
    return subprocess.Popen(
        ["nvidia-smi", "dmon", "-s", "um", "-d", "5"], stdout=fh, stderr=subprocess.STDOUT
    )


def _environment() -> dict[str, Any]:
    import keras

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "tensorflow_importable": _importable("tensorflow"),
    }
    if keras.backend.backend() == "jax":
        import jax

        env["jax"] = jax.__version__
        env["devices"] = [str(d.device_kind) for d in jax.devices()]
    if shutil.which("nvidia-smi"):
        env["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    return env


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))


def _log(work: Path, line: str) -> None:
    stamped = f"{time.strftime('%H:%M:%S')} {line}"
    print(stamped, flush=True)
    with (work / "study.log").open("a") as fh:
        fh.write(stamped + "\n")


if __name__ == "__main__":
    if "--child" in sys.argv:
        ns = _parse()
        spec = json.loads(ns.spec)
        (_run_train if ns.child == "train" else _run_time)(spec)
    else:
        main()
