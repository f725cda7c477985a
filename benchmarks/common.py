"""What the CIFAR-10 benchmarks share: the archive extracted once into a cache, and the record
written as JSON (after every run, so a stopped benchmark keeps what it measured)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any


def extract_cifar_jpeg(archive: Path, cache: Path) -> Path:
    """``cache/cifar10-jpeg`` (``train/``, ``test/``), extracted from ``archive`` if missing."""
    root = cache / "cifar10-jpeg"
    if not ((root / "train").is_dir() and (root / "test").is_dir()):
        cache.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(cache, filter="data")
    return root


def save_record(path: str | None, record: dict[str, Any], *, indent: int = 1) -> None:
    """Write ``record`` to ``path`` as JSON (nothing when ``path`` is None)."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(record, indent=indent, default=str) + "\n")
