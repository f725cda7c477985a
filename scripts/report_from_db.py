"""Table 1 and the figures of an experiment, straight from a records database, with this tree's
report code: for a study recorded by an older version of the service (its database is copied
and migrated to head first, so the original is never changed).

    python scripts/report_from_db.py var/resnet.db EXPERIMENT_ID docs/results/depth_study
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
from pathlib import Path

from core.reports import figure, table1
from core.reports.figures import FigureDataError
from core.reports.runs import RunData
from jobs.records import make_engine, make_sessionmaker, session_scope, upgrade_to_head
from jobs.reports import load_experiment_runs

FIGURES = ("training_time_vs_depth", "error_vs_depth", "plain_vs_residual", "curves")


def main(database: str, experiment_id: str, out_prefix: str) -> None:
    copy = Path(tempfile.mkdtemp()) / "records.db"
    # SQLite's backup, not a file copy: a live service's latest writes may sit in its WAL.
    with sqlite3.connect(database) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    url = f"sqlite:///{copy}"
    upgrade_to_head(url)
    with session_scope(make_sessionmaker(make_engine(url))) as session:
        runs = [
            r for r in load_experiment_runs(session, experiment_id) if r["status"] == "succeeded"
        ]
    write_report(runs, out_prefix)


def write_report(runs: list[RunData], out_prefix: str) -> None:
    """Table 1 (Markdown and JSON) and the figures of ``runs``, as ``OUT_PREFIX_*`` files."""
    table = table1(runs)
    out = Path(out_prefix)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}_table1.md").write_text(table.to_markdown(), encoding="utf-8")
    Path(f"{out}_table1.json").write_text(json.dumps(table.to_json(), indent=1), encoding="utf-8")
    for name in FIGURES:
        try:
            Path(f"{out}_{name}.png").write_bytes(figure(name, runs, fmt="png"))
        except FigureDataError as exc:
            print(f"{name}: {exc}")
    print(f"{len(runs)} succeeded runs: {', '.join(r['architecture'] for r in runs)}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
