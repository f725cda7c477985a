"""The architecture catalogue: every named net with its size, cost and the paper's error.

Counting parameters and FLOPs means building the model (ResNet-1202 takes seconds), so entries
are computed on first use and kept in a JSON file per Keras and core version::

    <cache_dir>/catalogue-<keras version>-<core version>.json

Keras is imported only when an entry is missing, so a warm catalogue loads in milliseconds.

The counts of every name in ``CATALOGUE_NAMES`` also ship with the package
(``core/models/catalogue_counts.json``, written by ``python scripts/catalogue_counts.py`` and
checked against freshly built models by ``tests/core/models/test_catalogue_counts.py``), so a new
install lists them without building anything.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import core
from core.models.specs import CATALOGUE_NAMES, ArchSpec, parse_architecture
from core.reports.references import CIFAR10, IMAGENET_TOP1, IMAGENET_TOP5

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("~/.cache/resnet-service")
# The dataset each family is built for: classes of its head.
NUM_CLASSES = {"cifar": 10, "imagenet": 1000}

Entry = dict[str, Any]
OnEntry = Callable[[str, int, int], None]


def cache_path(cache_dir: str | Path | None = None) -> Path:
    """The catalogue file for the installed Keras and this version of core."""
    root = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
    return root / f"catalogue-{metadata.version('keras')}-{core.__version__}.json"


def catalogue(
    *,
    names: Iterable[str] | None = None,
    refresh: bool = False,
    cache_dir: str | Path | None = None,
    on_entry: OnEntry | None = None,
) -> list[Entry]:
    """Describe architectures, computing (and caching) those not yet in the cache.

    Args:
        names: architecture names (any that :func:`core.models.parse_architecture` accepts);
            default: every name in ``CATALOGUE_NAMES``.
        refresh: recompute the requested entries even when cached.
        cache_dir: folder of the cache file; default ``~/.cache/resnet-service``.
        on_entry: called as ``on_entry(name, done, total)`` before each entry is computed, for
            progress displays; not called for cached entries.

    Returns:
        One dict per name, in the order asked: ``name``, ``family``, ``kind``, ``block``, ``depth``,
        ``input_shape``, ``num_classes`` (the head it was counted with: 10 for CIFAR nets,
        1000 for ImageNet nets), ``params`` (trainable), ``flops`` (multiply-adds per image),
        ``paper_error`` (%, or None), ``paper_error_metric`` and ``paper_top5_error``.

    Raises:
        ValueError: an unknown architecture name.
    """
    specs = [parse_architecture(n) for n in (CATALOGUE_NAMES if names is None else names)]
    path = cache_path(cache_dir)
    cached = {} if refresh else {**_shipped_entries(specs), **_read_cache(path)}
    missing = list({s.name: s for s in specs if s.name not in cached}.values())
    if missing:
        computed: dict[str, Entry] = {}
        for i, spec in enumerate(missing):
            if on_entry is not None:
                on_entry(spec.name, i, len(missing))
            computed[spec.name] = describe(spec)
        # Re-read before writing: another process may have added entries meanwhile.
        _write_cache(path, {**_read_cache(path), **computed})
        cached = {**cached, **computed}
    return [cached[s.name] for s in specs]


def describe(spec: ArchSpec) -> Entry:
    """Build one architecture at its family's default size and count its parameters and FLOPs."""
    import keras

    from core.models import build_model, count_flops, count_trainable_params

    entry = static_entry(spec)
    model = build_model(
        spec, input_shape=spec.default_input_shape, num_classes=entry["num_classes"]
    )
    entry["params"] = count_trainable_params(model)
    entry["flops"] = count_flops(model)
    del model
    keras.backend.clear_session()  # free the graph: the catalogue builds dozens of nets
    return {key: entry[key] for key in _ORDER}


_ORDER = (
    "name", "family", "kind", "block", "depth", "input_shape", "num_classes", "params", "flops",
    "paper_error", "paper_error_metric", "paper_top5_error",
)  # fmt: skip


def static_entry(spec: ArchSpec) -> Entry:
    """An entry without its counts: what the spec and the paper say, no model built.

    The API's catalogue serves these (it never builds a model) and adds the counts from the
    cache file.
    """
    return {
        "name": spec.name,
        "family": spec.family,
        "kind": spec.kind,
        "block": spec.block,
        "depth": spec.depth,
        "input_shape": list(spec.default_input_shape),
        "num_classes": NUM_CLASSES[spec.family],
        **_paper(spec),
    }


def _paper(spec: ArchSpec) -> Entry:
    """The paper's numbers for ``spec``, from :mod:`core.reports.references` (their one home)."""
    if spec.name in CIFAR10:
        return {
            "paper_error": CIFAR10[spec.name].value,
            "paper_error_metric": "CIFAR-10 test error",
            "paper_top5_error": None,
        }
    if spec.name in IMAGENET_TOP1:
        return {
            "paper_error": IMAGENET_TOP1[spec.name].value,
            "paper_error_metric": "ImageNet top-1 val error (10-crop)",
            "paper_top5_error": IMAGENET_TOP5[spec.name].value,
        }
    return {"paper_error": None, "paper_error_metric": None, "paper_top5_error": None}


SHIPPED_COUNTS = Path(__file__).resolve().parent / "models" / "catalogue_counts.json"


def shipped_counts() -> dict[str, dict[str, int]]:
    """``{name: {"params": …, "flops": …}}`` for the catalogue, as shipped with the package."""
    try:
        data = json.loads(SHIPPED_COUNTS.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("no shipped catalogue counts (%s): they will be computed", exc)
        return {}
    return {
        name: {"params": int(c["params"]), "flops": int(c["flops"])}
        for name, c in data.get("counts", {}).items()
    }


def _shipped_entries(specs: Iterable[ArchSpec]) -> dict[str, Entry]:
    counts = shipped_counts()
    return {
        s.name: {key: {**static_entry(s), **counts[s.name]}[key] for key in _ORDER}
        for s in specs
        if s.name in counts
    }


def _read_cache(path: Path) -> dict[str, Entry]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable catalogue cache %s: %s", path, exc)
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        log.warning("ignoring malformed catalogue cache %s", path)
        return {}
    # An entry written by an older layout of this file is recomputed rather than trusted.
    return {k: v for k, v in entries.items() if isinstance(v, dict) and set(_ORDER) <= v.keys()}


def _write_cache(path: Path, entries: dict[str, Entry]) -> None:
    """Write atomically, so a concurrent reader sees the old file or the new one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"entries": entries}, f, indent=1)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:  # a read-only home must not break the catalogue
        log.warning("could not write the catalogue cache %s: %s", path, exc)
