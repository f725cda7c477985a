"""Does the default precision lose accuracy? Train the same run in float32 and at the default.

Same architecture, data, seed and schedule (cifar-fast, shortened); only the precision differs.
Prints test accuracy, macro F1 and training images/s of each.

    python benchmarks/precision_accuracy.py --data folder:../shared/datasets/cifar10-jpeg.tar.gz
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.data import load_dataset
from core.training import make_config, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-limit", type=int, default=20_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    results = {}
    for precision in ("float32", "auto"):
        cfg = make_config(
            args.arch,
            args.data,
            preset="cifar-fast",
            epochs=args.epochs,
            train_limit=args.train_limit,
            precision=precision,
            tensorboard=False,
        )
        with tempfile.TemporaryDirectory() as out:
            r = train(cfg, out, dataset=dataset)
        results[precision] = {
            "dtype_policy": r.dtype_policy,
            "test_accuracy": round(r.metrics["accuracy"], 4),
            "test_f1_macro": round(r.metrics["f1_macro"], 4),
            "train_images_per_second": round(
                sum(h.images_per_second for h in r.history[1:]) / max(1, len(r.history) - 1), 1
            ),
        }
        print(precision, json.dumps(results[precision]), flush=True)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=2
            )
        )


if __name__ == "__main__":
    main()
