"""Model versions exported for download: made once per (version, format), then served from disk.

``GET /v1/models/{name}/versions/{v}/export?format=…`` answers a zip of the TF Serving layout
(:mod:`core.inference.packaging`): ``NAME/V/`` holding the SavedModel, ``model.onnx`` or
``model.keras``, beside ``NAME/labels.json`` and ``NAME/export.json``. The zip is cached beside
the version's model file, in ``<run folder>/exports/NAME/vV-FORMAT.zip`` (for a model on shared
storage, in the run's ``<state_dir>/model-cache/<run id>/``): one of the run's folders, so its
bytes count against the owner's quota and it is freed with the run. Deleting the version
removes its archives at once.

Exporting loads TensorFlow and the model and takes seconds to minutes, so it runs in one thread
of its own (exports queue behind each other; the event loop and the request thread pool stay
free). A request that finds the archive on disk is served from it without that thread. An
archive is written to a temporary name and renamed into place, so a reader never sees half of
it. Nothing here imports TensorFlow until an export runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.inference.formats import ExportFormat
from jobs.settings import Settings
from jobs.storage import is_url
from service.errors import ApiError
from service.inference.cache import ModelUnavailable, local_model_file, model_cache_folder

log = logging.getLogger(__name__)

EXPORTS_DIR = "exports"


@dataclass(frozen=True)
class ExportJob:
    """One version's model in one format, as the records name it."""

    name: str
    version: int
    run_id: str
    model_uri: str
    fmt: ExportFormat

    @property
    def label(self) -> str:
        return f"{self.name} version {self.version}"

    @property
    def filename(self) -> str:
        """The download's name: ``tiny-v3-onnx.zip``."""
        return f"{self.name}-v{self.version}-{self.fmt.value}.zip"


def exports_folder(settings: Settings, run_id: str, model_uri: str) -> Path:
    """Where a run's export archives are kept: beside its model file on this host."""
    uri = model_uri.removeprefix("file://")
    if is_url(uri):
        return model_cache_folder(settings, run_id) / EXPORTS_DIR
    return Path(uri).resolve().parent / EXPORTS_DIR


def archive_path(settings: Settings, job: ExportJob) -> Path:
    folder = exports_folder(settings, job.run_id, job.model_uri) / job.name
    return folder / f"v{job.version}-{job.fmt.value}.zip"


def forget_exports(settings: Settings, *, name: str, version: int, run_id: str, uri: str) -> None:
    """Remove a version's archives (it was deleted: its number is never served again)."""
    folder = exports_folder(settings, run_id, uri) / name
    for fmt in ExportFormat:
        (folder / f"v{version}-{fmt.value}.zip").unlink(missing_ok=True)


class Exporter:
    """The app's exports (``app.state.exporter``): one thread makes them, the disk keeps them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="export")

    async def archive(self, job: ExportJob) -> Path:
        """The archive of ``job``, from the cache or exported now (in the export thread).

        Raises:
            ApiError: 409 when the version has no model file, the model is over
                ``export_max_bytes``, or it cannot be exported to the format; 503 when this
                installation lacks the format's converter or runtime.
        """
        path = archive_path(self.settings, job)
        if path.is_file():
            return path
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._export, job, path)

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)

    def _export(self, job: ExportJob, path: Path) -> Path:
        """Runs in the export thread; the first export imports TensorFlow."""
        if path.is_file():  # made while this request waited behind it
            return path
        limit = self.settings.export_max_bytes
        try:
            model = local_model_file(self.settings, job.run_id, job.model_uri)
        except ModelUnavailable as exc:
            raise _no_model(job, str(exc)) from None
        if not model.is_file():
            raise _no_model(job, f"model file not found: {model}")
        size = model.stat().st_size
        if size > limit:
            raise _too_large(job, "model file", size, limit)
        # Everything above refuses without TensorFlow; exporting loads it.
        from core.inference import ExportError, ModelLoadError, export_run_model, zip_folder
        from core.inference.export import ExportUnavailable

        path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=".export-", dir=path.parent) as tmp:
            try:
                export_run_model(model, job.fmt, Path(tmp) / job.name, version=job.version)
            except ModelLoadError as exc:
                raise _no_model(job, str(exc)) from None
            except ExportUnavailable as exc:
                raise ApiError(503, f"Cannot export {job.label}: {exc}") from None
            except ExportError as exc:
                log.warning("export of %s to %s failed: %s", job.label, job.fmt.value, exc)
                raise ApiError(
                    409, f"{job.label} cannot be exported to {job.fmt.value}: {exc}"
                ) from None
            archive = zip_folder(Path(tmp) / job.name, Path(tmp) / "archive.zip")
            size = archive.stat().st_size
            if size > limit:
                raise _too_large(job, f"{job.fmt.value} archive", size, limit)
            os.replace(archive, path)
        log.info(
            "exported %s to %s (%d bytes) in %.1f s",
            job.label, job.fmt.value, size, time.perf_counter() - started,
        )  # fmt: skip
        return path


def get_exporter(app: Any) -> Exporter:
    """The app's exporter, created on first use (on the event loop: never two)."""
    exporter: Exporter | None = getattr(app.state, "exporter", None)
    if exporter is None:
        exporter = Exporter(app.state.settings)
        app.state.exporter = exporter
    return exporter


def _no_model(job: ExportJob, why: str) -> ApiError:
    return ApiError(409, f"{job.label} has no model to export: {why}")


def _too_large(job: ExportJob, what: str, size: int, limit: int) -> ApiError:
    return ApiError(
        409,
        f"{job.label}: its {what} is {size} bytes, over this server's export limit of {limit} "
        "bytes (RESNET_EXPORT_MAX_BYTES)",
    )
