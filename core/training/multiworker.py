"""One run across several processes: tf.distribute's MultiWorkerMirroredStrategy.

Every worker runs :func:`train_multiworker` with the same config and cluster, each with its own
index; index 0 is the chief. TensorFlow's own conventions, written down once here:

- **Global batch.** ``config.batch_size`` is the global batch (``scaling="fixed"``): the
  pipeline batches by it and tf.distribute splits every batch evenly over the replicas, so the
  run computes what one process with that batch computes (batch statistics synchronised too,
  see :func:`core.training.distribution.synchronize_batch_norm`). With ``scaling="linear"``
  the config's batch and rate are one replica's recipe: the global batch is N times the
  batch and the learning rate N times the rate (Goyal et al. 2017's linear scaling rule).
- **Data sharding.** DATA: each worker runs the whole seeded pipeline and keeps its replicas'
  share of each global batch (:func:`core.training.distribution.shard_by_data`).
- **Who writes.** All workers run the same steps (saving and validating are collective or
  must stay in step), but only the chief writes into the run folder; the others write into a
  scratch folder, deleted afterwards unless the caller named it, as TensorFlow's multi-worker
  guide recommends.

What was decided is written to the run folder as ``distribution.json`` (the chief's), and the
config actually trained (global batch, scaled rates) as ``config.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from core.data import Dataset
from core.training.config import TrainConfig
from core.training.distribution import WorkerRole
from core.training.hooks import TrainHooks
from core.training.rundir import RunDir, write_json

Scaling = Literal["fixed", "linear"]
SCALINGS: tuple[str, ...] = ("fixed", "linear")
DISTRIBUTION_FILE = "distribution.json"
# tf.distribute's auto-shard policy the trainer applies (core.training.distribution).
DATA_SHARDING = "DATA"


@dataclass(frozen=True)
class Cluster:
    """Every worker's ``host:port`` in index order, and which one this process is."""

    workers: tuple[str, ...]
    index: int

    def __post_init__(self) -> None:
        if not self.workers:
            raise ValueError("a cluster needs at least one worker")
        for address in self.workers:
            host, sep, port = address.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"a worker address must be host:port; got {address!r}")
        if len(set(self.workers)) != len(self.workers):
            raise ValueError(f"worker addresses must differ; got {list(self.workers)}")
        if not 0 <= self.index < len(self.workers):
            raise ValueError(
                f"index {self.index} is not a worker of a {len(self.workers)}-worker cluster"
            )

    @property
    def chief(self) -> bool:
        return self.index == 0

    def tf_config(self) -> dict[str, Any]:
        """The ``TF_CONFIG`` this process needs (every worker is a ``worker``, 0 the chief)."""
        return {
            "cluster": {"worker": list(self.workers)},
            "task": {"type": "worker", "index": self.index},
        }


@dataclass(frozen=True)
class DistributionPlan:
    """The batch and learning-rate arithmetic of a multi-worker run, as recorded."""

    workers: list[str]
    num_replicas: int
    scaling: str
    global_batch_size: int
    per_replica_batch_size: int
    learning_rate_scale: float
    data_sharding: str
    sync_batch_norm: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_distribution(
    config: TrainConfig,
    *,
    workers: list[str],
    num_replicas: int,
    scaling: Scaling = "fixed",
    sync_batch_norm: bool = True,
) -> tuple[TrainConfig, DistributionPlan]:
    """The config to train over ``num_replicas`` replicas, and the plan that led to it.

    Raises:
        ValueError: an unknown scaling, or a global batch the replicas cannot share evenly
            (uneven shares would weigh some images more than one process would).
    """
    if scaling not in SCALINGS:
        raise ValueError(f"Unknown scaling: {scaling!r}. Expected one of {', '.join(SCALINGS)}")
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be positive; got {num_replicas}")
    scale = num_replicas if scaling == "linear" else 1
    global_batch = config.batch_size * scale
    if global_batch % num_replicas:
        raise ValueError(
            f"the global batch of {global_batch} does not split evenly over {num_replicas} "
            "replicas; choose a batch_size that is a multiple of the number of replicas"
        )
    schedule = config.schedule.model_copy(
        update={
            "base_lr": config.schedule.base_lr * scale,
            "warmup_lr": config.schedule.warmup_lr * scale,
        }
    )
    # Re-validated: a scaled rate must still be within the config's bounds.
    trained = TrainConfig.model_validate(
        {
            **config.model_dump(),
            "batch_size": global_batch,
            "schedule": schedule.model_dump(),
            "strategy": "multiworker",
        }
    )
    plan = DistributionPlan(
        workers=list(workers),
        num_replicas=num_replicas,
        scaling=scaling,
        global_batch_size=global_batch,
        per_replica_batch_size=global_batch // num_replicas,
        learning_rate_scale=float(scale),
        data_sharding=DATA_SHARDING,
        sync_batch_norm=sync_batch_norm,
    )
    return trained, plan


def make_multiworker_strategy(cluster: Cluster) -> Any:
    """Set ``TF_CONFIG`` for ``cluster`` and make the strategy; blocks until all workers join.

    Must come before anything else starts TensorFlow's runtime in this process: collective
    ops are configured once, at start-up.
    """
    import tensorflow as tf

    os.environ["TF_CONFIG"] = json.dumps(cluster.tf_config())
    return tf.distribute.MultiWorkerMirroredStrategy()


def train_multiworker(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    cluster: Cluster,
    scaling: Scaling = "fixed",
    sync_batch_norm: bool = True,
    scratch_dir: str | Path | None = None,
    hooks: TrainHooks | None = None,
    dataset: Dataset | None = None,
) -> Any:
    """Train ``config`` as worker ``cluster.index`` of ``cluster``; returns a ``TrainResult``.

    Call it in every worker process, before any other TensorFlow work there. The chief trains
    into ``out_dir``; another worker into ``scratch_dir`` (kept) or a temporary folder
    (deleted on return), never into ``out_dir``. Hooks are called on every worker: a caller
    that records epochs should pass them to the chief only.

    Not yet: resuming (every worker would need the chief's checkpoint) and cancelling one
    worker alone (the others would wait at the next all-reduce).
    """
    from core.training.trainer import train

    strategy = make_multiworker_strategy(cluster)
    trained, plan = plan_distribution(
        config,
        workers=list(cluster.workers),
        num_replicas=int(strategy.num_replicas_in_sync),
        scaling=scaling,
        sync_batch_norm=sync_batch_norm,
    )
    role = WorkerRole(strategy=strategy, chief=cluster.chief, sync_batch_norm=sync_batch_norm)
    if cluster.chief:
        write_json(RunDir(Path(out_dir)).root / DISTRIBUTION_FILE, plan.to_dict())
        return train(trained, out_dir, hooks=hooks, dataset=dataset, worker=role)
    scratch = Path(scratch_dir) if scratch_dir is not None else None
    folder = scratch or Path(tempfile.mkdtemp(prefix=f"resnet-worker{cluster.index}-"))
    try:
        return train(trained, folder, hooks=hooks, dataset=dataset, worker=role)
    finally:
        if scratch is None:
            shutil.rmtree(folder, ignore_errors=True)
