"""``docs/results/depth_study.json`` from the sessions' collections and their common Table 1.

    python scripts/assemble_depth_study.py OUT.json TABLE1.json COMMIT=RECORDS.json [...] \
        --about "..."

``TABLE1.json`` is ``scripts/report_from_records.py``'s ``*_table1.json`` over the same
collections; each ``COMMIT=RECORDS.json`` is one session's collection
(``scripts/collect_depth_study.sh``) and the commit its runs trained at. The result holds Table 1,
each run in it (its record, per-epoch history, experiment and commit), and each experiment's own
Table 1 as the service answered it, so the study reads back from one file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def assemble(table1: dict[str, Any], parts: list[tuple[str, Path]], about: str) -> dict[str, Any]:
    in_table = {row["run_id"] for row in table1["rows"]}
    experiments: dict[str, Any] = {}
    runs: dict[str, Any] = {}
    for commit, path in parts:
        collected = json.loads(path.read_text())
        experiment = collected["experiment"]
        experiments[commit] = {
            "file": str(path.resolve().relative_to(ROOT)),
            "id": experiment["id"],
            "table1_of_this_experiment": collected["table1"],
        }
        for run_id, record in collected["runs"].items():
            if run_id in in_table:
                runs[run_id] = {
                    "commit": commit,
                    "experiment_id": experiment["id"],
                    "run": record["run"],
                    "epochs": record["epochs"],
                }
    missing = in_table - set(runs)
    if missing:
        raise SystemExit(f"runs in Table 1 but in no collection: {sorted(missing)}")
    return {"about": about, "table1": table1, "runs": runs, "experiments": experiments}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("table1", type=Path)
    parser.add_argument("parts", nargs="+", help="COMMIT=RECORDS.json")
    parser.add_argument("--about", required=True)
    args = parser.parse_args()
    parts = [(p.split("=", 1)[0], Path(p.split("=", 1)[1])) for p in args.parts]
    result = assemble(json.loads(args.table1.read_text()), parts, args.about)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"{args.out}: {len(result['runs'])} runs from {len(parts)} experiments")


if __name__ == "__main__":
    main()
