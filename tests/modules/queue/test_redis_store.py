"""What the Redis backend adds to the contract: consumer groups per engine, its stream layout, Redis failing."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from iii.modules.queue.redis_store import RedisQueueStore
from iii.modules.queue.store import NewMessage, QueueCounts, StoreError
from tests.redis_server import RedisServer

T = 1_000_000
LEASE = 30_000


def new(message_id: str, queue: str = "q") -> NewMessage:
    return NewMessage(message_id=message_id, queue=queue, function_id="fn", data=b"{}")


async def test_recover_gives_back_only_this_engines_leases(redis_server: RedisServer) -> None:
    first = await RedisQueueStore.open(redis_server.url, consumer="engine-1")
    second = await RedisQueueStore.open(redis_server.url, consumer="engine-2")
    try:
        await first.add([new(f"m{index}") for index in range(4)])
        await first.claim("q", 1, T, LEASE)
        await second.claim("q", 2, T, LEASE)
        await first.close()
        first = await RedisQueueStore.open(redis_server.url, consumer="engine-1")  # restarted
        assert await first.recover() == 1  # m0; m1 and m2 are the other engine's deliveries, under way
        assert await first.queues() == {"q": QueueCounts(ready=2, leased=2, dead=0)}
        assert [message.message_id for message in await first.claim("q", 10, T, LEASE)] == ["m0", "m3"]
    finally:
        await first.close()
        await second.close()


async def test_the_group_pending_list_holds_the_leases_and_acks_empty_the_stream(redis_server: RedisServer) -> None:
    store = await RedisQueueStore.open(redis_server.url, consumer="engine-1")
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await store.add([new("m1"), new("m2"), new("m3")])
        await store.claim("q", 2, T, LEASE)
        pending = await client.xpending("iii:queue:stream:q", "iii")
        assert pending["pending"] == 2
        assert pending["consumers"] == [{"name": b"engine-1", "pending": 2}]
        await store.ack("m1")
        await store.retry("m2", T + 1, {"message": "failed"})
        assert (await client.xpending("iii:queue:stream:q", "iii"))["pending"] == 0
        assert await client.xlen("iii:queue:stream:q") == 0  # XACK + XDEL: only deliveries under way are kept
    finally:
        await client.aclose()
        await store.close()


async def test_stores_with_different_prefixes_do_not_see_each_other(redis_server: RedisServer) -> None:
    one = await RedisQueueStore.open(redis_server.url, consumer="engine-1")
    other = await RedisQueueStore.open(redis_server.url, prefix="other:", consumer="engine-1")
    try:
        await one.add([new("m1")])
        assert await other.queues() == {}
        assert await other.claim("q", 10, T, LEASE) == []
        await other.add([new("m1")])  # the same id under another prefix is another message
        assert await other.queues() == {"q": QueueCounts(ready=1, leased=0, dead=0)}
    finally:
        await one.close()
        await other.close()


async def test_redis_stopping_surfaces_as_store_error(redis_server: RedisServer) -> None:
    store = await RedisQueueStore.open(redis_server.url, consumer="engine-1")
    try:
        await store.add([new("m1")])
        redis_server.stop()
        with pytest.raises(StoreError):
            await store.add([new("m2")])
        with pytest.raises(StoreError):
            await store.claim("q", 1, T, LEASE)
        with pytest.raises(StoreError):
            await store.ack("m1")
        with pytest.raises(StoreError):
            await store.queues()
        with pytest.raises(StoreError):
            await store.recover()
    finally:
        await store.close()


async def test_an_unreachable_redis_fails_to_open_without_showing_the_password(redis_server: RedisServer) -> None:
    port = redis_server.port
    redis_server.stop()
    with pytest.raises(StoreError) as failed:
        await RedisQueueStore.open(f"redis://user:hunter2@127.0.0.1:{port}/0", consumer="engine-1")
    assert "hunter2" not in str(failed.value)
    assert f"127.0.0.1:{port}" in str(failed.value)


async def test_the_consumer_name_is_required(redis_server: RedisServer) -> None:
    with pytest.raises(ValueError, match="consumer"):
        await RedisQueueStore.open(redis_server.url, consumer="")
