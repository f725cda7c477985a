"""Reproducibility bundles: one zip holding what it takes to repeat and check a run or experiment.

A run's bundle::

    README.txt          what is where, and how to repeat the run
    run.json            id, status, times, architecture, data
    config.json         the full validated training config (what the worker trained)
    environment.json    Python, TensorFlow, Keras, CUDA, device — as the worker recorded them,
                        else the API host's package versions, marked as such
    history.csv         one row per finished epoch
    metrics.json        the test metrics (per-class and confusion matrix included, if evaluated)
    figures/*.png|svg   training curves, and the confusion matrix when there is one
    references.json     the numbers to compare with: He et al. 2016's and the seed study's

An experiment's bundle has ``experiment.json`` (spec, cells, aggregate), Table 1 as Markdown,
CSV and JSON (beside He et al.'s and the seed study's numbers), ``references.json``, the
experiment's figures, and each run's bundle under ``runs/<label>-<id>/``.
"""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import platform
import sys
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

from core.reports.figures import FIGURES, FigureDataError, figure
from core.reports.references import references_document
from core.reports.runs import RunData
from core.reports.tables import table1
from core.training.hooks import EPOCH_METRICS

# Versions the API host can report without importing anything heavy.
PACKAGES = (
    "resnet-service",
    "tensorflow",
    "keras",
    "numpy",
    "jax",
    "pillow",
    "celery",
    "sqlalchemy",
    "fastapi",
)
_STAMP = (2000, 1, 1, 0, 0, 0)  # fixed member times: the same records give the same zip
RUN_FIGURES = ("curves", "confusion")


def api_environment() -> dict[str, Any]:
    """This process's Python, platform and package versions (``importlib.metadata``: no
    TensorFlow import). Marked ``source: api`` — the worker's own environment may differ."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "source": "api",
        "note": "The worker did not record its environment; these are the API host's package "
        "versions. CUDA and the device are unknown here.",
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "cuda": None,
        "device": None,
    }


def run_environment(run: RunData, fallback: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The environment a run recorded (``source: worker``), else ``fallback`` (the API's)."""
    recorded = run.get("environment")
    if recorded:
        return {"source": "worker", **recorded}
    return dict(fallback) if fallback is not None else api_environment()


def history_csv(epochs: Sequence[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", *EPOCH_METRICS])
    for e in epochs:
        writer.writerow(
            [e.get("epoch"), *("" if e.get(k) is None else e.get(k) for k in EPOCH_METRICS)]
        )
    return out.getvalue()


def run_bundle(run: RunData, *, environment: Mapping[str, Any] | None = None) -> bytes:
    """The zip of one run (see the module docstring)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        _write_run(zf, "", run, environment)
    return out.getvalue()


def experiment_bundle(
    experiment: Mapping[str, Any],
    runs: Sequence[RunData],
    *,
    environment: Mapping[str, Any] | None = None,
) -> bytes:
    """The zip of an experiment: its record, Table 1, figures, and every run's bundle.

    Args:
        experiment: JSON-ready: the experiment's public record (spec, cells, aggregate).
        runs: Its runs.
        environment: The fallback environment for runs that recorded none.
    """
    out = io.BytesIO()
    table = table1(runs)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        _add(zf, "experiment.json", _json(experiment))
        _add(zf, "table1.md", table.to_markdown())
        _add(zf, "table1.csv", table.to_csv())
        _add(zf, "table1.json", _json(table.to_json()))
        _add(zf, "table1_mean_std.md", table1(runs, aggregate=True).to_markdown())
        _add(zf, "references.json", _json(references_document()))
        drawn = _figures(zf, "figures/", runs, FIGURES)
        for run in runs:
            folder = f"runs/{_slug(run.get('label', run['architecture']))}-{run['id'][:8]}/"
            _write_run(zf, folder, run, environment)
        _add(
            zf,
            "README.txt",
            f"Experiment {experiment.get('id')} ({experiment.get('name')}): {len(runs)} runs.\n\n"
            "experiment.json   the spec, each cell's run and status, mean ± std over seeds\n"
            "table1.*          Table 1 (model, accuracy, precision, recall, F1, error, paper's\n"
            "                  error, training time, the seed study's numbers and flags) as\n"
            "                  Markdown, CSV and JSON\n"
            "references.json   He et al. 2016's numbers and the seed study's, each row of the\n"
            "                  study flagged where it contradicts itself or the paper\n"
            f"figures/          {', '.join(drawn) or 'none (no finished epochs yet)'}\n"
            "runs/<run>/       each run's bundle (config, environment, history, metrics)\n",
        )
    return out.getvalue()


def _write_run(
    zf: zipfile.ZipFile, prefix: str, run: RunData, environment: Mapping[str, Any] | None
) -> None:
    info = {
        k: run.get(k)
        for k in (
            "id",
            "architecture",
            "dataset",
            "status",
            "seed",
            "epochs_planned",
            "train_seconds",
            "experiment_id",
            "created_at",
            "started_at",
            "finished_at",
        )
    }
    metrics = dict(run.get("metrics") or {})
    if run.get("confusion_matrix"):
        metrics["confusion_matrix"] = run.get("confusion_matrix")
        metrics["class_names"] = run.get("class_names")
    _add(zf, prefix + "run.json", _json(info))
    _add(zf, prefix + "config.json", _json(run.get("config") or {}))
    _add(zf, prefix + "environment.json", _json(run_environment(run, environment)))
    _add(zf, prefix + "history.csv", history_csv(run.get("epochs") or []))
    _add(zf, prefix + "metrics.json", _json(metrics))
    _add(zf, prefix + "references.json", _json(references_document()))
    drawn = _figures(zf, prefix + "figures/", [run], {k: FIGURES[k] for k in RUN_FIGURES})
    _add(
        zf,
        prefix + "README.txt",
        f"Run {run['id']}: {run['architecture']} on {run.get('dataset')} "
        f"({run.get('status')}).\n\n"
        "config.json       the full training config; repeat the run with\n"
        "                  POST /v1/runs (its fields), or `resnet train` with the same values\n"
        "environment.json  Python, TensorFlow, Keras, CUDA and device (see its 'source')\n"
        "history.csv       one row per finished epoch\n"
        "metrics.json      test metrics\n"
        "references.json   He et al. 2016's numbers and the seed study's, flagged\n"
        f"figures/          {', '.join(drawn) or 'none (no finished epochs yet)'}\n",
    )


def _figures(
    zf: zipfile.ZipFile, prefix: str, runs: Sequence[RunData], which: Mapping[str, Any]
) -> list[str]:
    drawn = []
    for name in which:
        for fmt in ("png", "svg"):
            try:
                data = figure(name, runs, fmt=fmt)
            except FigureDataError:
                break
            _add(zf, f"{prefix}{name}.{fmt}", data)
            drawn.append(f"{name}.{fmt}")
    return drawn


def _add(zf: zipfile.ZipFile, name: str, data: str | bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_STAMP)
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str) + "\n"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:40]
