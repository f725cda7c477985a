"""Time to accuracy on CIFAR-10 (issue 10, item 2): wall-clock minutes on this machine for a run to
reach a test accuracy, with settings chosen on the 45k/5k validation split only and the test split
touched once.

Two phases, each a real training run through ``core.training.train``:

1. ``select``: every candidate recipe trains on 45k images for its share of the time budget and
   is scored on the 5k held-out images. The test images are not even visible to it (the data it
   reads is a folder holding only ``train/``).
2. ``final``: the best candidate trains on all 50k training images for the whole budget, its
   epochs fitted to the budget from the epoch time its selection run measured, and is evaluated
   on the 10k test images, once.

    python benchmarks/time_to_accuracy.py --archive ../shared/datasets/cifar10-jpeg.tar.gz \
        --minutes 30 --json docs/results/time_to_accuracy.json

A recipe is a preset plus overrides; the candidates are in ``CANDIDATES``. The result names the
test accuracy reached, the minutes the final run trained, and for each threshold (90 %, 91.25 %,
93 %) whether this run reached it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import extract_cifar_jpeg, save_record

THRESHOLDS = (0.90, 0.9125, 0.93)
TRAIN_IMAGES, SELECT_IMAGES = 50_000, 45_000

# Each candidate: a catalogue architecture and a preset with overrides. All of them use the
# one-cycle schedule, whose length must be fixed in advance: the epochs are fitted to the time.
CANDIDATES: dict[str, dict[str, Any]] = {
    "resnet20-onecycle": {"architecture": "resnet20", "preset": "cifar-fast"},
    "resnet32-onecycle": {"architecture": "resnet32", "preset": "cifar-fast"},
}


def main() -> None:
    args = _parse()
    data = _extract(Path(args.archive), Path(args.cache))
    budget = args.minutes * 60.0
    record: dict[str, Any] = {
        "goal": "91.25 % test accuracy in 30 minutes or less of this machine's CPU",
        "budget_minutes": args.minutes,
        "machine": _machine(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "selection": [],
    }
    names = args.candidates or list(CANDIDATES)
    share = budget * args.select_fraction / len(names)
    for name in names:
        row = _select(name, CANDIDATES[name], data, share, Path(args.cache) / "runs", args)
        record["selection"].append(row)
        save_record(args.json, record)
    best = max(record["selection"], key=lambda r: r["val_accuracy"])
    final = _final(best, data, budget, Path(args.cache) / "runs", args)
    record.update(final)
    record["machine"]["load_average_at_end"] = os.getloadavg()
    save_record(args.json, record)
    print(json.dumps({k: record[k] for k in ("test_accuracy", "minutes", "architecture")}))


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--archive", required=True, help="cifar10-jpeg.tar.gz")
    p.add_argument("--cache", default=os.path.expanduser("~/.cache/resnet-tta"))
    p.add_argument("--minutes", type=float, default=30.0, help="the final run's time budget")
    p.add_argument(
        "--select-fraction",
        type=float,
        default=1.0,
        help="selection time, as a fraction of the budget, shared by the candidates",
    )
    p.add_argument("--candidates", nargs="*", choices=sorted(CANDIDATES))
    p.add_argument("--precision", default="auto", help="auto: bfloat16 where the CPU computes it")
    p.add_argument("--json", required=True)
    p.add_argument("--train-limit", type=int, help="smoke tests only: the first N images")
    p.add_argument("--validation", type=int, default=5000, help="held out for selection")
    return p.parse_args()


def _extract(archive: Path, cache: Path) -> dict[str, Path]:
    """The archive's folder, and a view of it that holds only ``train/`` for selection."""
    root = extract_cifar_jpeg(archive, cache)
    train_only = cache / "cifar10-train-only"
    train_only.mkdir(exist_ok=True)
    if not (train_only / "train").exists():
        (train_only / "train").symlink_to(root / "train")
    return {"full": root, "train_only": train_only}


def _epochs_for(seconds: float, epoch_seconds: float) -> int:
    return max(1, math.floor(seconds / epoch_seconds))


def _select(
    name: str,
    recipe: dict[str, Any],
    data: dict[str, Path],
    seconds: float,
    runs: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Train on 45k for ``seconds`` (epochs fitted from a one-epoch probe), score on the 5k."""
    probe = _train(
        recipe,
        data["train_only"],
        runs / f"probe-{name}",
        epochs=1,
        validation=args.validation,
        args=args,
    )
    epoch_seconds = probe["train_seconds"]
    left = max(epoch_seconds, seconds - epoch_seconds)
    epochs = _epochs_for(left, epoch_seconds)
    run = _train(
        recipe,
        data["train_only"],
        runs / f"select-{name}",
        epochs=epochs,
        validation=args.validation,
        args=args,
    )
    print(f"{name}: {epochs} epochs, val accuracy {run['val_accuracy']:.4f}", flush=True)
    return {
        "candidate": name,
        **recipe,
        "epochs": epochs,
        "probe_epoch_seconds": epoch_seconds,
        **run,
    }


def _final(
    best: dict[str, Any], data: dict[str, Path], budget: float, runs: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """The chosen recipe on all 50k for the budget; the test split's one evaluation."""
    per_epoch = best["train_seconds"] / best["epochs"] * TRAIN_IMAGES / SELECT_IMAGES
    epochs = _epochs_for(budget, per_epoch)
    recipe = {k: best[k] for k in ("architecture", "preset")}
    run = _train(recipe, data["full"], runs / "final", epochs=epochs, validation=None, args=args)
    accuracy = run["test_accuracy"]
    return {
        "architecture": recipe["architecture"],
        "preset": recipe["preset"],
        "precision": args.precision,
        "epochs": epochs,
        "test_accuracy": accuracy,
        "test_metrics": run["metrics"],
        "minutes": run["train_seconds"] / 60.0,
        "evaluation_seconds": run["total_seconds"] - run["train_seconds"],
        "thresholds": {
            f"{t:.4f}": {
                "reached": accuracy >= t,
                "minutes": run["train_seconds"] / 60.0 if accuracy >= t else None,
            }
            for t in THRESHOLDS
        },
        "goal_met": accuracy >= 0.9125 and run["train_seconds"] <= 30 * 60,
        "history": run["history"],
    }


def _train(
    recipe: dict[str, Any],
    data: Path,
    out: Path,
    *,
    epochs: int,
    validation: int | None,
    args: argparse.Namespace,
) -> dict[str, Any]:
    from core.training import make_config, train

    config = make_config(
        recipe["architecture"],
        f"folder:{data}",
        preset=recipe["preset"],
        epochs=epochs,
        validation=validation,
        precision=args.precision,
        tensorboard=False,
        train_limit=args.train_limit,
    )
    started = time.perf_counter()
    result = train(config, out)
    total = time.perf_counter() - started
    history = [r.to_dict() for r in result.history]
    train_seconds = sum(r["seconds"] for r in history)
    last = history[-1]
    metrics = result.metrics
    return {
        "train_seconds": train_seconds,
        "total_seconds": total,
        "val_accuracy": last.get("val_accuracy") if validation else None,
        "test_accuracy": metrics.get("accuracy") if metrics.get("split") == "test" else None,
        "metrics": {k: v for k, v in metrics.items() if k != "per_class"},
        "history": history,
    }


def _machine() -> dict[str, Any]:
    import keras

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


if __name__ == "__main__":
    main()
