"""The cluster description, TF_CONFIG and the batch/learning-rate arithmetic of a multi-worker
run (no TensorFlow: the two-process training is tests/core/training/test_multiworker.py)."""

from __future__ import annotations

import pytest

from core.training import make_config
from core.training.multiworker import Cluster, plan_distribution

WORKERS = ["10.0.0.1:7000", "10.0.0.2:7000"]


def config(**overrides):
    return make_config(
        "resnet8",
        "synthetic:64:16x16x3:2",
        batch_size=16,
        schedule={"kind": "step", "base_lr": 0.1, "warmup_lr": 0.01},
        **overrides,
    )


def test_tf_config_names_every_worker_and_this_one():
    cluster = Cluster(tuple(WORKERS), 1)
    assert cluster.tf_config() == {
        "cluster": {"worker": WORKERS},
        "task": {"type": "worker", "index": 1},
    }
    assert not cluster.chief and Cluster(tuple(WORKERS), 0).chief


@pytest.mark.parametrize(
    ("workers", "index", "message"),
    [
        ((), 0, "at least one worker"),
        (("10.0.0.1",), 0, "host:port"),
        (("10.0.0.1:0",), 0, "host:port"),
        (("10.0.0.1:http",), 0, "host:port"),
        (("a:1", "a:1"), 0, "must differ"),
        (("a:1", "b:1"), 2, "not a worker"),
        (("a:1", "b:1"), -1, "not a worker"),
    ],
)
def test_a_bad_cluster_is_refused_with_its_fault(workers, index, message):
    with pytest.raises(ValueError, match=message):
        Cluster(workers, index)


def test_fixed_scaling_keeps_the_global_batch_and_rate():
    trained, plan = plan_distribution(config(), workers=WORKERS, num_replicas=2)
    assert trained.batch_size == 16 and trained.schedule.base_lr == 0.1
    assert trained.strategy == "multiworker"
    assert plan.global_batch_size == 16 and plan.per_replica_batch_size == 8
    assert plan.learning_rate_scale == 1.0 and plan.data_sharding == "DATA"


def test_linear_scaling_grows_batch_and_rates_with_the_replicas():
    trained, plan = plan_distribution(config(), workers=WORKERS, num_replicas=2, scaling="linear")
    assert trained.batch_size == 32 and plan.per_replica_batch_size == 16
    assert trained.schedule.base_lr == pytest.approx(0.2)
    assert trained.schedule.warmup_lr == pytest.approx(0.02)
    assert plan.learning_rate_scale == 2.0 and plan.scaling == "linear"


def test_a_global_batch_the_replicas_cannot_share_is_refused():
    with pytest.raises(ValueError, match="does not split evenly over 3 replicas"):
        plan_distribution(config(), workers=[*WORKERS, "10.0.0.3:7000"], num_replicas=3)


def test_a_scaled_rate_out_of_bounds_is_refused():
    big = make_config("resnet8", "synthetic:64:16x16x3:2", batch_size=16, schedule={"base_lr": 6.0})
    with pytest.raises(ValueError, match="base_lr"):
        plan_distribution(big, workers=WORKERS, num_replicas=2, scaling="linear")


def test_unknown_scaling_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="fixed, linear"):
        plan_distribution(config(), workers=WORKERS, num_replicas=2, scaling="sqrt")  # type: ignore[arg-type]
