"""Training end to end on tiny synthetic data: history, checkpoints, cancel, resume, fine-tuning."""

import json

import keras
import numpy as np
import pytest

from core.data import load_dataset
from core.models import CUSTOM_OBJECTS
from core.training import TrainHooks, make_config, train

DATA = "synthetic:192:16x16x3:3"


def tiny(**overrides):
    base = dict(
        epochs=2,
        batch_size=32,
        precision="float32",
        validation=0.25,
        schedule={"kind": "constant", "base_lr": 0.05},
        progress_every=1,
        tensorboard=False,
    )
    base.update(overrides)
    return make_config("resnet8", DATA, **base)


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(DATA)


def test_a_run_writes_model_history_checkpoint_and_metrics(tmp_path, dataset):
    epochs, progress = [], []
    result = train(
        tiny(tensorboard=True),
        tmp_path,
        hooks=TrainHooks(on_epoch=epochs.append, on_progress=progress.append),
        dataset=dataset,
    )
    assert result.status == "completed"
    assert [r.epoch for r in result.history] == [1, 2] == [r.epoch for r in epochs]
    assert all(
        r.val_accuracy is not None and r.seconds > 0 and r.images_per_second > 0
        for r in result.history
    )
    # 144 training images in batches of 32: 5 batches, a progress event after each.
    assert [p.batch for p in progress if p.epoch == 1] == [1, 2, 3, 4, 5]
    assert progress[-1].eta_seconds == pytest.approx(0.0, abs=1.0)
    for name in ("model.keras", "labels.json", "config.json", "history.json", "metrics.json"):
        assert (tmp_path / name).is_file(), name
    assert list((tmp_path / "checkpoints").glob("epoch-*.keras")) == [
        tmp_path / "checkpoints/epoch-0002.keras"
    ]
    assert any((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (
        metrics["split"] == "val"
    )  # synthetic data has no test split and 0.0 <= metrics["accuracy"] <= 1.0
    assert len(metrics["confusion_matrix"]) == 3


@pytest.mark.slow
def test_the_saved_model_holds_the_training_statistics(tmp_path, dataset):
    train(tiny(epochs=1, normalization="per_channel"), tmp_path, dataset=dataset)
    model = keras.saving.load_model(tmp_path / "model.keras", custom_objects=CUSTOM_OBJECTS)
    mean = keras.ops.convert_to_numpy(model.get_layer("preprocess").mean)
    assert mean.shape == (3,) and not np.allclose(mean, 0.0)


@pytest.mark.slow
def test_cancel_stops_within_a_batch_and_resume_ends_with_the_planned_epochs(tmp_path, dataset):
    batches = []

    def cancel_in_epoch_2():
        return len(batches) >= 7  # epoch 1 has 5 batches; stop 2 batches into epoch 2

    hooks = TrainHooks(on_progress=batches.append, should_cancel=cancel_in_epoch_2)
    first = train(tiny(epochs=3), tmp_path, hooks=hooks, dataset=dataset)
    assert first.status == "cancelled"
    assert first.epochs_completed == 1
    assert len(batches) <= 8
    assert not (tmp_path / "model.keras").exists()

    resumed = train(tiny(epochs=3), tmp_path, dataset=dataset, resume=True)
    assert resumed.status == "completed"
    assert [r.epoch for r in resumed.history] == [1, 2, 3]
    assert [r["epoch"] for r in json.loads((tmp_path / "history.json").read_text())] == [1, 2, 3]
    model = keras.saving.load_model(tmp_path / "model.keras", custom_objects=CUSTOM_OBJECTS)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 3 * 5


@pytest.mark.slow
def test_resume_of_a_finished_run_trains_nothing_more(tmp_path, dataset):
    train(tiny(epochs=1), tmp_path, dataset=dataset)
    again = train(tiny(epochs=1), tmp_path, dataset=dataset, resume=True)
    assert [r.epoch for r in again.history] == [1]


@pytest.mark.slow
def test_fine_tuning_copies_matching_layers_and_freezes_stages(tmp_path, dataset):
    train(tiny(epochs=1), tmp_path / "source", dataset=dataset)
    source = keras.saving.load_model(tmp_path / "source/model.keras", custom_objects=CUSTOM_OBJECTS)
    cfg = tiny(epochs=1, init_from=str(tmp_path / "source/model.keras"), freeze=["stem", "stage1"])
    train(cfg, tmp_path / "tuned", dataset=dataset)
    tuned = keras.saving.load_model(tmp_path / "tuned/model.keras", custom_objects=CUSTOM_OBJECTS)
    for name in ("stem_conv", "stage1_block1_conv1"):
        np.testing.assert_array_equal(
            tuned.get_layer(name).get_weights()[0], source.get_layer(name).get_weights()[0]
        )
    assert not np.array_equal(
        tuned.get_layer("stage2_block1_conv1").get_weights()[0],
        source.get_layer("stage2_block1_conv1").get_weights()[0],
    )


@pytest.mark.slow
def test_label_smoothing_and_bfloat16_train(tmp_path, dataset):
    result = train(
        tiny(epochs=1, label_smoothing=0.1, precision="bfloat16"), tmp_path, dataset=dataset
    )
    assert result.dtype_policy == "mixed_bfloat16"
    assert np.isfinite(result.history[0].loss)


def _killed_and_resumed(config, out, dataset):  # type: ignore[no-untyped-def]
    """Cancel inside epoch 2 (what a kill leaves: epoch 1's checkpoint), then resume."""
    batches = []
    hooks = TrainHooks(on_progress=batches.append, should_cancel=lambda: len(batches) >= 7)
    assert train(config, out, hooks=hooks, dataset=dataset).epochs_completed == 1
    return train(config, out, dataset=dataset, resume=True)


def _assert_same_model(a, b):  # type: ignore[no-untyped-def]
    assert [r.loss for r in b.history] == [r.loss for r in a.history]
    wa, wb = (
        keras.saving.load_model(r.model_path, custom_objects=CUSTOM_OBJECTS, compile=False)
        for r in (a, b)
    )
    for x, y in zip(wa.get_weights(), wb.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_a_resumed_run_with_dropout_is_the_uninterrupted_run(tmp_path, dataset):
    """Dropout's seed generators are not in .keras files: the checkpoint's state keeps them."""
    config = tiny(epochs=2, dropout=0.3).model_copy(update={"architecture": "preact_resnet8"})
    whole = train(config, tmp_path / "whole", dataset=dataset)
    _assert_same_model(whole, _killed_and_resumed(config, tmp_path / "resumed", dataset))


@pytest.mark.slow
def test_a_resumed_fine_tuning_run_is_the_uninterrupted_run(tmp_path, dataset):
    source = train(tiny(epochs=1, validation=None), tmp_path / "source", dataset=dataset)
    config = tiny(epochs=2, init_from=str(source.model_path), freeze=["stem", "stage1"])
    whole = train(config, tmp_path / "whole", dataset=dataset)
    _assert_same_model(whole, _killed_and_resumed(config, tmp_path / "resumed", dataset))
