"""Shared test setup: quiet TensorFlow, TensorFlow as the Keras backend, and the throwaway
PostgreSQL and Redis servers (started once per test session from the binaries on the machine).
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# `pytest` run directly (rather than `python -m pytest`) does not put the repository root on
# sys.path, and `tests` is a namespace package: make `tests.fixtures` importable either way.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.fixtures.servers import postgres_server, postgres_url, redis_server  # noqa: E402

__all__ = ["postgres_server", "postgres_url", "redis_server"]
