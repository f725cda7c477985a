"""Schemas that keep declared fields for OpenAPI and mypy, pinned to the facts' owners."""

from __future__ import annotations

from core.training.hooks import EPOCH_METRICS
from service.schemas import EpochPublic


def test_the_epoch_schema_has_every_epoch_metric() -> None:
    names = [n for n in EpochPublic.model_fields if n not in {"epoch", "recorded_at"}]
    assert tuple(names) == EPOCH_METRICS
    assert next(iter(EpochPublic.model_fields)) == "epoch"
