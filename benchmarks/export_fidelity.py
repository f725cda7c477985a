"""How closely do the exports reproduce the Keras model? Train a run per precision, export it to
every format, and run each export in its own runtime on the data's images.

Prints, per precision and format: the seconds to export and verify, the largest probability
difference from the float32 Keras model (the same weights and math: what the export must
reproduce, to 1e-4) and from the Keras model as trained (for a mixed-precision run, its own
16-bit rounding), and how often the top-1 class agrees with the model as trained.

    python benchmarks/export_fidelity.py        # resnet8, 1 epoch on the 24 test-fixture JPEGs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.inference import (  # noqa: E402
    EXPORT_FORMATS,
    ExportFormat,
    export_run_model,
    float32_model,
    load_keras_model,
)
from core.training import make_config, train  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "cifar10-jpeg"


def run_export(fmt: ExportFormat, version_dir: Path, x: np.ndarray) -> np.ndarray:
    if fmt == ExportFormat.SAVEDMODEL:
        import tensorflow as tf

        serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
        return np.asarray(serve(image=tf.constant(x))["output_0"].numpy())
    if fmt == ExportFormat.ONNX:
        import onnxruntime as ort

        session = ort.InferenceSession(
            str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        return np.asarray(session.run(["probabilities"], {"image": x})[0])
    return np.asarray(load_keras_model(version_dir / "model.keras")(x, training=False))


def images(folder: Path) -> np.ndarray:
    from core.images import decode_image

    paths = sorted(folder.glob("*/*.jpg")) + sorted(folder.glob("*/*.png"))
    return np.stack([decode_image(p.read_bytes(), channels=3) for p in paths]).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet8")
    parser.add_argument("--images", type=Path, default=FIXTURE, help="class folders of images")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--precision", nargs="+", default=["float32", "bfloat16"])
    args = parser.parse_args()
    x = images(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precision:
            run = Path(tmp) / precision
            config = make_config(
                args.arch, f"folder:{args.images}", epochs=args.epochs, batch_size=8,
                precision=precision, tensorboard=False, validation=0.25,
            )  # fmt: skip
            train(config, run)
            trained = load_keras_model(run / "model.keras")
            as_trained = np.asarray(trained(x, training=False))
            twin = np.asarray(float32_model(trained)(x, training=False))
            for fmt in map(ExportFormat, EXPORT_FORMATS):
                started = time.perf_counter()
                exported = export_run_model(
                    run / "model.keras", fmt, Path(tmp) / f"{precision}-{fmt}"
                )
                seconds = time.perf_counter() - started
                got = run_export(fmt, Path(tmp) / f"{precision}-{fmt}" / "1", x)
                print(
                    f"{exported.trained_precision:15s} {fmt.value:10s} {seconds:5.2f} s  "
                    f"vs float32 Keras {np.abs(got - twin).max():.2e}  "
                    f"vs as trained {np.abs(got - as_trained).max():.2e}  "
                    f"top-1 agrees {(got.argmax(1) == as_trained.argmax(1)).mean():.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
