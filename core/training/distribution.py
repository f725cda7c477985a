"""What the trainer needs to know when it is one worker among several (see multiworker.py).

Kept apart from :mod:`core.training.multiworker`, which calls the trainer, so that the trainer
can take this without importing its caller.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import keras
from keras import tree


@dataclass(frozen=True)
class WorkerRole:
    """One process's part in a multi-worker run.

    Attributes:
        strategy: the ``tf.distribute.MultiWorkerMirroredStrategy`` made before TensorFlow
            started (collective ops must be configured first).
        chief: whether this worker writes the run (checkpoints, history, model, metrics);
            the others train into a scratch folder and evaluate nothing.
        sync_batch_norm: batch statistics over the global batch (all-reduced), not each
            replica's share: the run then computes what one process with the same global
            batch computes.
    """

    strategy: Any
    chief: bool
    sync_batch_norm: bool = True


def synchronize_batch_norm(model: keras.Model) -> int:
    """Make every batch normalisation compute its statistics across all replicas.

    Set on the live layers, not in the saved config: it is how a run trains, not what the
    model is (and Keras refuses ``synchronized`` on backends other than TensorFlow, where a
    saved model must still load). Returns the number of layers changed.
    """
    changed = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
            changed += 1
    return changed


def shard_by_data(dataset: Any) -> Any:
    """``dataset`` with tf.distribute's DATA auto-sharding.

    Every worker runs the whole (seeded, deterministic) pipeline and keeps its replicas'
    share of each global batch. AUTO would try FILE sharding first for file-based sources
    (TFRecords), which gives each worker other files, and so other batches than one process
    would see, and fails with fewer files than workers.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def fit_across_workers(model: keras.Model) -> None:
    """Let ``fit`` and ``evaluate`` run under MultiWorkerMirroredStrategy (Keras 3).

    Keras 3 does not yet support the multi-worker strategy in ``fit`` (keras-team/keras#20585,
    tensorflow/tensorflow#72388) in two places, each worked around here on this model alone:

    - before the first step it builds the model from one batch, which it takes out of the
      distributed iterator with ``strategy.reduce("MEAN", (x, y), axis=None)``; with one device
      per worker the strategy cannot reduce a tuple. Only the batch's shapes matter there, so
      each leaf's local value is taken instead (no collective; every worker builds the same).
    - after each step it averages every log value (loss, accuracy) over the replicas with
      ``strategy.reduce("MEAN", value, axis=0)``, which fails on a scalar. The steps here
      return each scalar as a vector of one, whose mean over replicas and axis 0 is the same
      number the one-process run logs.
    """
    strategy = model.distribute_strategy

    def local(value: Any) -> Any:
        if isinstance(value, _distributed_values_type()):
            return strategy.experimental_local_results(value)[0]
        return value

    def maybe_symbolic_build(
        self: keras.Model, iterator: Any = None, data_batch: Any = None
    ) -> None:
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tree.map_structure(local, next(it))
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def as_vectors(step: Any) -> Any:
        def vector_step(data: Any) -> Any:
            return tree.map_structure(
                lambda v: keras.ops.expand_dims(v, 0) if len(v.shape) == 0 else v, step(data)
            )

        return vector_step

    model._maybe_symbolic_build = types.MethodType(maybe_symbolic_build, model)
    model.train_step = as_vectors(model.train_step)
    model.test_step = as_vectors(model.test_step)


def _distributed_values_type() -> type:
    import tensorflow as tf

    return tf.distribute.DistributedValues
