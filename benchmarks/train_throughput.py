"""Training images/s of our ResNets against a plain Keras reference, side by side in one run.

The reference is a minimal ResNet written the way the Keras documentation writes one
(keras.io's CIFAR-10 ResNet v1: `Conv2D` with its default bias, `BatchNormalization`,
`Activation("relu")`, `layers.add`, 1×1 projection shortcuts where the shape changes, L2 on
kernels), trained by `model.fit` in float32. Ours is the model and compile step of
`core.training` exactly as a run uses them (`build_training_model`), float32 and at the default
precision. All variants read the same in-memory tf.data pipeline (`core.data.make_pipeline`
with the paper's augmentation) and are timed in interleaved rounds, so machine noise hits them
alike. A round's rate is the batch size over the median training-step time of a `model.fit`
(timed by a callback from the start to the end of each step), which keeps one-off stalls of a
shared machine out of it; the median round is reported.

    python benchmarks/train_throughput.py --json docs/results/train_throughput.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras
import numpy as np

from core.data import ImageSet, make_pipeline
from core.models import parse_architecture
from core.training import make_config
from core.training.precision import resolve_policy
from core.training.trainer import build_training_model


def keras_docs_resnet(depth: int, *, dtype: str | None = None) -> keras.Model:
    """ResNet v1 for CIFAR as the Keras documentation writes it (6n+2 layers)."""
    l2 = keras.regularizers.L2(1e-4 / 2)
    n = (depth - 2) // 6

    def conv_bn(x: object, filters: int, strides: int = 1, relu: bool = True) -> object:
        x = keras.layers.Conv2D(
            filters,
            3,
            strides=strides,
            padding="same",
            kernel_initializer="he_normal",
            kernel_regularizer=l2,
            dtype=dtype,
        )(x)
        x = keras.layers.BatchNormalization(dtype=dtype)(x)
        return keras.layers.Activation("relu", dtype=dtype)(x) if relu else x

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0, dtype=dtype)(inputs)
    x = conv_bn(x, 16)
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(n):
            strides = 2 if stage > 0 and block == 0 else 1
            y = conv_bn(x, filters, strides)
            y = conv_bn(y, filters, relu=False)
            if strides != 1:
                x = keras.layers.Conv2D(
                    filters, 1, strides=strides, kernel_regularizer=l2, dtype=dtype
                )(x)
            x = keras.layers.Activation("relu", dtype=dtype)(keras.layers.add([x, y], dtype=dtype))
    x = keras.layers.GlobalAveragePooling2D(dtype=dtype)(x)
    outputs = keras.layers.Dense(10, activation="softmax", dtype="float32")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


class StepTimer(keras.callbacks.Callback):
    """Wall time of each training step."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_begin(self, batch: int, logs: object = None) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: object = None) -> None:
        self.times.append(time.perf_counter() - self._start)


def ours(arch: str, precision: str, batch: int, steps: int) -> keras.Model:
    cfg = make_config(arch, "cifar10", preset="cifar-paper", batch_size=batch, precision=precision)
    return build_training_model(cfg, input_shape=(32, 32, 3), num_classes=10, steps_per_epoch=steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["resnet20", "resnet56"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    n = args.batch_size * 16
    images = ImageSet(
        class_names=[str(i) for i in range(10)],
        multi_label=False,
        labels=rng.integers(0, 10, n).astype(np.int64),
        images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
        image_shape=(32, 32, 3),
    )
    data = make_pipeline(
        images,
        batch_size=args.batch_size,
        training=True,
        image_shape=(32, 32, 3),
        augment="cifar",
        repeat=True,
    )
    default_policy = resolve_policy("auto") or "float32"
    report: dict[str, object] = {
        "batch_size": args.batch_size,
        "steps": args.steps,
        "rounds": args.rounds,
        "default_precision": default_policy,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "machine": platform.processor() or platform.machine(),
        "results": {},
    }
    for arch in args.archs:
        depth = parse_architecture(arch).depth
        variants = {
            "reference_float32": keras_docs_resnet(depth),
            "reference_bfloat16": keras_docs_resnet(depth, dtype="mixed_bfloat16"),
            "ours_float32": ours(arch, "float32", args.batch_size, args.steps),
            "ours_default": ours(arch, "auto", args.batch_size, args.steps),
        }
        for model in variants.values():  # trace and warm up, with the timed fit's own settings
            model.fit(data, steps_per_epoch=args.steps, epochs=1, verbose=0)
        rates: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.rounds):
            for name, model in variants.items():
                timer = StepTimer()
                model.fit(data, steps_per_epoch=args.steps, epochs=1, verbose=0, callbacks=[timer])
                rates[name].append(args.batch_size / statistics.median(timer.times))
        med = {k: statistics.median(v) for k, v in rates.items()}
        ref = med["reference_float32"]
        result = {
            "images_per_second": {k: round(v, 1) for k, v in med.items()},
            "rounds": {k: [round(x, 1) for x in v] for k, v in rates.items()},
            "ratio_vs_reference_float32": {k: round(v / ref, 3) for k, v in med.items()},
        }
        report["results"][arch] = result  # type: ignore[index]
        print(
            arch,
            json.dumps(result["images_per_second"]),
            json.dumps(result["ratio_vs_reference_float32"]),
            flush=True,
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
