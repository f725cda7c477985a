"""The GPU study's record and figures, from what ``scripts/gpu_study.py`` packed on the device.

    python scripts/gpu_report.py collect docs/results/gpu_study_h200.json TAR [TAR ...]
    python scripts/gpu_report.py figures docs/results/gpu_study_h200.json docs/figures/gpu_h200

``collect`` gathers each pack's environment, the full-schedule runs (config, summary, per-epoch
history) and the timings into one JSON; ``figures`` draws, with the service's own report code
(``core.reports.figures``), the training curves of the full-schedule runs and Figure 1: the
training time of the paper's 182 epochs against depth, projected from the timed steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.reports.figures import curves, training_time_vs_depth
from core.reports.runs import RunData, architecture_info

PAPER_EPOCHS = 182  # 64k iterations of batch 128 over 45k images


def collect(out: Path, packs: list[Path]) -> None:
    record: dict[str, Any] = {"packs": [], "runs": {}, "timings": []}
    for pack in packs:
        with tarfile.open(pack) as tar:
            files = {m.name: tar.extractfile(m) for m in tar.getmembers() if m.isfile()}
            text = {name: fh.read().decode() for name, fh in files.items() if fh is not None}
        record["packs"].append({"file": pack.name, "log": text.get("study.log", "")})
        record.setdefault("environment", json.loads(text["environment.json"]))
        for line in text.get("timings.jsonl", "").splitlines():
            record["timings"].append(json.loads(line))
        for name in text:
            parts = name.split("/")
            if len(parts) == 3 and parts[0] == "runs" and parts[2] == "summary.json":
                arch = parts[1]
                record["runs"][arch] = {
                    "config": json.loads(text[f"runs/{arch}/config.json"]),
                    "summary": json.loads(text[name]),
                    "history": json.loads(text[f"runs/{arch}/history.json"]),
                }
    out.write_text(json.dumps(record, indent=1) + "\n")


def figures(record_path: Path, prefix: Path) -> None:
    record = json.loads(record_path.read_text())
    device = ", ".join(record["environment"].get("devices", []))
    runs = [_run_of(arch, run, device) for arch, run in record["runs"].items()]
    if runs:
        _write(prefix.with_name(prefix.name + "_curves.png"), curves(runs))
    timed = [_projected_run(t, device) for t in record["timings"] if "figure1" in t["name"]]
    if timed:
        _write(prefix.with_name(prefix.name + "_figure1.png"), training_time_vs_depth(timed))


def _run_of(arch: str, run: dict[str, Any], device: str) -> RunData:
    depth, kind, family = architecture_info(arch)
    return RunData(
        id=f"gpu-{arch}", label=f"{arch} ({device})", architecture=arch, depth=depth, kind=kind,
        family=family, status="succeeded", config=run["config"],
        metrics=run["summary"]["metrics"], train_seconds=run["summary"]["seconds"],
        epochs=run["history"],
    )  # fmt: skip


def _projected_run(timing: dict[str, Any], device: str) -> RunData:
    arch = timing["architecture"]
    depth, kind, family = architecture_info(arch)
    return RunData(
        id=f"timed-{arch}", label=f"{arch}", architecture=arch, depth=depth, kind=kind,
        family=family, status="timed",
        train_seconds=timing["seconds_per_epoch_45k"] * PAPER_EPOCHS,
    )  # fmt: skip


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    print(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect")
    c.add_argument("out", type=Path)
    c.add_argument("packs", type=Path, nargs="+")
    f = sub.add_parser("figures")
    f.add_argument("record", type=Path)
    f.add_argument("prefix", type=Path)
    args = p.parse_args()
    if args.command == "collect":
        collect(args.out, args.packs)
    else:
        figures(args.record, args.prefix)


if __name__ == "__main__":
    main()
