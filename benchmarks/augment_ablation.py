"""Augmentation ablation on CIFAR-10 (issue 12, item 4): one ResNet, one schedule, one seed, each
augmentation policy in turn, all through ``core.training.train``, scored on the test split.

Every run is the same but for ``augment``: the architecture, the preset (``cifar-fast``: SGD with
Nesterov momentum, one-cycle to 0.2, weight decay 5e-4, per-channel normalisation; label
smoothing off here, so that mixup's and CutMix's soft labels are the only soft labels), the
epochs, the batch size, the seed (so the same initial weights and the same order of images),
and the training images (a seeded subset when ``--train-limit`` is given).

    python benchmarks/augment_ablation.py --archive ../shared/datasets/cifar10-jpeg.tar.gz \
        --epochs 10 --json docs/results/augment_ablation.json

``--train-limit``/``--test-limit`` take subsets (the smoke test: ``--train-limit 256
--test-limit 128 --epochs 1 --arch resnet8``). The JSON holds each policy's test accuracy and
loss, the last epoch's training loss, seconds and images/s, and the command and machine.

``--policy-cost`` instead times what each policy adds to one batch (CPU milliseconds of this
process, not wall time, for a batch of ``--batch-size`` CIFAR-10 training images, the median
of 50; no training, no model):

    python benchmarks/augment_ablation.py --archive ../shared/datasets/cifar10-jpeg.tar.gz \
        --policy-cost
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import extract_cifar_jpeg, save_record

POLICIES = (
    "cifar",
    "cifar+cutout",
    "cifar+mixup",
    "cifar+cutmix",
    "cifar+randaugment",
    "cifar+autoaugment-cifar10",
    "cifar+autoaugment-cifar10+cutout",
)


def main() -> None:
    args = _parse()
    from core.data import load_dataset

    root = extract_cifar_jpeg(Path(args.archive), Path(args.cache))
    if args.policy_cost:
        _policy_cost(root, args)
        return
    dataset = load_dataset(f"folder:{root}")
    record: dict[str, Any] = {
        "what": "CIFAR-10 test accuracy of one ResNet and schedule under each augmentation policy",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": _machine(),
        "architecture": args.arch,
        "preset": "cifar-fast (label smoothing 0)",
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "train_limit": args.train_limit,
        "test_limit": args.test_limit,
        "seed": args.seed,
        "runs": [],
    }
    for policy in args.policies or POLICIES:
        row = _run(policy, dataset, args)
        record["runs"].append(row)
        print(json.dumps(row), flush=True)
        save_record(args.json, record, indent=2)
    record["machine"]["load_average_at_end"] = os.getloadavg()
    save_record(args.json, record, indent=2)
    print(_table(record))


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--archive", required=True, help="cifar10-jpeg.tar.gz")
    p.add_argument("--cache", default=os.path.expanduser("~/.cache/resnet-augment"))
    p.add_argument("--arch", default="resnet20")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policies", nargs="*", help=f"default: {' '.join(POLICIES)}")
    p.add_argument("--json", default=None, help="write the record here (after every run)")
    p.add_argument("--policy-cost", action="store_true", help="time the policies, then stop")
    return p.parse_args()


def _run(policy: str, dataset: Any, args: argparse.Namespace) -> dict[str, Any]:
    from core.training import make_config, train

    config = make_config(
        args.arch,
        f"folder:{Path(args.cache) / 'cifar10-jpeg'}",
        preset="cifar-fast",
        epochs=args.epochs,
        batch_size=args.batch_size,
        label_smoothing=0.0,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        seed=args.seed,
        augment=policy,
        tensorboard=False,
    )
    out = Path(args.cache) / "runs" / f"{args.arch}-{policy.replace('+', '_')}-s{args.seed}"
    started = time.perf_counter()
    result = train(config, out / str(time.time_ns()), dataset=dataset)
    seconds = time.perf_counter() - started
    last = result.history[-1]
    return {
        "augment": policy,
        "test_accuracy": result.metrics.get("accuracy"),
        "test_loss": result.metrics.get("loss"),
        "test_images": result.metrics.get("n"),
        "train_loss_last_epoch": last.loss,
        "seconds": round(seconds, 1),
        "train_images_per_second": round(last.images_per_second, 1),
    }


def _policy_cost(root: Path, args: argparse.Namespace) -> None:
    """Median milliseconds each policy adds to a batch of real CIFAR-10 images."""
    import statistics

    import numpy as np

    from core.data.augment import batch_policy, parse_augment
    from core.images import decode_image

    files = sorted((root / "train").glob("*/*.jpg"))[:: 50_000 // args.batch_size][
        : args.batch_size
    ]
    x = np.stack([decode_image(f.read_bytes(), channels=3) for f in files]).astype(np.float32)
    y = np.arange(len(x)) % 10
    print(f"| augment | CPU ms per batch of {len(x)} |\n|---|---|")
    for name in args.policies or POLICIES[1:]:
        spec = parse_augment(name)
        policy = batch_policy(
            spec, None, num_classes=10, multi_label=False, image_shape=(32, 32, 3)
        )
        assert policy is not None, name
        times = []
        for j in range(50):
            # CPU time of this process: a shared machine's scheduling stays out of it.
            started = time.process_time()
            policy(x, y, (args.seed, 0, j))
            times.append(time.process_time() - started)
        print(f"| `{name}` | {statistics.median(times) * 1000:.1f} |", flush=True)


def _table(record: dict[str, Any]) -> str:
    lines = [
        "| augment | test accuracy | test loss | train loss (last epoch) | minutes | images/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in record["runs"]:
        accuracy = r["test_accuracy"]
        loss = r["test_loss"]
        lines.append(
            f"| `{r['augment']}` | {accuracy:.2%} | "
            f"{'' if loss is None else f'{loss:.3f}'} | {r['train_loss_last_epoch']:.3f} | "
            f"{r['seconds'] / 60:.1f} | {r['train_images_per_second']:,.0f} |"
        )
    return "\n".join(lines)


def _machine() -> dict[str, Any]:
    import keras

    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "keras_backend": keras.backend.backend(),
        "load_average_at_start": os.getloadavg(),
    }


if __name__ == "__main__":
    main()
