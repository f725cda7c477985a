"""Training images/s on an accelerator (issue 2, section 8), whichever Keras backend is present.

ResNet-50 at batch 256 on synthetic 224×224 data in float32 and in mixed precision (float16 on
GPUs), and ResNet-20 at batch 128 on 32×32 data. Data lives on the device, so this measures the
model, optimizer and framework, not an input pipeline.

    KERAS_BACKEND=jax python benchmarks/gpu_throughput.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras
import numpy as np

from core.models import build_model

CASES = [
    # (architecture, batch, input size, dtype policy, measured steps)
    ("resnet50", 256, 224, None, 30),
    ("resnet50", 256, 224, "mixed_float16", 30),
    ("resnet20", 128, 32, None, 200),
    ("resnet20", 128, 32, "mixed_float16", 200),
]


def device_arrays(n: int, size: int, classes: int) -> tuple[object, object]:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    y = rng.integers(0, classes, n)
    if keras.backend.backend() == "jax":
        import jax

        return jax.device_put(x), jax.device_put(y)
    return x, y


def measure(arch: str, batch: int, size: int, policy: str | None, steps: int) -> dict[str, object]:
    classes = 1000 if size == 224 else 10
    model = build_model(
        arch,
        input_shape=(size, size, 3),
        num_classes=classes,
        dtype_policy=policy,
        weight_decay=1e-4,
        normalization="scale",
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        jit_compile=True,
    )
    x, y = device_arrays(batch * steps, size, classes)
    t0 = time.perf_counter()
    model.fit(x[: batch * 3], y[: batch * 3], batch_size=batch, epochs=1, verbose=0)  # compile
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
    seconds = time.perf_counter() - t0
    return {
        "architecture": arch,
        "batch_size": batch,
        "image_size": size,
        "precision": policy or "float32",
        "steps": steps,
        "seconds": round(seconds, 3),
        "images_per_second": round(batch * steps / seconds, 1),
        "warmup_seconds": round(compile_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: check the script on a CPU"
    )
    args = parser.parse_args()
    cases = (
        [(a, 4, 64 if s == 224 else s, p, 2) for a, _, s, p, _ in CASES] if args.quick else CASES
    )
    results = []
    for case in cases:
        r = measure(*case)
        print(json.dumps(r), flush=True)
        results.append(r)
    devices: list[str] = []
    if keras.backend.backend() == "jax":
        import jax

        devices = [d.device_kind for d in jax.devices()]
    report = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "devices": devices,
        "python": platform.python_version(),
        "xla": True,
        "results": results,
        "env": {k: v for k, v in os.environ.items() if k.startswith("XLA_")},
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
