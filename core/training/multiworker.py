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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.data import Dataset
from core.training.config import TrainConfig
from core.training.distribution import WorkerRole
from core.training.distribution_plan import (
    DATA_SHARDING,
    SCALINGS,
    DistributionPlan,
    Scaling,
    plan_distribution,
)
from core.training.hooks import TrainHooks
from core.training.rundir import RunDir, write_json

__all__ = [
    "DATA_SHARDING",
    "DISTRIBUTION_FILE",
    "SCALINGS",
    "Cluster",
    "DistributionPlan",
    "Scaling",
    "plan_distribution",
    "train_multiworker",
]

DISTRIBUTION_FILE = "distribution.json"


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
    dataset: Dataset | Callable[[], Dataset] | None = None,
    resume: bool = False,
) -> Any:
    """Train ``config`` as worker ``cluster.index`` of ``cluster``; returns a ``TrainResult``.

    Call it in every worker process, before any other TensorFlow work there. The chief trains
    into ``out_dir``; another worker into ``scratch_dir`` (kept) or a temporary folder
    (deleted on return), never into ``out_dir``. Hooks are called on every worker: a caller
    that records epochs should pass them to the chief only. ``dataset`` may be a function that
    loads it: it is called once the strategy is made, since loading may start TensorFlow.

    With ``resume``, every worker continues from the chief's latest checkpoint in
    ``out_dir``: the chief reads it there, the others copy it into their scratch folder first
    (so ``out_dir`` must be readable by every worker: shared storage). The copy is taken before
    the strategy is made, and the chief cannot write another checkpoint before every worker
    has joined, so all start from the same one.

    Cancelling one worker alone is not supported: the others would wait at the next
    all-reduce. A caller stops every worker of the run.
    """
    from core.training.trainer import train

    scratch = Path(scratch_dir) if scratch_dir is not None else None
    folder = None
    if not cluster.chief:
        folder = scratch or Path(tempfile.mkdtemp(prefix=f"resnet-worker{cluster.index}-"))
        if resume:
            copy_latest_checkpoint(RunDir(Path(out_dir)), RunDir(folder))
    strategy = make_multiworker_strategy(cluster)
    trained, plan = plan_distribution(
        config,
        workers=list(cluster.workers),
        num_replicas=int(strategy.num_replicas_in_sync),
        scaling=scaling,
        sync_batch_norm=sync_batch_norm,
    )
    role = WorkerRole(strategy=strategy, chief=cluster.chief, sync_batch_norm=sync_batch_norm)
    if callable(dataset):
        dataset = dataset()
    if folder is None:
        write_json(RunDir(Path(out_dir)).root / DISTRIBUTION_FILE, plan.to_dict())
        return train(trained, out_dir, hooks=hooks, dataset=dataset, worker=role, resume=resume)
    try:
        return train(trained, folder, hooks=hooks, dataset=dataset, worker=role, resume=resume)
    finally:
        if scratch is None:
            shutil.rmtree(folder, ignore_errors=True)


def copy_latest_checkpoint(source: RunDir, target: RunDir) -> int:
    """Make ``target``'s latest checkpoint ``source``'s: its state file and the file it names.

    Whatever checkpoints ``target`` held are removed first (a scratch folder kept from an
    earlier attempt must not resume from its own, older state). Returns the epoch copied, 0
    when ``source`` has no checkpoint yet (then ``target`` starts from scratch, as the chief).
    """
    shutil.rmtree(target.checkpoints, ignore_errors=True)
    state = source.read_state()
    if state is None:
        return 0
    target.checkpoints.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source.checkpoints / state["checkpoint"], target.checkpoints)
    write_json(target.state, state)
    return int(state["epoch"])
