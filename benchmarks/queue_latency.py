"""Queue latency: from `POST /v1/runs` answering 202 to the run showing `running`.

Starts each deployment as separate processes (see tests/e2e/stacks.py): the embedded default
(`resnet serve`: SQLite + filesystem queue) and the production stack (PostgreSQL + Redis + the
compose commands for API and worker), submits tiny runs one after another and polls the run
every 10 ms. The first run of a fresh worker also pays for importing TensorFlow in the worker's
child process; it is reported apart from the steady state.

    python benchmarks/queue_latency.py --runs 6 --json docs/results/queue_latency.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.stacks import Stack, embedded_stack, production_stack
from tests.fixtures.servers import throwaway_postgres, throwaway_redis

RUN = {
    "architecture": "resnet8",
    "data": "synthetic:64:16x16x3:2",
    "epochs": 1,
    "batch_size": 32,
    "precision": "float32",
    "tensorboard": False,
}


def measure(stack: Stack, runs: int) -> dict[str, object]:
    latencies = []
    with stack.client() as api:
        for _ in range(runs):
            created = api.post("/v1/runs", json=RUN)
            created.raise_for_status()
            accepted = time.perf_counter()
            run_id = created.json()["id"]
            while (status := api.get(f"/v1/runs/{run_id}").json()["status"]) == "queued":
                time.sleep(0.01)
            latencies.append(time.perf_counter() - accepted)
            while status not in ("succeeded", "failed", "cancelled"):
                time.sleep(0.1)
                status = api.get(f"/v1/runs/{run_id}").json()["status"]
    steady = latencies[1:]
    return {
        "first_run_seconds": round(latencies[0], 3),
        "steady_median_seconds": round(statistics.median(steady), 3) if steady else None,
        "steady_max_seconds": round(max(steady), 3) if steady else None,
        "all_seconds": [round(x, 3) for x in latencies],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        with embedded_stack(Path(tmp) / "embedded") as stack:
            report["embedded (SQLite + filesystem queue)"] = measure(stack, args.runs)
        print(json.dumps(report), flush=True)
        with throwaway_postgres() as pg, throwaway_redis() as redis:
            db = pg.create_database(f"bench_{uuid.uuid4().hex[:8]}")
            (Path(tmp) / "prod").mkdir()
            with production_stack(db, redis.url, Path(tmp) / "prod") as stack:
                report["production (PostgreSQL + Redis)"] = measure(stack, args.runs)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "results": report}, indent=2))


if __name__ == "__main__":
    main()
