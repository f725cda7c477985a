"""The API process gives TensorFlow all cores but one when it loads its first model."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from service.inference.cache import compute_threads

CHECK = textwrap.dedent(
    """
    import sys
    import tensorflow as tf
    from service.inference.cache import limit_compute_threads

    limit_compute_threads({configured})
    tf.constant(1.0) + 1.0  # TensorFlow starts here, with the pools as set
    limit_compute_threads(7)  # too late now: kept, not an error
    print(tf.config.threading.get_intra_op_parallelism_threads(),
          tf.config.threading.get_inter_op_parallelism_threads())
    """
)


def test_default_leaves_one_core_to_the_event_loop() -> None:
    usable = len(os.sched_getaffinity(0))
    assert compute_threads(None) == max(1, usable - 1)
    assert compute_threads(3) == 3


@pytest.mark.slow
def test_threads_are_set_before_tensorflow_starts_and_kept_after() -> None:
    for configured, want in (("None", compute_threads(None)), ("2", 2)):
        done = subprocess.run(
            [sys.executable, "-c", CHECK.format(configured=configured)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "KERAS_BACKEND": "tensorflow"},
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split() == [str(want), "1"]
