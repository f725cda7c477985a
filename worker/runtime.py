"""What a worker process holds: its database sessions and its name in the run records."""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from jobs.records import make_engine, make_sessionmaker

log = logging.getLogger(__name__)

ERROR_MAX_CHARS = 2000

_lock = threading.Lock()
_engine: tuple[int, str, Engine, sessionmaker[Session]] | None = None


def sessions(db_url: str) -> sessionmaker[Session]:
    """This process's session factory for ``db_url``, made on first use.

    Fork-aware: Celery's prefork pool forks the worker's main process (which may already have
    an engine, for the stale-run sweeper). A forked child must not use or close the
    connections it inherited, which belong to its parent: it leaves them alone
    (``dispose(close=False)``) and makes an engine of its own.
    """
    global _engine
    pid = os.getpid()
    with _lock:
        if _engine is not None and _engine[0] == pid and _engine[1] == db_url:
            return _engine[3]
        if _engine is not None:
            old_pid, _, old, _ = _engine
            old.dispose(close=old_pid == pid)
        engine = make_engine(db_url)
        _engine = (pid, db_url, engine, make_sessionmaker(engine))
        return _engine[3]


def worker_name() -> str:
    """``host/pid``: which machine and process holds a run (``kill -9`` names the pid)."""
    return f"{socket.gethostname()}/{os.getpid()}"


def describe_error(exc: BaseException) -> str:
    """``"Type: message"``, cut to fit the record.

    A config that fails validation reads ``ValidationError: field: what is wrong; ...``.
    """
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(config)'}: {e['msg']}" for e in exc.errors()
        )
        text = f"{type(exc).__name__}: {problems}"
    else:
        text = f"{type(exc).__name__}: {exc}".strip()
    if len(text) > ERROR_MAX_CHARS:
        text = text[: ERROR_MAX_CHARS - 1] + "…"
    return text


def jsonable(value: Any) -> Any:
    """A copy that strict JSON (PostgreSQL's ``json``) accepts: NaN and ±inf become ``None``.

    numpy scalars and arrays become Python numbers and lists.
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
