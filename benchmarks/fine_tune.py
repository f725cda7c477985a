"""Fine-tuning from a weights file on a small folder dataset, against training from scratch.

No machine here can download the published ImageNet weights, so this plays the whole story on
CIFAR-10 (the JPEG mirror in /work/shared/datasets):

1. **Weights to publish.** ResNet-18 (torchvision's layout: v1.5, symmetric padding, ImageNet
   normalisation) is trained on five classes (``--source``, ``--source-per-class`` images each),
   starting from a freshly initialised torchvision-layout file, and its weights are written as
   torchvision's state dict (``.safetensors``), as a user would download one.
2. **Fine-tuning.** A small folder of the five other classes (``--target``,
   ``--target-per-class`` training images each; CIFAR-10's 1,000 test images per class to test
   on) is trained three ways, the same recipe and epochs each: from scratch; from the file at
   the full rate; from the file with the backbone at ``--backbone-lr-multiplier`` of it.

Every run is ``core.training.train`` with the config ``POST /v1/runs`` would resolve (the worker
runs the same call). ::

    python benchmarks/fine_tune.py --archive /work/shared/datasets/cifar10-jpeg.tar.gz \\
        --json docs/results/fine_tune.json
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import extract_cifar_jpeg, save_record

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SIDE = 32


def main() -> None:
    args = _parse()
    cache = Path(args.cache)
    cifar = extract_cifar_jpeg(Path(args.archive), cache)
    source = _folder(cifar, cache / "source", args.source, args.source_per_class)
    target = _folder(cifar, cache / "target", args.target, args.target_per_class)
    record: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": platform.processor() or platform.machine(),
        "architecture": "resnet18",
        "input": f"{SIDE}x{SIDE}",
        "source": {"classes": args.source, "train_per_class": args.source_per_class},
        "target": {"classes": args.target, "train_per_class": args.target_per_class,
                   "test_images": 1000 * len(args.target)},
        "runs": {},
    }  # fmt: skip
    runs = cache / "runs"
    published = _publish(source, runs, args, record)
    for name, options in (
        ("scratch", {}),
        ("fine-tuned", {"init_from": str(published)}),
        ("fine-tuned, discriminative", {
            "init_from": str(published), "backbone_lr_multiplier": args.backbone_lr_multiplier,
        }),
    ):  # fmt: skip
        record["runs"][name] = _train(target, runs / name.replace(", ", "-"), args, **options)
        print(name, record["runs"][name]["test_accuracy"], flush=True)
        save_record(args.json, record)


def _publish(source: Path, runs: Path, args: argparse.Namespace, record: dict[str, Any]) -> Path:
    """Train the weights to publish; write them as torchvision's state dict."""
    import keras

    from core.models import build_model
    from core.models.weights import PREPROCESSING, torchvision_state_dict, write_safetensors

    runs.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    fresh = build_model(
        "resnet18", input_shape=(SIDE, SIDE, 3), num_classes=len(args.source),
        padding="symmetric", normalization="per_channel",
    )  # fmt: skip
    tv = PREPROCESSING["torchvision"]
    fresh.get_layer("preprocess").set_statistics(tv.mean, tv.std)
    init = write_safetensors(runs / "init.safetensors", torchvision_state_dict(fresh))
    run = _train(source, runs / "source", args, init_from=str(init), epochs=args.source_epochs)
    record["runs"]["source (the weights to publish)"] = run
    print("source", run["test_accuracy"], flush=True)
    model = keras.saving.load_model(runs / "source" / "model.keras", compile=False)
    return write_safetensors(
        runs / "resnet18-cifar5.safetensors",
        torchvision_state_dict(model),
        metadata={"format": "pt"},
    )


def _train(data: Path, out: Path, args: argparse.Namespace, **options: Any) -> dict[str, Any]:
    from core.training import make_config, train

    config = make_config(
        "resnet18", f"folder:{data}", epochs=options.pop("epochs", args.epochs),
        batch_size=args.batch_size, input_shape=(SIDE, SIDE, 3), augment="cifar",
        padding="symmetric", normalization="per_channel", precision=args.precision,
        optimizer={"name": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
        schedule={"kind": "onecycle", "base_lr": args.lr}, seed=args.seed, tensorboard=False,
        **options,
    )  # fmt: skip
    started = time.perf_counter()
    result = train(config, out)
    return {
        "config": {k: v for k, v in config.model_dump(mode="json").items() if v not in (None, [])},
        "epochs": result.epochs_completed,
        "test_accuracy": result.metrics["accuracy"],
        "test_images": result.metrics["n"],
        "seconds": time.perf_counter() - started,
    }


def _folder(cifar: Path, root: Path, classes: list[str], per_class: int) -> Path:
    """``root/train/<class>/``: the first ``per_class`` training images (links);
    ``root/test/<class>/``: all of the class's test images."""
    for name in classes:
        train = root / "train" / name
        train.mkdir(parents=True, exist_ok=True)
        for path in sorted((cifar / "train" / name).glob("*.jpg"))[:per_class]:
            link = train / path.name
            if not link.exists():
                link.symlink_to(path)
        test = root / "test" / name
        if not test.exists():
            test.parent.mkdir(parents=True, exist_ok=True)
            test.symlink_to(cifar / "test" / name)
    return root


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--archive", required=True, help="cifar10-jpeg.tar.gz")
    p.add_argument("--cache", default=str(Path("~/.cache/resnet-fine-tune").expanduser()))
    p.add_argument("--source", nargs="+", default=list(CLASSES[:5]), choices=CLASSES)
    p.add_argument("--target", nargs="+", default=list(CLASSES[5:]), choices=CLASSES)
    p.add_argument("--source-per-class", type=int, default=1000)
    p.add_argument("--source-epochs", type=int, default=6)
    p.add_argument("--target-per-class", type=int, default=100)
    p.add_argument("--epochs", type=int, default=10, help="each target run's epochs")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05, help="one-cycle peak rate")
    p.add_argument("--backbone-lr-multiplier", type=float, default=0.1)
    p.add_argument("--precision", default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", required=True)
    return p.parse_args()


if __name__ == "__main__":
    main()
