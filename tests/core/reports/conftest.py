"""The report tests import their run factory as ``tests.core.reports.factory``."""

from __future__ import annotations

from tests.fixtures.servers import postgres_server, postgres_url  # noqa: F401
