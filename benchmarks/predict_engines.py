"""The model call's engine (issue 11, item 3): Keras' ``tf.function``, the exported SavedModel's
serving signature and ONNX Runtime, at batch 1, 16 and 64, for ResNet-20 and ResNet-56, on this CPU.

Each engine runs the same float32 graph (``core.inference.export``); rounds interleave the engines
so that the machine's noise falls on all of them alike, and each cell is the median over rounds
of the mean time per call. Equality is checked on the same batch: top-1 and the largest
probability difference against Keras.

    python benchmarks/predict_engines.py --json docs/results/predict_engines.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

Forward = Callable[[np.ndarray], np.ndarray]


def engines_for(model: Any, folder: Path, threads: int) -> dict[str, Forward]:
    import onnxruntime as ort
    import tensorflow as tf

    from core.inference.export import export_model

    shape = tuple(model.input_shape[1:])
    keras_fn = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec((None, *shape), tf.float32)],
    )
    export_model(model, "savedmodel", folder / "savedmodel")
    serve = tf.saved_model.load(str(folder / "savedmodel")).signatures["serving_default"]
    (sm_in,) = serve.structured_input_signature[1]
    export_model(model, "onnx", folder / "model.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    in_name, out_name = session.get_inputs()[0].name, session.get_outputs()[0].name

    def run_saved(x: np.ndarray) -> np.ndarray:
        out = serve(**{sm_in: tf.constant(x)})
        return next(iter(out.values())).numpy()

    return {
        "keras_tf_function": lambda x: keras_fn(x).numpy(),
        "savedmodel_signature": run_saved,
        "onnxruntime": lambda x: session.run([out_name], {in_name: x})[0],
    }


def time_calls(fn: Forward, x: np.ndarray, seconds: float) -> float:
    fn(x)
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or calls < 3:
        fn(x)
        calls += 1
    return (time.perf_counter() - started) / calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--archs", nargs="*", default=["resnet20", "resnet56"])
    p.add_argument("--batches", nargs="*", type=int, default=[1, 16, 64])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=1.0, help="per engine, batch and round")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json", required=True)
    args = p.parse_args()

    import keras
    import tensorflow as tf

    from core.models import build_model

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for arch in args.archs:
        keras.utils.set_random_seed(0)
        model = build_model(arch, input_shape=(32, 32, 3), num_classes=10)
        with tempfile.TemporaryDirectory() as tmp:
            engines = engines_for(model, Path(tmp), args.threads)
            probe = rng.uniform(0, 255, (64, 32, 32, 3)).astype(np.float32)
            want = engines["keras_tf_function"](probe)
            agreement = {
                name: {
                    "top1_equal": bool((fn(probe).argmax(1) == want.argmax(1)).all()),
                    "max_abs_diff": float(np.abs(fn(probe) - want).max()),
                }
                for name, fn in engines.items()
            }
            times: dict[tuple[str, int], list[float]] = {}
            for _ in range(args.rounds):
                for batch in args.batches:
                    x = probe[:batch]
                    for name, fn in engines.items():
                        times.setdefault((name, batch), []).append(time_calls(fn, x, args.seconds))
            for (name, batch), ts in times.items():
                ms = statistics.median(ts) * 1000
                rows.append({
                    "architecture": arch, "engine": name, "batch": batch,
                    "ms_per_call": round(ms, 3), "images_per_second": round(batch / ms * 1000, 1),
                    **agreement[name],
                })  # fmt: skip
                print(f"{arch:9} {name:22} batch {batch:3}: {ms:8.3f} ms", flush=True)
    record = {
        "command": " ".join(["python", *sys.argv]),
        "threads": args.threads,
        "load_average_at_end": os.getloadavg(),
        "rows": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
