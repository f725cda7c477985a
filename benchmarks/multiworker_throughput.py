"""Images/s of one training run on 1 worker and on 2 workers (issue 13), side by side.

Each worker is a fresh process with one TensorFlow thread (collective ops are configured when
TensorFlow starts): the 1-worker run is ``core.training.train``, the 2-worker run is two
processes of ``core.training.multiworker.train_multiworker`` on 127.0.0.1, the same config and
the same global batch. The figure is the training images per second of the epochs after the
first (the first holds graph tracing), as the trainer records them in ``history.json``; for the
2-worker run, the chief's (the workers step together).

On a machine with two cores this measures what the all-reduce costs (two processes, one core
each, exchanging every gradient over loopback gRPC each step), not a speed-up: two workers do
the global batch's work in two halves at once, and pay the collective.

    python benchmarks/multiworker_throughput.py --epochs 3 --out var/bench/multiworker.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import save_record

CONFIG = textwrap.dedent(
    """
    import json, os, sys
    from core.training import make_config
    spec = json.loads(sys.argv[1])
    config = make_config(
        spec["arch"], spec["data"], epochs=spec["epochs"], batch_size=spec["batch"],
        precision="float32", tensorboard=False,
        schedule={"kind": "constant", "base_lr": 0.05},
    )
    """
)
ONE = CONFIG + textwrap.dedent(
    """
    from core.training import train
    train(config.model_copy(update={"strategy": "default"}), spec["out"])
    """
)
MEMBER = CONFIG + textwrap.dedent(
    """
    from core.training.multiworker import Cluster, train_multiworker
    cluster = Cluster(tuple(spec["cluster"]), spec["index"])
    train_multiworker(config, spec["out"], cluster=cluster)
    sys.stdout.flush()
    os._exit(0)  # the coordination service would hold the process ~30 s at exit
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(code: str, spec: dict[str, Any]) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CUDA_VISIBLE_DEVICES": "",
        "TF_NUM_INTRAOP_THREADS": str(spec.get("threads", 1)),
        "TF_NUM_INTEROP_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-c", code, json.dumps(spec)], env=env)


def images_per_second(run_dir: Path) -> dict[str, Any]:
    history = json.loads((run_dir / "history.json").read_text())
    later = [e["images_per_second"] for e in history[1:]] or [history[0]["images_per_second"]]
    return {
        "epochs": [round(e["images_per_second"], 1) for e in history],
        "images_per_second": round(sum(later) / len(later), 1),
        "final_loss": history[-1]["loss"],
        "losses": [round(e["loss"], 5) for e in history],
    }


def run(workers: int, spec: dict[str, Any], folder: Path) -> dict[str, Any]:
    out = folder / f"workers{workers}"
    began = time.perf_counter()
    if workers == 1:
        procs = [start(ONE, {**spec, "out": str(out)})]
    else:
        cluster = [f"127.0.0.1:{free_port()}" for _ in range(workers)]
        procs = [
            start(MEMBER, {**spec, "out": str(out), "cluster": cluster, "index": i})
            for i in range(workers)
        ]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"{workers} worker(s): exit codes {codes}")
    return {"workers": workers, "wall_seconds": round(time.perf_counter() - began, 1)} | (
        images_per_second(out)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--data", default="synthetic:2048:32x32x3:10")
    parser.add_argument("--batch", type=int, default=128, help="the global batch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the record here (JSON)")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="TensorFlow compute threads per process (changing it changes only how sums are "
        "grouped: a check of how far rounding alone moves the losses)",
    )  # fmt: skip
    args = parser.parse_args()
    spec = {"arch": args.arch, "data": args.data, "batch": args.batch, "epochs": args.epochs,
            "threads": args.threads}  # fmt: skip
    record: dict[str, Any] = {"spec": spec, "cpus": os.cpu_count(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="mw-bench-") as tmp:
        for workers in (1, 2):
            record["runs"].append(run(workers, spec, Path(tmp)))
            save_record(args.out, record)
    one, two = record["runs"]
    record["two_over_one"] = round(two["images_per_second"] / one["images_per_second"], 3)
    save_record(args.out, record)
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
