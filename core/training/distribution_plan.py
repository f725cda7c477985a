"""The batch and learning-rate arithmetic of a multi-worker run, free of TensorFlow.

Written once here and used by :func:`core.training.multiworker.train_multiworker`, which
trains by it, and by callers that must state a run's plan before any worker starts (the
service records it with the run and refuses a batch the workers cannot share).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from core.training.config import TrainConfig

Scaling = Literal["fixed", "linear"]
SCALINGS: tuple[str, ...] = ("fixed", "linear")
# tf.distribute's auto-shard policy the trainer applies (core.training.distribution).
DATA_SHARDING = "DATA"


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
