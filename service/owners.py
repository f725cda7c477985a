"""Owners and quotas at the door: the 403 for changing another key's record, and the per-key
quotas checked when jobs are submitted (429 for too many active runs, 507 for too many bytes).

The rule itself is :func:`jobs.records.owners.may_change`; this module only turns it into the
service's answers, so every route applies it the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from jobs.records import ApiKey, DatasetRecord, Run
from jobs.records.models import ACTIVE_RUN_STATUSES
from jobs.records.owners import Owned, describe_owner, may_change
from jobs.records.run_files import stored_bytes
from jobs.settings import Settings
from service.errors import ApiError, ErrorBody

QUOTA_RETRY_AFTER_S = 60

QUOTA_ERRORS: dict[int | str, dict[str, Any]] = {
    429: {"model": ErrorBody, "description": "The key has as many queued and running runs as "
          "its quota allows (RESNET_MAX_ACTIVE_RUNS_PER_KEY); Retry-After says when to try"},
    507: {"model": ErrorBody, "description": "The key's runs keep as many bytes as its quota "
          "allows (RESNET_MAX_STORED_BYTES_PER_KEY); delete runs to free some"},
}  # fmt: skip


def require_owner(session: Session, key: ApiKey, record: Owned, what: str) -> None:
    """403 unless ``key`` may change ``record`` (its owner, or an admin key).

    Args:
        what: The record as the message names it: ``"Run 0123…"``.
    """
    if not may_change(key, record):
        raise ApiError(
            403,
            f"{what} belongs to {describe_owner(session, record)}: a train key changes only "
            "what it made; its owner or an admin key may change it",
            code="not_owner",
        )


def require_upload_owner(session: Session, key: ApiKey, *, root: Path, path: str) -> None:
    """403 if ``path`` lies in another key's upload (``uploads/<id>/…`` under the data root,
    as ``POST /v1/datasets/upload`` lays them out): an upload is its uploader's to register.

    Paths outside the root, or in no registered upload, are left to the caller's checks.
    """
    try:
        parts = (root / path).resolve().relative_to(root.resolve()).parts
    except (ValueError, OSError, RuntimeError):  # outside the root, not a path, a symlink loop
        # (RuntimeError before Python 3.13): the caller's 422
        return
    if len(parts) < 2 or parts[0] != "uploads":
        return
    upload = session.scalars(
        select(DatasetRecord)
        .where(DatasetRecord.location.startswith(f"uploads/{parts[1]}/", autoescape=True))
        .order_by(DatasetRecord.created_at)
        .limit(1)
    ).one_or_none()
    if upload is not None:
        require_owner(session, key, upload, f"Upload uploads/{parts[1]} (dataset {upload.name!r})")


def check_stored_bytes(session: Session, settings: Settings, key: ApiKey) -> None:
    """507 if the key's runs already keep ``max_stored_bytes_per_key`` bytes."""
    used = stored_bytes(session, settings, key.id)
    limit = settings.max_stored_bytes_per_key
    if used >= limit:
        raise ApiError(
            507,
            f"The key's runs keep {used:,} bytes, its quota is {limit:,} "
            "(RESNET_MAX_STORED_BYTES_PER_KEY): delete runs it no longer needs to free space",
            code="storage_quota_exceeded",
        )


def hold_run_quota(session: Session, settings: Settings, key: ApiKey, *, adding: int) -> None:
    """429 if ``adding`` more runs would take the key over ``max_active_runs_per_key`` queued and
    running runs. Call it inside the transaction that records them.

    It first writes the key's row (a no-op update): that takes the write lock on SQLite and the
    row lock on PostgreSQL, so concurrent submissions by one key count one after another and
    cannot together pass the quota.
    """
    session.execute(update(ApiKey).where(ApiKey.id == key.id).values(name=ApiKey.name))
    active = session.scalar(
        select(func.count())
        .select_from(Run)
        .where(Run.api_key_id == key.id, Run.status.in_(ACTIVE_RUN_STATUSES))
    )
    limit = settings.max_active_runs_per_key
    if int(active or 0) + adding > limit:
        raise ApiError(
            429,
            f"The key has {active} queued or running runs and asks for {adding} more; its quota "
            f"is {limit} (RESNET_MAX_ACTIVE_RUNS_PER_KEY). Wait for some to finish, or cancel "
            "some",
            code="quota_exceeded",
            headers={"Retry-After": str(QUOTA_RETRY_AFTER_S)},
        )
