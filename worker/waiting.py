"""Which jobs have a task message waiting in the broker: to notice a queued job whose message
was lost.

A job is recorded ``queued`` and then its message is sent. If the message is lost afterwards —
a file removed from the embedded filesystem queue, a Redis without its append-only file
restarted, a flushed database — the job stays ``queued`` for ever: no worker will claim it, and
the stale-run sweep only looks at ``running`` jobs. The sweeper therefore compares the jobs
queued for a while with the messages the broker holds (waiting, or delivered and not yet
acknowledged) and sends the missing ones again. A message a worker has already taken off the
queue but not yet claimed may look missing: it is sent twice, and the second delivery does
nothing (the claim is a conditional UPDATE).

Reading the broker is transport-specific; for a transport we cannot read we say so (``None``)
and nothing is resent.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from jobs.queue import EVALUATE_TASK, TRAIN_TASK, TRAINING_QUEUE
from jobs.settings import Settings

log = logging.getLogger(__name__)

# The keyword argument that names the job, by task.
JOB_ARGUMENT = {TRAIN_TASK: "run_id", EVALUATE_TASK: "evaluation_id"}
# Kombu's Redis transport keeps delivered, unacknowledged messages in this hash.
REDIS_UNACKED = "unacked"
# Messages read per queue and sweep at most: a bound on the sweep's cost.
MESSAGES_READ_LIMIT = 100_000


def waiting_job_ids(settings: Settings) -> set[str] | None:
    """The ids of the runs and evaluations whose task message the broker holds, or ``None``
    when the broker cannot be read (then no job should be taken for lost)."""
    try:
        if settings.embedded_broker:
            return _job_ids(_filesystem_messages(settings.broker_folder / "out"))
        if settings.broker.startswith(("redis://", "rediss://")):
            return _job_ids(_redis_messages(settings.broker))
    except Exception as exc:  # an unreadable broker must not stop the sweep
        log.warning("could not read the queued messages: %s", exc)
        return None
    return None


def _job_ids(messages: Iterable[dict[str, Any]]) -> set[str]:
    ids = set()
    for message in messages:
        job_id = _job_id(message)
        if job_id is not None:
            ids.add(job_id)
    return ids


def _job_id(message: dict[str, Any]) -> str | None:
    """The job a Celery (protocol 2) message is about, or ``None`` if it is not one of ours."""
    try:
        argument = JOB_ARGUMENT.get(message["headers"]["task"])
        if argument is None:
            return None
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        _, kwargs, _ = json.loads(body)
        job_id = kwargs.get(argument)
    except (KeyError, TypeError, ValueError, binascii.Error):
        return None
    return job_id if isinstance(job_id, str) else None


def _filesystem_messages(folder: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(folder.glob(f"*.{TRAINING_QUEUE}.msg"))[:MESSAGES_READ_LIMIT]:
        try:
            yield json.loads(path.read_bytes())
        except (OSError, ValueError):  # taken by a worker meanwhile, or half-written
            continue


def _redis_messages(url: str) -> Iterator[dict[str, Any]]:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        # The queue's list, and its priority lists (kombu names them queue + '\x06\x16' + n).
        for key in client.scan_iter(match=f"{TRAINING_QUEUE}*", count=1000):
            if client.type(key) == b"list":
                for raw in client.lrange(key, 0, MESSAGES_READ_LIMIT):
                    yield from _parsed(raw)
        for raw in client.hvals(REDIS_UNACKED):
            for entry in _parsed(raw):  # [message, exchange, routing key]
                if isinstance(entry, list) and entry and isinstance(entry[0], dict):
                    yield entry[0]
    finally:
        client.close()


def _parsed(raw: bytes | str) -> Iterator[Any]:
    try:
        yield json.loads(raw)
    except ValueError:
        return
