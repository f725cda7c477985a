"""Who may change a record: the one rule, for runs, experiments, model versions and datasets.

A team service: every key with ``read`` reads everything. Changing a record (cancel, delete,
promote from) is for its owner, the key that made it, or for an ``admin`` key. A record made
before owners were recorded (migration 0006), or whose key was deleted, is owned by no key:
only an admin key changes it.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.orm import Session

from jobs.records.models import ApiKey, Scope


class Owned(Protocol):
    """A record with an owner: :class:`Run`, :class:`Experiment`, :class:`ModelVersion`,
    :class:`DatasetRecord`."""

    @property
    def api_key_id(self) -> str | None: ...


def is_admin(key: ApiKey) -> bool:
    return Scope.ADMIN.value in key.scopes


def may_change(key: ApiKey, record: Owned) -> bool:
    """Whether ``key`` may change ``record``: an admin key, or the key that made it."""
    if is_admin(key):
        return True
    return record.api_key_id is not None and record.api_key_id == key.id


def describe_owner(session: Session, record: Owned) -> str:
    """The owner as people know it, for a 403: ``key 'alice' (rsk_AbCd…)`` or ``no key``."""
    if record.api_key_id is None:
        return "no key (made before owners were recorded, or its key was deleted)"
    owner = session.get(ApiKey, record.api_key_id)
    if owner is None:
        return "no key (its key was deleted)"
    return f"key {owner.name!r} ({owner.prefix}…)"
