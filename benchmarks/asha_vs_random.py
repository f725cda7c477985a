"""ASHA against random search on the same compute budget (total epochs), on a CIFAR-10 subset.

The search space is learning rates × weight decays × depths (ResNet-8/14/20); the configs are
shuffled once (``--seed``) and both methods take them in that order, so ASHA sees every config
random search sees, and more. Random search trains ``budget // max_epochs`` configs for the
whole ``--max-epochs``. ASHA (``core.early_stopping``: the rule the service's searches use,
here one trial at a time, as ``max_concurrent: 1``) judges each trial at its rungs, promotes
the top ``1/η``, stops the rest, and starts new configs until the next job would overrun the
budget. A promoted trial resumes from its checkpoint (``core.training.train(..., resume=True)``),
as a worker resumes one: the epochs it already trained are not spent again.

Every trial is ``core.training.train`` with a config ``POST /v1/runs`` would resolve; each
trains on the same split (``--validation`` of the subset held out) and is scored by its
validation accuracy after its last epoch. ::

    python benchmarks/asha_vs_random.py --archive /work/shared/datasets/cifar10-jpeg.tar.gz \\
        --per-class 200 --max-epochs 9 --budget 36 --json docs/results/asha_vs_random.json
"""

from __future__ import annotations

import argparse
import itertools
import platform
import random
import sys
import time
from operator import length_hint
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import extract_cifar_jpeg, save_record

LEARNING_RATES = (0.003, 0.01, 0.03, 0.1, 0.3)
WEIGHT_DECAYS = (1e-4, 5e-4, 2e-3)
DEPTHS = ("resnet8", "resnet14", "resnet20")


def main() -> None:
    args = _parse()
    cache = Path(args.cache)
    data = _subset(
        extract_cifar_jpeg(Path(args.archive), cache), cache / f"subset-{args.per_class}", args
    )
    from core.data import load_dataset
    from core.early_stopping import asha_rungs

    dataset = load_dataset(f"folder:{data}")
    space = list(itertools.product(DEPTHS, LEARNING_RATES, WEIGHT_DECAYS))
    random.Random(args.seed).shuffle(space)
    rungs = asha_rungs(
        max_epochs=args.max_epochs, grace_period=args.grace_period, reduction_factor=args.eta
    )
    record: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": platform.processor() or platform.machine(),
        "data": f"CIFAR-10 subset: {args.per_class} training images per class, "
        f"{args.validation:g} held out for validation",
        "space": {"architecture": DEPTHS, "schedule.base_lr": LEARNING_RATES,
                  "optimizer.weight_decay": WEIGHT_DECAYS},
        "budget_epochs": args.budget,
        "max_epochs": args.max_epochs,
        "asha": {"rungs": rungs, "reduction_factor": args.eta},
    }  # fmt: skip
    runs = cache / f"runs-{time.strftime('%Y%m%d-%H%M%S')}"
    trainer = _Trainer(dataset, f"folder:{data}", runs, args)
    record["random"] = _random_search(trainer, space, args)
    print("random", _brief(record["random"]), flush=True)
    save_record(args.json, record)
    record["asha"].update(_asha(trainer, space, rungs, args))
    print("asha", _brief(record["asha"]), flush=True)
    save_record(args.json, record)


class _Trainer:
    """Trains one config up to a given epoch, resuming from its folder's checkpoint."""

    def __init__(self, dataset: Any, spec: str, root: Path, args: argparse.Namespace) -> None:
        self.dataset = dataset
        self.spec = spec
        self.root = root
        self.args = args

    def config(self, trial: tuple[str, float, float]) -> Any:
        from core.training import make_config

        architecture, lr, wd = trial
        return make_config(
            architecture, self.spec, epochs=self.args.max_epochs,
            batch_size=self.args.batch_size, validation=self.args.validation,
            input_shape=(32, 32, 3), precision="float32", tensorboard=False, seed=self.args.seed,
            optimizer={"name": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": wd},
            schedule={"kind": "cosine", "base_lr": lr},
        )  # fmt: skip

    def train_to(self, name: str, trial: tuple[str, float, float], epoch: int) -> list[float]:
        """Train ``trial`` until it has ``epoch`` epochs; its validation accuracies so far."""
        from core.training import TrainHooks, train

        done = {"stop": False}

        def on_epoch(record: Any) -> None:
            done["stop"] = record.epoch >= epoch

        result = train(
            self.config(trial),
            self.root / name,
            hooks=TrainHooks(on_epoch=on_epoch, should_cancel=lambda: done["stop"]),
            dataset=self.dataset,
            resume=True,
        )
        return [float(r.val_accuracy or 0.0) for r in result.history]


def _random_search(
    trainer: _Trainer, space: list[tuple[str, float, float]], args: argparse.Namespace
) -> dict[str, Any]:
    started = time.perf_counter()
    trials = []
    for i, trial in enumerate(space[: args.budget // args.max_epochs]):
        history = trainer.train_to(f"random-{i}", trial, args.max_epochs)
        trials.append(_trial(trial, history))
        print("random", trials[-1], flush=True)
    return _summary(trials, time.perf_counter() - started)


def _asha(
    trainer: _Trainer,
    space: list[tuple[str, float, float]],
    rungs: list[int],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Sequential ASHA: promotions first (highest rung), else a new config, within budget."""
    from core.early_stopping import Report, Verdict, asha_decide

    started = time.perf_counter()
    levels = [*rungs, args.max_epochs]
    reports: list[list[Report]] = [[] for _ in rungs]  # per rung, in arrival order
    verdicts: list[dict[int, Verdict]] = [{} for _ in rungs]
    reached: dict[int, int] = {}  # trial → highest level reached (index into levels)
    histories: dict[int, list[float]] = {}
    spent, fresh = 0, iter(range(len(space)))
    while True:
        # Decide every rung, as the records do after each report; configs not started yet may
        # still reach any rung (they count as still to report).
        for k in range(len(rungs)):
            still = sum(
                1 for t, lvl in reached.items() if lvl < k and not _stopped(verdicts, t, lvl)
            )
            decided = asha_decide(
                reports[k], reduction_factor=args.eta, still_to_report=still + length_hint(fresh)
            )
            for report in reports[k]:
                trial = int(report.trial)
                if verdicts[k].get(trial, Verdict.PENDING) == Verdict.PENDING:
                    verdicts[k][trial] = decided[report.trial].verdict
        job = _next_promotion(verdicts, reached)
        if job is None:
            trial = next(fresh, None)
            if trial is None:
                break
            job, level = trial, 0
        else:
            level = reached[job] + 1
        cost = levels[level] - (levels[reached[job]] if job in reached else 0)
        if spent + cost > args.budget:
            break
        histories[job] = trainer.train_to(f"asha-{job}", space[job], levels[level])
        spent += cost
        reached[job] = level
        if level < len(rungs):
            reports[level].append(Report(str(job), histories[job][-1]))
        print("asha", job, space[job], f"epoch {levels[level]}", histories[job][-1], flush=True)
    trials = [
        {**_trial(space[t], h), "stopped_at_epoch": None if len(h) == args.max_epochs else len(h)}
        for t, h in histories.items()
    ]
    return _summary(trials, time.perf_counter() - started)


def _stopped(verdicts: list[dict[int, Any]], trial: int, level: int) -> bool:
    from core.early_stopping import Verdict

    return any(v.get(trial) == Verdict.STOPPED for v in verdicts[: level + 1])


def _next_promotion(verdicts: list[dict[int, Any]], reached: dict[int, int]) -> int | None:
    from core.early_stopping import Verdict

    for k in reversed(range(len(verdicts))):
        for trial, verdict in verdicts[k].items():
            if verdict == Verdict.PROMOTED and reached[trial] == k:
                return trial
    return None


def _trial(trial: tuple[str, float, float], history: list[float]) -> dict[str, Any]:
    architecture, lr, wd = trial
    return {
        "architecture": architecture, "base_lr": lr, "weight_decay": wd,
        "epochs": len(history), "val_accuracy": history[-1] if history else None,
    }  # fmt: skip


def _summary(trials: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    best = max(trials, key=lambda t: t["val_accuracy"] or 0.0)
    return {
        "trials": len(trials),
        "epochs_spent": sum(t["epochs"] for t in trials),
        "best": best,
        "seconds": round(seconds, 1),
        "all": trials,
    }


def _brief(summary: dict[str, Any]) -> str:
    best = summary["best"]
    return (
        f"{summary['trials']} trials, {summary['epochs_spent']} epochs, best "
        f"{best['val_accuracy']:.4f} ({best['architecture']}, lr {best['base_lr']}, "
        f"wd {best['weight_decay']}, {best['epochs']} epochs)"
    )


def _subset(cifar: Path, root: Path, args: argparse.Namespace) -> Path:
    """``root/<class>/``: the first ``--per-class`` training images of each class (links)."""
    for folder in sorted((cifar / "train").iterdir()):
        out = root / folder.name
        out.mkdir(parents=True, exist_ok=True)
        for path in sorted(folder.glob("*.jpg"))[: args.per_class]:
            link = out / path.name
            if not link.exists():
                link.symlink_to(path)
    return root


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--archive", required=True, help="cifar10-jpeg.tar.gz")
    p.add_argument("--cache", default=str(Path("~/.cache/resnet-asha").expanduser()))
    p.add_argument("--per-class", type=int, default=200, help="training images per class")
    p.add_argument("--validation", type=float, default=0.2)
    p.add_argument("--max-epochs", type=int, default=9, help="a trial's whole budget")
    p.add_argument("--budget", type=int, default=36, help="total epochs for each method")
    p.add_argument("--grace-period", type=int, default=1)
    p.add_argument("--eta", type=int, default=3, help="reduction factor")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", required=True)
    return p.parse_args()


if __name__ == "__main__":
    main()
