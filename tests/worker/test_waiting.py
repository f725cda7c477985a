"""Reading which jobs have a message in the broker (:mod:`worker.waiting`), on a real Redis and
the real filesystem queue, with messages sent by a real Celery app."""

from __future__ import annotations

from pathlib import Path

import redis as redis_client

from jobs.queue import EVALUATE_TASK, TRAIN_TASK
from jobs.settings import Settings
from tests.fixtures.servers import RedisServer
from tests.worker.harness import next_redis_db, sender_app
from worker.waiting import waiting_job_ids


def send_some(settings: Settings) -> None:
    app = sender_app(settings)
    app.send_task(TRAIN_TASK, kwargs={"run_id": "r1"})
    app.send_task(TRAIN_TASK, kwargs={"run_id": "r2"})
    app.send_task(EVALUATE_TASK, kwargs={"evaluation_id": "e1"})
    app.send_task("worker.requeue_stale_runs")  # not about a job


def test_the_filesystem_queue_is_read(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    assert waiting_job_ids(settings) == set()
    send_some(settings)
    (settings.broker_folder / "out" / "junk.training.msg").write_text("{not json")
    assert waiting_job_ids(settings) == {"r1", "r2", "e1"}


def test_redis_waiting_and_unacknowledged_messages_are_read(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    if not redis_server.running:
        redis_server.start()
    url = redis_server.url.rsplit("/", 1)[0] + f"/{next_redis_db()}"
    redis_client.Redis.from_url(url).flushdb()
    settings = Settings(state_dir=tmp_path / "state", broker_url=url)
    send_some(settings)
    assert waiting_job_ids(settings) == {"r1", "r2", "e1"}
    # A delivered, unacknowledged message moves from the list to kombu's 'unacked' hash.
    app = sender_app(settings)
    with app.connection_for_read() as conn:
        queue = conn.SimpleQueue("training", no_ack=False)
        message = queue.get(timeout=5)
        assert message is not None
        assert waiting_job_ids(settings) == {"r1", "r2", "e1"}
        message.ack()
        queue.close()
    assert waiting_job_ids(settings) == {"r2", "e1"}


def test_an_unreadable_broker_says_so(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", broker_url="redis://127.0.0.1:1/0")
    assert waiting_job_ids(settings) is None
    settings = Settings(state_dir=tmp_path / "state", broker_url="amqp://127.0.0.1:1//")
    assert waiting_job_ids(settings) is None
