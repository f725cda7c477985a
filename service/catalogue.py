"""The architecture catalogue for ``GET /v1/architectures``, without TensorFlow.

Names, families, depths (:mod:`core.models.specs`) and the paper's errors
(:mod:`core.reports.references`) are plain data, put together by
:func:`core.catalogue.static_entry`.
Parameter and FLOP counts need the Keras models built, which the API process never does: the
catalogue's ship with the package (:func:`core.catalogue.shipped_counts`), and the cache file
:func:`core.catalogue.catalogue` writes (the same file the CLI fills) overrides them. The file is
re-read only when it changes.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from core.catalogue import cache_path, shipped_counts, static_entry
from core.models.specs import CATALOGUE_NAMES, parse_architecture
from service.schemas import ArchitecturePublic

log = logging.getLogger(__name__)


class Catalogue:
    """The catalogue entries, with counts from the cache file when it has them."""

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.path = cache_path(cache_dir)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._counts: dict[str, dict[str, Any]] = {}
        self._static = [static_entry(parse_architecture(n)) for n in CATALOGUE_NAMES]
        self._shipped = shipped_counts()

    def entries(self) -> tuple[list[ArchitecturePublic], bool]:
        """Every catalogue architecture, and whether all of them have their counts."""
        counts = {**self._shipped, **self._read_counts()}
        items = []
        for entry in self._static:
            cached = counts.get(entry["name"], {})
            items.append(
                ArchitecturePublic(**entry, params=cached.get("params"), flops=cached.get("flops"))
            )
        return items, all(i.params is not None for i in items)

    def _read_counts(self) -> dict[str, dict[str, Any]]:
        try:
            st = self.path.stat()
        except OSError:
            return {}
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._counts = _load(self.path)
                self._stamp = stamp
            return self._counts


def _load(path: Path) -> dict[str, dict[str, Any]]:
    try:
        entries = json.loads(path.read_text(encoding="utf-8")).get("entries", {})
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("ignoring unreadable catalogue cache %s: %s", path, exc)
        return {}
    if not isinstance(entries, dict):
        return {}
    return {
        name: {k: e.get(k) if isinstance(e.get(k), int) else None for k in ("params", "flops")}
        for name, e in entries.items()
        if isinstance(e, dict)
    }
