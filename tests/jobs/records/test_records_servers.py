"""The throwaway servers can be stopped, killed and started again on the same URL."""

from __future__ import annotations

import redis
from sqlalchemy import text

from jobs.records import make_engine
from tests.fixtures.servers import PostgresServer, RedisServer


def test_postgres_restart_keeps_url_and_data(postgres_server: PostgresServer, postgres_url: str):
    engine = make_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE kept (x int)"))
            conn.execute(text("INSERT INTO kept VALUES (7)"))
        postgres_server.stop()
        assert not postgres_server.running
        postgres_server.start()
        # pool_pre_ping replaces the pooled connection the restart broke
        with engine.connect() as conn:
            assert conn.execute(text("SELECT x FROM kept")).scalar() == 7
    finally:
        engine.dispose()


def test_redis_kill_and_start(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.set("k", "v")
    assert client.get("k") == b"v"
    redis_server.kill()
    assert not redis_server.running
    redis_server.start()
    assert client.get("k") is None  # no persistence: a crash loses everything
    redis_server.stop()
    redis_server.start()
    assert client.ping()
    client.close()
