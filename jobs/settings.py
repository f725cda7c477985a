"""The one settings object of the service and its workers (environment variables ``RESNET_*``).

Read once per process with :func:`get_settings` and passed on; nothing else reads the
environment. The defaults are the embedded deployment: SQLite and a filesystem broker under
``state_dir``, nothing else to install or start.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from core.data.archives import ArchiveLimits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RESNET_", extra="ignore")

    state_dir: Path = Field(Path("var"), description="Embedded default: database, broker, files.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite.")
    broker_url: str | None = Field(
        None, description="Celery broker, e.g. redis://redis:6379/0; default a filesystem queue."
    )
    data_root: Path | None = Field(None, description="Datasets may only be registered under here.")
    artifact_root: str | None = Field(
        None, description="Models and checkpoints: a folder or any tf.io.gfile URL (gs://…)."
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_upload_bytes: int = Field(512 * 1024**2, ge=1024)
    max_attempts: int = Field(3, ge=1, le=100)
    heartbeat_seconds: float = Field(10.0, gt=0)
    stale_after_seconds: float = Field(120.0, gt=0)
    visibility_timeout_seconds: int = Field(7 * 24 * 3600, ge=60)
    worker_concurrency: int = Field(1, ge=1)
    stop_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=24 * 3600,
        description="`resnet serve` stopping: how long the worker may finish its current task "
        "before it is stopped at once (the run then resumes from its last checkpoint).",
    )
    # Prediction (service/inference): limits, the dynamic batcher and the model cache.
    predict_max_body_bytes: int = Field(
        32 * 1024**2, ge=1024, description="Largest predict request body (413 above it)."
    )
    predict_max_images: int = Field(64, ge=1, le=4096, description="Images per predict request.")
    predict_max_pixels: int = Field(
        40_000_000, ge=1, description="Largest decoded image (width x height); bombs are refused."
    )
    predict_max_batch_size: int = Field(64, ge=1, le=4096, description="Images per model call.")
    predict_max_queue_delay_ms: float = Field(
        2.0, ge=0, le=1000, description="Longest wait to fill a batch while the model is busy."
    )
    predict_queue_limit: int = Field(
        1024, ge=1, description="Images waiting per model before requests get 503."
    )
    predict_timeout_s: float = Field(30.0, gt=0, description="Per predict request (504 after).")
    predict_cache_ttl_s: float = Field(
        5.0, ge=0, description="How long a predict route trusts a key check or model lookup."
    )
    predict_decode_threads: int = Field(2, ge=1, le=64, description="Image-decoding threads.")
    predict_inline_decode_pixels: int = Field(
        4096,
        ge=0,
        le=1_000_000,
        description="A predict request whose images hold at most this many pixels together "
        "(by their headers) is decoded on the event loop, not handed to the decode threads: "
        "for small images the hand-off costs more than the decoding (0 = always hand off).",
    )
    predict_compute_threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="The model's intra-op threads in an API process (default: for Keras the "
        "usable cores but one, at least one, so the event loop keeps a core; for ONNX Runtime "
        "every usable core, its threads sleeping between calls).",
    )
    model_cache_bytes: int = Field(
        2 * 1024**3, ge=1, description="Weights of loaded models kept in memory (LRU beyond)."
    )
    # datasets and archives
    archive_max_expansion: float = Field(
        20.0,
        gt=0,
        le=1000,
        description="An archive may write at most this many bytes per byte of its own size.",
    )
    archive_max_bytes: int = Field(
        4 * 1024**3, ge=1024, description="Absolute cap on the bytes one archive may write."
    )
    archive_max_members: int = Field(
        200_000, ge=1, description="Files and folders one archive may create (inodes)."
    )
    archive_min_bytes_per_member: int = Field(
        64,
        ge=0,
        description="Each member must be paid for with this many bytes of archive "
        "(so 100,000 empty members in 471 KB are refused).",
    )
    archive_max_member_bytes: int = Field(
        256 * 1024**2, ge=1024, description="The largest single file in an archive."
    )
    # request limits (service/limits.py; docs/security.md, "Request limits")
    request_max_json_bytes: int = Field(
        1024**2,
        ge=1024,
        description="Largest body of any route that is neither an upload nor a predict (413).",
    )
    request_body_idle_timeout_s: float = Field(
        30.0, gt=0, description="Longest wait for the next piece of a request body (408 after)."
    )
    request_body_timeout_s: float = Field(
        1800.0,
        gt=0,
        description="Longest time to receive a whole request body (408 after); long enough for "
        "a max_upload_bytes upload at 0.3 MB/s.",
    )
    request_json_max_depth: int = Field(
        32, ge=2, le=1000, description="Deepest nesting of arrays and objects in a JSON body."
    )
    request_json_max_number_chars: int = Field(
        100, ge=20, le=4000, description="Longest number literal in a JSON body (digits and sign)."
    )
    predict_max_request_pixels: int = Field(
        50_000_000,
        ge=1,
        description="Pixels (width x height, summed over its images) one predict request may "
        "decode; checked on the image headers before any decoding (413 above it).",
    )
    predict_max_name_chars: int = Field(
        256, ge=1, le=4096, description="Longest image name a predict request may send."
    )
    auth_failures_burst: int = Field(
        200, ge=1, description="Failed API keys one client may send at once before 429s."
    )
    auth_failures_per_second: float = Field(
        5.0, gt=0, description="How fast a client's allowance of failed keys refills."
    )

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("sqlite", "postgresql")):
            raise ValueError(f"only SQLite and PostgreSQL are supported; got {v.split(':')[0]!r}")
        return v

    @model_validator(mode="after")
    def _timeouts_fit(self) -> Settings:
        if self.stale_after_seconds <= 2 * self.heartbeat_seconds:
            raise ValueError("stale_after_seconds must exceed two heartbeats")
        return self

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.state_dir / 'resnet.db').resolve()}"

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url is None

    @property
    def broker(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        return (self.state_dir / "broker").resolve()

    @property
    def data_dir(self) -> Path:
        return (self.data_root or self.state_dir / "data").resolve()

    @property
    def artifacts(self) -> str:
        return self.artifact_root or str((self.state_dir / "runs").resolve())

    # owners and quotas
    max_active_runs_per_key: int = Field(
        200,  # the largest experiment (core.reports.experiments.MAX_CELLS) fits, once
        ge=1,
        description="Queued and running runs one API key may have at once; a submission over it "
        "gets 429 with Retry-After (an experiment counts all its runs).",
    )
    max_stored_bytes_per_key: int = Field(
        100 * 1024**3,
        ge=0,
        description="Bytes one API key's runs may keep (their folders and artifacts); a "
        "submission once they keep this much gets 507.",
    )

    @property
    def extract_dir(self) -> Path:
        """Where archives named by registered datasets are extracted (under the state folder)."""
        return (self.state_dir / "extracted").resolve()

    def archive_limits(self) -> ArchiveLimits:
        """The extraction budget these settings give (``RESNET_ARCHIVE_*``)."""
        from core.data.archives import ArchiveLimits

        return ArchiveLimits(
            max_ratio=self.archive_max_expansion,
            max_total_bytes=self.archive_max_bytes,
            max_members=self.archive_max_members,
            min_bytes_per_member=self.archive_min_bytes_per_member,
            max_member_bytes=self.archive_max_member_bytes,
        )

    # runs across several workers (issue 13: worker.gang)
    max_workers_per_run: int = Field(
        8,
        ge=1,
        le=1024,
        description="The most workers one run may ask for (`workers` in POST /v1/runs; 422 "
        "above it).",
    )
    collective_host: str | None = Field(
        None,
        description="The host other workers reach this worker's collective-ops port at; "
        "default this machine's host name; `ip`: the address that name resolves to (a "
        "container's address on its compose network).",
    )
    collective_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="The TCP port of this worker's collective ops in a multi-worker run, open "
        "to the run's other workers; 0 picks a free one per run (one machine, tests).",
    )
    gang_wait_seconds: float = Field(
        120.0,
        gt=0,
        description="How long a worker holding a slot of a multi-worker run waits for the rest "
        "of its workers; then it frees the slot and sends the run's task again.",
    )
    keep_replica_dirs: bool = Field(
        False,
        description="Keep the folders the non-chief workers of a multi-worker run train into "
        "(<state>/replicas/<run>/slot<i>: their own checkpoints), to compare replicas.",
    )

    # exports of model versions (GET /v1/models/{name}/versions/{v}/export)
    export_max_bytes: int = Field(
        1024**3,
        ge=1024,
        description="Largest model file the API exports, and largest export archive it keeps "
        "and serves (409 above it); each archive is cached beside the version's model file.",
    )

    # the engine that runs a served model (core.inference.engines)
    predict_engine: Literal["auto", "keras", "onnx", "savedmodel"] = Field(
        "auto",
        description="What runs a served model's forward pass: auto (serve on Keras at once; "
        "meanwhile export, check against Keras and time keras and onnx in the background, and "
        "switch to the faster), keras, onnx (ONNX Runtime on the float32 export) or savedmodel "
        "(both made at the model's first load, which waits for them). Exports are kept beside "
        "the model file, in engines/, and reused by later loads.",
    )


@functools.cache
def get_settings() -> Settings:
    return Settings()
