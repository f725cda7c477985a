"""Training with augmentation policies: one tiny run per input pipeline.

mixup and CutMix train on soft labels, so the loss is categorical and validation's labels are
one-hot; the run must still resume exactly (the policies' draws are a function of the seed,
the epoch and the batch).
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from core.models import CUSTOM_OBJECTS
from core.training import TrainHooks, make_config, train


def tiny_config(augment: str, *, epochs: int = 2, **overrides):  # type: ignore[no-untyped-def]
    return make_config(
        "resnet8",
        "synthetic:48:16x16x3:3",
        epochs=epochs,
        batch_size=16,
        precision="float32",
        tensorboard=False,
        validation=0.25,
        progress_every=1,
        augment=augment,
        augment_params={"cutout": {"size": 6}, "cutmix": {"prob": 1.0}},
        schedule={"kind": "constant", "base_lr": 0.05},
        **overrides,
    )


def weights(path: Path) -> list[np.ndarray]:
    model = keras.saving.load_model(path, custom_objects=CUSTOM_OBJECTS, compile=False)
    return model.get_weights()


def cancel_in_epoch_2() -> TrainHooks:
    events: list = []
    return TrainHooks(
        on_progress=events.append, should_cancel=lambda: any(e.epoch == 2 for e in events)
    )


def test_tf_data_training_with_randaugment_cutout_and_mixup(tmp_path):
    config = tiny_config("cifar+randaugment+cutout+mixup", epochs=1, label_smoothing=0.1)
    result = train(config, tmp_path / "run")
    assert result.status == "completed" and result.epochs_completed == 1
    record = result.history[0]
    assert np.isfinite(record.loss) and record.val_accuracy is not None
    assert result.metrics["split"] == "val" and result.metrics["n"] == 12
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["augment"] == "cifar+randaugment+cutout+mixup"
    assert saved["augment_params"]["cutout"]["size"] == 6


def use_numpy_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline other backends get (JAX's), trained on TensorFlow's Keras: what it gives
    the trainer is the same; JAX itself is test_without_tensorflow.py's."""
    monkeypatch.setattr("core.data.pipeline.keras_backend", lambda: "jax")


def test_numpy_pipeline_training_with_autoaugment_and_cutmix(tmp_path, monkeypatch):
    use_numpy_pipeline(monkeypatch)
    result = train(tiny_config("cifar+autoaugment-cifar10+cutmix", epochs=1), tmp_path / "run")
    assert result.status == "completed"
    assert np.isfinite(result.history[0].loss)
    assert 0.0 <= result.metrics["accuracy"] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("pipeline", "augment"),
    [("tf.data", "cifar+randaugment+cutout+mixup"), ("numpy", "none+autoaugment-cifar10+cutmix")],
)
def test_a_run_with_policies_resumes_exactly(tmp_path, monkeypatch, pipeline, augment):
    if pipeline == "numpy":
        use_numpy_pipeline(monkeypatch)
    config = tiny_config(augment)
    whole = train(config, tmp_path / "whole")
    first = train(config, tmp_path / "resumed", hooks=cancel_in_epoch_2())
    assert (first.status, first.epochs_completed) == ("cancelled", 1)
    resumed = train(config, tmp_path / "resumed", resume=True)
    assert resumed.status == "completed"
    assert [r.loss for r in resumed.history] == [r.loss for r in whole.history]
    for a, b in zip(weights(whole.model_path), weights(resumed.model_path), strict=True):
        np.testing.assert_array_equal(a, b)


def test_mixing_labels_of_a_multi_label_source_is_refused_by_the_config():
    with pytest.raises(ValueError, match="multi-label"):
        make_config("resnet8", "coco:/data/coco", augment="imagenet+cutmix")
    config = make_config("resnet8", "coco:/data/coco", augment="imagenet+randaugment")
    assert config.augment == "imagenet+randaugment"
