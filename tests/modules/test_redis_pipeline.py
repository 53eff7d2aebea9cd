"""The Redis pipeliner on a real Redis: concurrent commands share round trips and one connection, in order,
each with its own reply or error; and the state backend uses it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from iii.modules.redis_pipeline import Pipeliner
from iii.modules.state import StateSettings
from iii.modules.state.module import open_store
from tests.redis_server import RedisServer


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(redis_server.url)
    yield connection
    await connection.aclose()


async def connected_clients(url: str) -> int:
    """How many connections Redis has, this question's own included."""
    inspector = aioredis.Redis.from_url(url)
    try:
        info = await inspector.info("clients")
        return int(info["connected_clients"])
    finally:
        await inspector.aclose()


async def test_concurrent_commands_run_in_order_in_few_pipelines(client: aioredis.Redis) -> None:
    pipeliner = Pipeliner(client)
    replies = await asyncio.gather(*(pipeliner.execute("INCR", "counter") for _ in range(200)))
    assert replies == list(range(1, 201))  # submitted order is Redis' order
    assert pipeliner.commands == 200
    assert pipeliner.batches <= 2
    assert await pipeliner.execute("GET", "counter") == b"200"  # a later command starts a new pipeline
    await pipeliner.close()


async def test_an_error_reply_fails_its_command_alone(client: aioredis.Redis) -> None:
    pipeliner = Pipeliner(client)
    await client.set("text", "x")
    ok, wrong, after = await asyncio.gather(
        pipeliner.execute("SET", "a", "1"),
        pipeliner.execute("HSET", "text", "field", "1"),  # WRONGTYPE: the key holds a string
        pipeliner.execute("GET", "a"),
        return_exceptions=True,
    )
    assert ok is True
    assert isinstance(wrong, ResponseError) and "WRONGTYPE" in str(wrong)
    assert after == b"1"
    await pipeliner.close()


async def test_a_script_redis_forgot_is_loaded_again(client: aioredis.Redis) -> None:
    pipeliner = Pipeliner(client)
    script = client.register_script("return ARGV[1] .. KEYS[1]")
    assert await pipeliner.script(script, ["k"], ["v"]) == b"vk"
    await client.script_flush()  # as after a restart of Redis
    assert await pipeliner.script(script, ["k2"], ["v2"]) == b"v2k2"
    await pipeliner.close()


async def test_an_unreachable_redis_fails_every_waiting_command(redis_server: RedisServer) -> None:
    port = redis_server.port
    redis_server.stop()  # nothing listens there any more
    client = aioredis.Redis(host="127.0.0.1", port=port, retry_on_error=[], socket_connect_timeout=2)
    pipeliner = Pipeliner(client)
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(pipeliner.execute("GET", "k") for _ in range(5)), return_exceptions=True), 10
    )
    assert all(isinstance(outcome, RedisConnectionError) for outcome in outcomes), outcomes
    await client.aclose()


async def test_closing_fails_the_commands_not_yet_answered(client: aioredis.Redis) -> None:
    pipeliner = Pipeliner(client)
    pending = [asyncio.ensure_future(pipeliner.execute("INCR", "n")) for _ in range(10)]
    await asyncio.sleep(0)  # the commands are submitted; the sender has not run yet
    await pipeliner.close()
    outcomes = await asyncio.gather(*pending, return_exceptions=True)
    assert all(isinstance(outcome, RedisConnectionError) for outcome in outcomes), outcomes
    assert await client.get("n") is None  # nothing was sent
    with pytest.raises(RedisConnectionError):
        await pipeliner.execute("INCR", "n")


async def test_the_redis_state_backend_serves_concurrent_calls_on_one_connection(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    store = await open_store(StateSettings(data_dir=tmp_path, backend="redis", redis_url=redis_server.url))
    try:
        writes = await asyncio.gather(*(store.put("s", f"k{i}", str(i).encode()) for i in range(100)))
        assert [applied.version for applied in writes] == [1] * 100
        entries = await asyncio.gather(*(store.get("s", f"k{i}") for i in range(100)))
        assert [entry.value if entry else None for entry in entries] == [str(i).encode() for i in range(100)]
        # One connection of the store (redis-py alone opens one per concurrent command) and the inspector's.
        assert await connected_clients(redis_server.url) == 2
        assert store.counters()["pipelines"] < 20
    finally:
        await store.close()
