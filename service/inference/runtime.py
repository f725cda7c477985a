"""The prediction runtime of one app: model cache, decode threads, and short-lived lookups.

Created on the first request that needs it (``app.state.inference``) and closed with the app.
Nothing here imports TensorFlow; the cache does, in its loader thread, on the first load.

The predict path keeps the database off the hot path: a key that passed its scope check and a
model name resolved to its run are trusted for ``predict_cache_ttl_s`` seconds (5 by default;
0 turns it off). So a revoked key, or a newly promoted version, takes effect within that time
in every API process (at once in the process that promoted it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from core.images import ImageDecodeError
from jobs.ids import is_record_id
from jobs.records import ApiKey, RecordConflict, RecordNotFound, Run, RunStatus
from jobs.records.repository import get_model_artifact, get_model_version
from service.inference.cache import ModelCache, ModelRef
from service.inference.decoder import FairDecoder
from service.inference.images import ImageRejected, InputSpec, decode_for_model, rejection
from service.inference.metrics import PredictMetrics
from service.inference.payload import EncodedImage

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from jobs.settings import Settings

_MAX_ENTRIES = 4096  # lookups remembered at most (expired ones are dropped past it)


class _Ttl:
    """A small dict whose entries expire."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any | None:
        hit = self._entries.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, key: Any, value: Any) -> None:
        if self.ttl_s <= 0:
            return
        now = time.monotonic()
        if len(self._entries) >= _MAX_ENTRIES:
            self._entries = {k: v for k, v in self._entries.items() if v[0] >= now}
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.clear()
        self._entries[key] = (now + self.ttl_s, value)

    def clear(self) -> None:
        self._entries.clear()


class Inference:
    """Everything the predict routes share within one app."""

    def __init__(
        self, settings: Settings, sessions: sessionmaker[Session], registry: CollectorRegistry
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.metrics = PredictMetrics(registry)
        self.cache = ModelCache(settings, self.metrics)
        self.keys = _Ttl(settings.predict_cache_ttl_s)
        self.refs = _Ttl(settings.predict_cache_ttl_s)
        self._decoder = FairDecoder(settings.predict_decode_threads)

    # --- finding models -------------------------------------------------------------------

    async def resolve(self, name: str, version: int | None) -> ModelRef:
        """The run and model file behind ``name`` (and ``version``; None: the newest).

        Raises:
            RecordNotFound: no such model or version (404).
            RecordConflict: the run has no model to serve (409).
        """
        ref: ModelRef | None = self.refs.get((name, version))
        if ref is None:
            loop = asyncio.get_running_loop()
            ref = await loop.run_in_executor(None, self.lookup, name, version)
            self.refs.put((name, version), ref)
        return ref

    def lookup(self, name: str, version: int | None) -> ModelRef:
        """:meth:`resolve` without the cache, on a thread (it reads the database)."""
        with self.sessions() as session:
            try:
                found = get_model_version(session, name, version)
                run, model_version = found.run, found.version
                model_name: str | None = name
            except RecordNotFound:
                # Every succeeded run serves its model by run id, promoted or not.
                run_or_none = None
                if version is None and is_record_id(name):
                    run_or_none = session.get(Run, name)
                if run_or_none is None:
                    raise
                run, model_version, model_name = run_or_none, None, None
            if run.status != RunStatus.SUCCEEDED:
                raise RecordConflict(
                    f"Run {run.id!r} is {run.status.value}: only a succeeded run has a model"
                )
            artifact = get_model_artifact(session, run.id)
            if artifact is None:
                raise RecordConflict(f"Run {run.id!r} recorded no model artifact")
            return ModelRef(
                run_id=run.id,
                uri=artifact.uri,
                name=model_name,
                version=model_version,
                architecture=run.architecture,
            )

    # --- keys -----------------------------------------------------------------------------

    def trusted_key(self, key_hash: str, scope: str) -> ApiKey | None:
        key: ApiKey | None = self.keys.get((key_hash, scope))
        return key

    def trust_key(self, key_hash: str, scope: str, key: ApiKey) -> None:
        self.keys.put((key_hash, scope), key)

    # --- decoding -------------------------------------------------------------------------

    async def decode(
        self, images: Sequence[EncodedImage], spec: InputSpec, *, inline: bool = False
    ) -> list[np.ndarray]:
        """Decode and resize a request's images in the decode threads (not on the loop), in
        turn with the other requests' (:class:`~service.inference.decoder.FairDecoder`), or,
        with ``inline``, right here on the loop.

        ``inline`` is for requests known (by their headers) to be small: a 32x32 PNG decodes
        in about 30 us, less than handing it to a thread and back costs the loop, and the
        threads' wake-ups and GIL hand-offs cost more CPU still (issue 11's profile).

        Cancelling the caller (a 504, a client gone) stops the work: images not yet started
        are never decoded.

        Raises:
            ImageRejected: the first image that cannot be used, named, with its status.
        """
        started = time.perf_counter()

        def one(image: EncodedImage) -> np.ndarray:
            try:
                return decode_for_model(image.data, spec)
            except ImageDecodeError as exc:
                raise rejection(
                    image.data, exc, spec, field=image.field, label=image.label
                ) from None

        try:
            if inline:
                arrays = [one(image) for image in images]
            else:
                arrays = await self._decoder.run(images, one)
        except ImageRejected:
            self.metrics.refused.labels("bad_image").inc()
            raise
        self.metrics.decode_seconds.observe(time.perf_counter() - started)
        return arrays

    async def close(self) -> None:
        await self.cache.close()
        self._decoder.close()


def get_inference(app: Any) -> Inference:
    """The app's prediction runtime (``app.state.inference``), created on first use.

    Called on the event loop, so two requests never create two runtimes.
    """
    inference: Inference | None = getattr(app.state, "inference", None)
    if inference is None:
        inference = Inference(app.state.settings, app.state.sessions, app.state.metrics.registry)
        app.state.inference = inference
    return inference
