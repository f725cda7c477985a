"""What the record functions raise when the world is not as the caller assumed."""

from __future__ import annotations


class RecordError(Exception):
    """Base class of the record errors."""


class RecordNotFound(RecordError, LookupError):
    """No row has the id that was asked for."""

    def __init__(self, kind: str, record_id: str | int) -> None:
        super().__init__(f"{kind} {record_id!r} not found")
        self.kind = kind
        self.record_id = record_id


class RecordConflict(RecordError):
    """The row exists but its state forbids the change (e.g. deleting a running run)."""
