"""Table 1 and the figures from collected run records (the JSON that
``scripts/collect_depth_study.sh`` writes), several collections at once, with this tree's report
code: for a study whose runs were recorded by different sessions (their databases are gone; the
records committed under ``docs/results/`` remain).

    python scripts/report_from_records.py OUT_PREFIX RECORDS.json [RECORDS.json ...] \
        [--only ARCH,ARCH,...]

Each file's runs are read as the service stored them (run record + epochs) and turned into
``RunData`` by ``jobs.reports.run_data``, exactly as the live reports do; only succeeded runs
count, and with ``--only`` only those architectures (the first file that has one wins).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from core.reports.runs import RunData, label_runs
from jobs.records.models import EpochMetric, Run, RunStatus
from jobs.reports import run_data

sys.path.insert(0, str(Path(__file__).parent))
from report_from_db import write_report

_TIMES = ("created_at", "started_at", "finished_at")


def _when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


def runs_of(path: Path) -> list[RunData]:
    collected = json.loads(path.read_text())
    found = []
    for record in collected["runs"].values():
        fields: dict[str, Any] = record["run"]
        if fields["status"] != "succeeded":
            continue
        run = Run(
            id=fields["id"],
            architecture=fields["architecture"],
            dataset=fields["dataset"],
            status=RunStatus(fields["status"]),
            config=fields["config"],
            metrics=fields["metrics"],
            epochs_planned=fields["epochs_planned"],
            progress=fields.get("progress"),
            **{k: _when(fields.get(k)) for k in _TIMES},
        )
        run.experiment_id = collected["experiment"]["id"]
        epochs = [
            EpochMetric(**{k: v for k, v in e.items() if k != "recorded_at"})
            for e in record["epochs"]
        ]
        found.append(run_data(run, epochs))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_prefix")
    parser.add_argument("records", nargs="+", type=Path)
    parser.add_argument("--only", help="comma-separated architectures, in the table's order")
    args = parser.parse_args()
    runs: list[RunData] = []
    for path in args.records:
        runs += sorted(runs_of(path), key=lambda r: (r["created_at"] or "", r["id"]))
    if args.only:
        by_arch: dict[str, RunData] = {}
        for r in runs:
            by_arch.setdefault(r["architecture"], r)
        runs = [by_arch[a] for a in args.only.split(",") if a in by_arch]
    write_report(label_runs(runs), args.out_prefix)


if __name__ == "__main__":
    main()
