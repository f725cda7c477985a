"""One entry point from a typed config to a trained model, checkpoints and a history."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from core.data import (
    Dataset,
    ImageSet,
    load_dataset,
    pixel_statistics,
    split_train_val,
)
from core.data.pipeline import make_pipeline, uses_tf_data
from core.models import CUSTOM_OBJECTS, build_model, parse_architecture
from core.training.callbacks import RunCallback
from core.training.config import TrainConfig
from core.training.discriminative import OPTIMIZERS, discriminative_optimizer
from core.training.distribution import (
    WorkerRole,
    fit_across_workers,
    shard_by_data,
    synchronize_batch_norm,
)
from core.training.hooks import EpochRecord, TrainHooks
from core.training.precision import jit_compile, make_strategy, resolve_policy
from core.training.random_state import restore_random_states
from core.training.rundir import RunDir, write_json
from core.training.schedules import make_schedule

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    status: str  # "completed" | "cancelled"
    epochs_completed: int
    history: list[EpochRecord]
    out_dir: Path
    model_path: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # test (or validation) evaluation
    seconds: float = 0.0
    dtype_policy: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "epochs_completed": self.epochs_completed,
            "history": [r.to_dict() for r in self.history],
            "out_dir": str(self.out_dir),
            "model_path": str(self.model_path) if self.model_path else None,
            "metrics": self.metrics,
            "seconds": self.seconds,
            "dtype_policy": self.dtype_policy,
        }


@dataclass
class _Splits:
    train: ImageSet
    val: ImageSet | None
    test: ImageSet | None


def _limit(images: ImageSet, n: int | None, seed: int) -> ImageSet:
    """A seeded random subset of n images (all classes represented in expectation)."""
    if n is None or n >= len(images):
        return images
    order = np.random.default_rng(seed).permutation(len(images))[:n]
    return images.subset(np.sort(order))


def prepare_splits(config: TrainConfig, dataset: Dataset) -> _Splits:
    train = _limit(dataset.splits["train"], config.train_limit, config.seed)
    val = dataset.splits.get("val")
    if config.validation is not None:
        train, val = split_train_val(train, config.validation, seed=config.seed)
    test = dataset.splits.get("test")
    if test is not None:
        test = _limit(test, config.test_limit, config.seed)
    return _Splits(train, val, test)


def input_shape_for(config: TrainConfig, train: ImageSet) -> tuple[int, int, int]:
    """The config's shape, else the data's own for CIFAR-style nets, else the net's default."""
    if config.input_shape is not None:
        return tuple(config.input_shape)  # type: ignore[return-value]
    spec = parse_architecture(config.architecture)
    if spec.family == "cifar" and train.image_shape is not None:
        return tuple(train.image_shape)  # type: ignore[return-value]
    return spec.default_input_shape


def _optimizer(config: TrainConfig, schedule: Any) -> keras.optimizers.Optimizer:
    opt = config.optimizer
    if config.backbone_lr_multiplier != 1.0:
        return discriminative_optimizer(
            opt.name,
            learning_rate=schedule,
            backbone_lr_multiplier=config.backbone_lr_multiplier,
            momentum=opt.momentum,
            nesterov=opt.nesterov,
            weight_decay=opt.weight_decay,
        )
    if opt.name == "sgd":
        return keras.optimizers.SGD(
            learning_rate=schedule, momentum=opt.momentum, nesterov=opt.nesterov
        )
    if opt.name == "adam":
        return keras.optimizers.Adam(learning_rate=schedule)
    return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=opt.weight_decay)


def _loss(config: TrainConfig, multi_label: bool) -> keras.losses.Loss:
    if multi_label:
        return keras.losses.BinaryCrossentropy(label_smoothing=config.label_smoothing)
    if config.label_smoothing or config.mixes_labels:  # one-hot (or mixed) labels
        return keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy()


def _compile(model: keras.Model, config: TrainConfig, optimizer: Any, multi_label: bool) -> None:
    metric = keras.metrics.BinaryAccuracy(name="accuracy") if multi_label else "accuracy"
    model.compile(
        optimizer=optimizer,
        loss=_loss(config, multi_label),
        metrics=[metric],
        jit_compile=jit_compile(config.xla),
    )


def transfer_weights(source: keras.Model, target: keras.Model) -> tuple[list[str], list[str]]:
    """Copy weights layer by layer where names and shapes match (fine-tuning).

    Returns:
        The names of the layers copied and of those skipped (absent or of another shape).
    """
    copied, skipped = [], []
    for layer in target.layers:
        if not layer.weights:
            continue
        try:
            src = source.get_layer(layer.name)
        except ValueError:
            skipped.append(layer.name)
            continue
        src_w, dst_w = src.get_weights(), layer.get_weights()
        if len(src_w) == len(dst_w) and all(
            a.shape == b.shape for a, b in zip(src_w, dst_w, strict=True)
        ):
            layer.set_weights(src_w)
            copied.append(layer.name)
        else:
            skipped.append(layer.name)
    return copied, skipped


def freeze_layers(model: keras.Model, prefixes: list[str]) -> int:
    """Freeze layers whose name starts with one of ``prefixes`` (``stem``, ``stage1``…)."""
    frozen = 0
    for layer in model.layers:
        if any(layer.name.startswith(p + "_") for p in prefixes):
            layer.trainable = False
            frozen += 1
    return frozen


def _label_transform(
    config: TrainConfig, n_classes: int, multi_label: bool, *, tf_data: bool
) -> Any:
    """One-hot labels for label smoothing and for validation beside mixup or CutMix (whose
    training batches come with soft labels), in the ops of the pipeline they are mapped over."""
    if multi_label or not (config.label_smoothing or config.mixes_labels):
        return None
    if not tf_data:
        eye = np.eye(n_classes, dtype=np.float32)
        return lambda x, y: (x, eye[y])
    import tensorflow as tf

    return lambda x, y: (x, tf.one_hot(y, n_classes))


def _pipeline(
    images: ImageSet,
    config: TrainConfig,
    shape: tuple[int, int, int],
    *,
    training: bool,
    transform: Any,
    epochs: range | None = None,
) -> Any:
    ds = make_pipeline(
        images,
        batch_size=config.batch_size,
        training=training,
        image_shape=shape,
        augment=config.augment if training else "none",
        augment_params=config.augment_params,
        seed=config.seed,
        epochs=epochs,
    )
    if training and config.mixes_labels:
        return ds  # the pipeline's labels are soft already
    return ds.map(transform) if transform is not None else ds


def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    hooks: TrainHooks | None = None,
    dataset: Dataset | None = None,
    resume: bool = False,
    worker: WorkerRole | None = None,
) -> TrainResult:
    """Train ``config`` into ``out_dir``, checkpointing every epoch.

    With ``resume``, continue from the folder's latest checkpoint (model, optimizer state, epoch,
    history); the run still ends after ``config.epochs`` epochs with one history entry each.
    A cancel (``hooks.should_cancel``) stops within a batch and returns status ``cancelled``;
    the last complete epoch's checkpoint stays, so the run can be resumed.

    ``worker`` makes this process one of a multi-worker run (use
    :func:`core.training.multiworker.train_multiworker`, which builds it): its strategy
    replaces ``config.strategy``, and only the chief evaluates the final model.
    """
    started = time.perf_counter()
    hooks = hooks or TrainHooks()
    rundir = RunDir(Path(out_dir))
    rundir.root.mkdir(parents=True, exist_ok=True)
    state = rundir.read_state() if resume else None
    if resume and state is None:
        log.info("no checkpoint in %s: starting from scratch", rundir.root)
    keras.utils.set_random_seed(config.seed)

    dataset = dataset or load_dataset(config.data)
    multi_label = dataset.multi_label
    splits = prepare_splits(config, dataset)
    shape = input_shape_for(config, splits.train)
    policy = resolve_policy(config.precision)
    config_dump = config.model_dump(mode="json")
    write_json(rundir.config, config_dump)
    write_json(rundir.labels, {"class_names": dataset.class_names, "multi_label": multi_label})

    strategy = worker.strategy if worker is not None else make_strategy(config.strategy)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    n_train = len(splits.train)
    steps = config.steps_per_epoch(n_train)
    history: list[EpochRecord] = []
    with scope:
        if state is not None:
            model = keras.saving.load_model(
                rundir.checkpoints / state["checkpoint"],
                custom_objects={**CUSTOM_OBJECTS, **OPTIMIZERS},
                safe_mode=True,
            )
            history = [EpochRecord(**r) for r in state["history"]]
            # Dropout's seed generators: not in the .keras file (absent from older states).
            if "random_states" in state:
                restore_random_states(model, state["random_states"])
            # Same optimizer object (its step count and momenta restored), our loss and metrics.
            _compile(model, config, model.optimizer, multi_label)
            log.info("resuming after epoch %d of %d", state["epoch"], config.epochs)
        else:
            model = _new_model(config, shape, dataset, splits.train, steps)
        if worker is not None:
            fit_across_workers(model)
            if worker.sync_batch_norm:
                synchronize_batch_norm(model)

    transform = _label_transform(
        config, len(dataset.class_names), multi_label, tf_data=uses_tf_data(splits.train)
    )
    # One pass over the epochs still to run, each epoch's order and augmentation a function of
    # (seed, epoch): a resumed run sees the batches the uninterrupted one saw. fit keeps one
    # iterator across epochs because steps_per_epoch is given.
    remaining = range(len(history), config.epochs)
    train_ds = _pipeline(
        splits.train, config, shape, training=True, transform=transform, epochs=remaining
    )
    val_ds = (
        _pipeline(splits.val, config, shape, training=False, transform=transform)
        if splits.val is not None
        else None
    )
    if worker is not None:
        train_ds = shard_by_data(train_ds)
        val_ds = shard_by_data(val_ds) if val_ds is not None else None
    callback = RunCallback(
        rundir=rundir,
        hooks=hooks,
        history=history,
        config_dump=config_dump,
        epochs=config.epochs,
        batches_per_epoch=steps,
        n_train=n_train,
        batch_size=config.batch_size,
        val_data=val_ds,
        progress_every=config.progress_every,
        keep_epoch_checkpoints=config.keep_epoch_checkpoints,
    )
    callbacks: list[keras.callbacks.Callback] = [callback]
    if config.tensorboard and keras.backend.backend() == "tensorflow":
        callbacks.append(
            keras.callbacks.TensorBoard(log_dir=str(rundir.tensorboard), write_graph=False)
        )
    if len(history) < config.epochs:
        model.fit(
            train_ds,
            epochs=config.epochs,
            initial_epoch=len(history),
            steps_per_epoch=steps,
            callbacks=callbacks,
            verbose=0,
            shuffle=False,
        )

    result = TrainResult(
        status="cancelled" if callback.cancelled else "completed",
        epochs_completed=len(history),
        history=history,
        out_dir=rundir.root,
        dtype_policy=policy or "float32",
    )
    if not callback.cancelled:
        evaluate = worker is None or worker.chief
        _finish(model, rundir, result, splits, config, shape, dataset, evaluate=evaluate)
    result.seconds = time.perf_counter() - started
    return result


def build_training_model(
    config: TrainConfig,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    multi_label: bool = False,
    steps_per_epoch: int,
) -> keras.Model:
    """The compiled model a run of ``config`` trains: architecture, precision, optimizer, loss.

    Benchmarks use this too, so that what they time is what training runs.
    """
    wd = 0.0 if config.optimizer.name == "adamw" else config.optimizer.weight_decay
    model = build_model(
        config.spec,
        input_shape=input_shape,
        num_classes=num_classes,
        shortcut=config.shortcut,
        multi_label=multi_label,
        normalization=config.normalization,
        dtype_policy=resolve_policy(config.precision),
        weight_decay=wd,
        dropout=config.dropout,
    )
    schedule = make_schedule(config.schedule, steps_per_epoch=steps_per_epoch, epochs=config.epochs)
    _compile(model, config, _optimizer(config, schedule), multi_label)
    return model


def _new_model(
    config: TrainConfig,
    shape: tuple[int, int, int],
    dataset: Dataset,
    train_set: ImageSet,
    steps: int,
) -> keras.Model:
    model = build_training_model(
        config,
        input_shape=shape,
        num_classes=len(dataset.class_names),
        multi_label=dataset.multi_label,
        steps_per_epoch=steps,
    )
    if config.normalization in ("per_pixel_mean", "per_channel"):
        mean, std = pixel_statistics(
            train_set, mode=config.normalization, image_shape=shape, seed=config.seed
        )
        model.get_layer("preprocess").set_statistics(mean, std)
    if config.init_from:
        _start_from(model, config)
    if config.freeze:
        freeze_layers(model, config.freeze)
        # Keras fixes the trainable set at compile time: compile again after freezing.
        _compile(model, config, model.optimizer, dataset.multi_label)
    return model


def _start_from(model: keras.Model, config: TrainConfig) -> None:
    """Fine-tuning: the weights of ``config.init_from``, a .keras model or a published file."""
    from core.models.weights import init_from_weights, open_weights_file

    path = str(config.init_from)
    if open_weights_file(path).source != "model":
        init_from_weights(model, path, config.spec)
        return
    source = keras.saving.load_model(
        path, custom_objects=CUSTOM_OBJECTS, safe_mode=True, compile=False
    )
    copied, skipped = transfer_weights(source, model)
    log.info("fine-tuning: copied %d layers, skipped %s", len(copied), skipped)


def _finish(
    model: keras.Model,
    rundir: RunDir,
    result: TrainResult,
    splits: _Splits,
    config: TrainConfig,
    shape: tuple[int, int, int],
    dataset: Dataset,
    *,
    evaluate: bool = True,
) -> None:
    """Save the final model and evaluate it on the test split (else validation)."""
    from core.evaluation import evaluate_model

    tmp = rundir.model.with_name(".model.tmp.keras")
    model.save(tmp)
    tmp.replace(rundir.model)
    result.model_path = rundir.model
    target = splits.test if splits.test is not None else splits.val
    if target is None or not evaluate:
        return
    split = "test" if splits.test is not None else "val"
    ds = make_pipeline(
        target,
        batch_size=max(config.batch_size, 256),
        training=False,
        image_shape=shape,
        augment="none",
        seed=config.seed,
    )
    metrics = evaluate_model(
        model, ds, class_names=dataset.class_names, multi_label=dataset.multi_label
    )
    metrics["split"] = split
    result.metrics = metrics
    write_json(rundir.metrics, metrics)
