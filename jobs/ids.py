"""The shapes of the identifiers that records carry, written once for the API and the worker.

- **Record ids** (runs, datasets, evaluations, experiments, uploads): 32 lowercase hex digits,
  a uuid4 without its dashes. They also name folders (``<artifacts>/<run id>/``), so nothing
  else may pass for one.
- **Names** people give (models, datasets): 1-128 letters, digits, ``.``, ``_`` or ``-``,
  starting with a letter or digit, and never shaped like a record id, so that a path segment
  that may hold either (``/v1/models/{name}``) reads one way only.
- **Model versions**: 1 up to the largest SQL ``INTEGER``.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

RECORD_ID = re.compile(r"[0-9a-f]{32}")
RECORD_ID_RULE = "32 hex digits"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
NAME_RULE = "1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
MAX_VERSION = 2**31 - 1
# The same rules as JSON Schema, for the OpenAPI document: clients (and schemathesis) then see
# which names the API takes.
NAME_JSON_SCHEMA: dict[str, Any] = {
    "pattern": f"^{NAME.pattern}$",
    "not": {"pattern": f"^{RECORD_ID.pattern}$"},
}


def new_id() -> str:
    """A fresh record id: 32 hex digits (a uuid4 without dashes)."""
    return uuid.uuid4().hex


def is_record_id(text: str) -> bool:
    """Whether ``text`` has the shape of a record id (it may still name no record)."""
    return RECORD_ID.fullmatch(text) is not None


def is_name(text: str) -> bool:
    """Whether ``text`` is shaped like a name (the caller still rejects one like an id)."""
    return NAME.fullmatch(text) is not None
