"""The report tests import their run factory as ``tests.core.reports.factory``."""

from __future__ import annotations

import sys
from pathlib import Path

# `pytest` run directly does not put the repository root on sys.path (see tests/service).
_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.fixtures.servers import postgres_server, postgres_url  # noqa: E402, F401
