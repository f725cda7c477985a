"""Issue 10, item 3: the training path works under ``KERAS_BACKEND=jax`` with TensorFlow absent.

The script runs in a fresh interpreter whose ``sitecustomize`` puts a ``sys.meta_path`` finder
first, so that ``import tensorflow`` (or any ``tensorflow.*``) raises ImportError there, as on
a machine without it. In it, nets train with the paper's CIFAR augmentation and a step
schedule: a pre-activation ResNet-8 with dropout (random state beyond the data's) on synthetic
data, and resnet8 on a folder of PNG and JPEG files (large enough to be streamed from disk,
fitted to the model's size), and resnet8 with RandAugment, Cutout and CutMix (soft labels);
each run is cancelled inside epoch 2, resumed, and must equal the uninterrupted run (losses and
weights): issue 15 under JAX. The folder's model is then
evaluated with core's evaluation (also with ten-crop testing) and used for predictions, and
TensorFlow must never have been imported. (What needs only the JAX backend, not TensorFlow's
absence, is tested here too: one fresh interpreter and one JAX start-up for both.)
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax not installed"),
]

BLOCK_TENSORFLOW = textwrap.dedent(
    """
    import sys

    class NoTensorFlow:
        '''Every import of tensorflow fails, as where it is not installed.'''

        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ImportError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, NoTensorFlow())
    """
)

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    try:
        import tensorflow  # noqa: F401
        sys.exit("tensorflow imported: the blocker did not work")
    except ImportError:
        pass

    import keras
    import numpy as np
    from core.data import load_dataset, make_pipeline
    from core.environment import describe_environment
    from core.evaluation import evaluate_model
    from core.inference import Predictor
    from core.models import CUSTOM_OBJECTS
    from core.training import TrainHooks, make_config, train

    root = Path(sys.argv[1])
    out = {"backend": keras.backend.backend(), "runs": {}}
    sources = {  # each: 3 batches an epoch after a quarter is held out for validation
        "synthetic": ("preact_resnet8", "synthetic:96:16x16x3:2", None, 24, 0.3, "cifar"),
        "folder": ("resnet8", f"folder:{root / 'images'}", [16, 16, 3], 16, 0.0, "cifar"),
        "policies": (
            "resnet8", "synthetic:96:16x16x3:2", None, 24, 0.0,
            "cifar+randaugment+cutout+cutmix",
        ),
    }
    for name, (architecture, data, shape, batch_size, dropout, augment) in sources.items():
        cfg = make_config(
            architecture, data, epochs=3, batch_size=batch_size, precision="float32",
            tensorboard=False, dropout=dropout,
            validation=0.25, augment=augment, progress_every=1, input_shape=shape,
            augment_params={"cutout": {"size": 6}, "cutmix": {"prob": 1.0}},
            schedule={"kind": "step", "base_lr": 0.05, "boundary_epochs": [2]},
        )
        whole = train(cfg, root / name / "whole")
        events = []  # cancelled after the first batch of epoch 2, as a kill would leave it
        hooks = TrainHooks(
            on_progress=events.append, should_cancel=lambda: any(e.epoch == 2 for e in events)
        )
        first = train(cfg, root / name / "resumed", hooks=hooks)
        resumed = train(cfg, root / name / "resumed", resume=True)
        a, b = (
            keras.saving.load_model(r.model_path, custom_objects=CUSTOM_OBJECTS, compile=False)
            for r in (whole, resumed)
        )
        out["runs"][name] = {
            "statuses": [whole.status, resumed.status],
            "dropout_layers": sum(isinstance(x, keras.layers.Dropout) for x in a.layers),
            "first": [first.status, first.epochs_completed],
            "whole": [r.loss for r in whole.history],
            "resumed": [r.loss for r in resumed.history],
            "learning_rates": [r.learning_rate for r in whole.history],
            "same_weights": all(
                np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights())
            ),
            "files": sorted(p.name for p in (root / name / "whole").iterdir()),
            "metrics": whole.metrics,
        }

    # Evaluation and prediction of the folder's model, on its validation images.
    predictor = Predictor.load(root / "folder" / "whole" / "model.keras")
    dataset = load_dataset(f"folder:{root / 'images'}")
    images = dataset.splits["train"]
    pipeline = make_pipeline(images, batch_size=16, training=False, image_shape=(16, 16, 3))
    metrics = evaluate_model(predictor.model, pipeline, class_names=dataset.class_names)
    larger = make_pipeline(images, batch_size=16, training=False, image_shape=(20, 20, 3))
    ten_crop = evaluate_model(
        predictor.model, larger, class_names=dataset.class_names, ten_crop=True
    )
    x, y = zip(*pipeline.as_numpy_iterator())
    probabilities = predictor.probabilities(np.concatenate(x))
    predictions = predictor.predict_arrays([np.zeros((40, 30, 3), np.uint8)], top_k=2)
    out.update(
        streamed=images.paths is not None,
        metrics=metrics,
        ten_crop=ten_crop,
        labels=np.concatenate(y).tolist(),
        predicted=probabilities.argmax(axis=1).tolist(),
        prediction=predictions[0],
        environment=describe_environment(),
        tensorflow_imported="tensorflow" in sys.modules,
    )
    print(json.dumps(out))
    """
)


def make_folder(root: Path) -> None:
    """Two classes of 32 images each, half PNG and half JPEG, too large to be held in memory
    (over core.data.decode's 128x128 pixels), so the pipeline decodes them while streaming."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(["dark", "light"]):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(32):
            arr = rng.normal(70 + 110 * k, 25, size=(140, 150 + i, 3))
            img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
            img.save(folder / (f"{i}.png" if i % 2 else f"{i}.jpg"))


def test_training_evaluation_and_prediction_without_tensorflow(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCK_TENSORFLOW)
    make_folder(tmp_path / "images")
    path = os.pathsep.join(p for p in (str(blocker), os.environ.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "PYTHONPATH": path, "KERAS_BACKEND": "jax"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    assert out["backend"] == "jax"
    assert out["runs"]["synthetic"]["dropout_layers"] > 0
    assert out["runs"]["folder"]["dropout_layers"] == 0
    for name, run in out["runs"].items():
        assert run["statuses"] == ["completed", "completed"], name
        assert run["first"] == ["cancelled", 1], name
        assert len(run["whole"]) == 3 and all(np.isfinite(run["whole"])), name
        assert run["resumed"] == run["whole"], name  # bit for bit, not approximately
        assert run["same_weights"], name
        assert run["learning_rates"] == pytest.approx([0.05, 0.005, 0.005]), name
        for f in ("config.json", "history.json", "labels.json", "metrics.json", "model.keras"):
            assert f in run["files"], (name, run["files"])
        assert run["metrics"]["split"] == "val" and run["metrics"]["n"] in (24, 16), name

    metrics = out["metrics"]
    assert out["streamed"]
    labels, predicted = np.array(out["labels"]), np.array(out["predicted"])
    assert len(labels) == metrics["n"] == 64
    assert metrics["accuracy"] == pytest.approx(float(np.mean(labels == predicted)))
    for key in ("precision_macro", "recall_macro", "f1_macro"):
        assert 0.0 <= metrics[key] <= 1.0
    ten_crop = out["ten_crop"]  # 20x20 images, the 16x16 model averaged over ten crops of each
    assert ten_crop["ten_crop"] is True and ten_crop["n"] == 64
    assert 0.0 <= ten_crop["accuracy"] <= 1.0
    assert [p["label"] for p in out["prediction"]] in (["dark", "light"], ["light", "dark"])
    env = out["environment"]
    assert env["backend"] == "jax" and env["jax"] and env["jaxlib"] and "tensorflow" not in env
    assert out["tensorflow_imported"] is False
