"""The pub/sub module on a real Redis: engines share topics, each delivery happens once, connections come back."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis

from iii.modules.pubsub import PubSubModule, PubSubSettings
from iii.modules.pubsub.buses import BusError
from tests.modules.inbox import Inbox
from tests.modules.local_host import LocalHost
from tests.modules.pubsub.conftest import StartPubSub
from tests.redis_server import RedisServer


async def test_engines_on_one_redis_deliver_each_message_once_per_subscriber(
    start_pubsub: StartPubSub, redis_server: RedisServer
) -> None:
    # max_in_flight=1 keeps each subscriber's deliveries in order, so a duplicate of the first message would
    # arrive before the second one.
    publisher, publisher_host = await start_pubsub(redis_url=redis_server.url, max_in_flight=1)
    other, other_host = await start_pubsub(redis_url=redis_server.url, max_in_flight=1)
    local_inbox, remote_inbox, remote_inbox_2 = Inbox(), Inbox(), Inbox()
    publisher_host.serve("here", local_inbox)
    other_host.serve("there", remote_inbox)
    other_host.serve("there2", remote_inbox_2)
    publisher_host.bind("subscribe", "here", {"topic": "orders"})
    other_host.bind("subscribe", "there", {"topic": "orders"})
    other_host.bind("subscribe", "there2", {"topic": "orders"})
    await publisher.wait_subscribed("orders")
    await other.wait_subscribed("orders")

    assert await publisher_host.call("publish", {"topic": "orders", "data": {"n": 1}}) is None
    await publisher_host.call("publish", {"topic": "orders", "data": {"n": 2}})

    for inbox in (local_inbox, remote_inbox, remote_inbox_2):
        assert await inbox.wait(2) == [{"n": 1}, {"n": 2}]
    assert publisher.snapshot()["subscribed"] == ["orders"]
    assert publisher.snapshot()["backend"] == "redis"


async def test_topics_are_the_reference_engines_redis_channels(
    start_pubsub: StartPubSub, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    module, host = await start_pubsub(redis_url=redis_server.url)
    inbox = Inbox()
    host.serve("f", inbox)
    host.bind("subscribe", "f", {"topic": "orders.shipped"})
    await module.wait_subscribed("orders.shipped")
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        with caplog.at_level(logging.WARNING, logger="iii.modules.pubsub"):
            await client.publish("orders.shipped", b"not json")
            await client.publish("orders.shipped", b'{"orderId": "abc-123"}')
            assert await inbox.wait(1) == [{"orderId": "abc-123"}]
        assert any("not JSON" in record.getMessage() for record in caplog.records)
    finally:
        await client.aclose()


async def test_a_channel_prefix_keeps_topics_apart_from_other_redis_users(
    start_pubsub: StartPubSub, redis_server: RedisServer
) -> None:
    module, host = await start_pubsub(redis_url=redis_server.url, channel_prefix="iii:")
    inbox = Inbox()
    host.serve("f", inbox)
    host.bind("subscribe", "f", {"topic": "t"})
    await module.wait_subscribed("t")
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await client.pubsub_channels() == [b"iii:t"]
        await host.call("publish", {"topic": "t", "data": 1})
        assert await inbox.wait(1) == [1]
    finally:
        await client.aclose()


async def test_subscriptions_come_back_after_the_connection_is_lost(
    start_pubsub: StartPubSub, redis_server: RedisServer
) -> None:
    module, host = await start_pubsub(redis_url=redis_server.url)
    inbox = Inbox()
    host.serve("f", inbox)
    host.bind("subscribe", "f", {"topic": "t"})
    host.bind("subscribe", "f", {"topic": "u"})
    await module.wait_subscribed("t")
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await client.client_kill_filter(_type="pubsub") == 1

        await module.wait_subscribed("t", session=2)
        await module.wait_subscribed("u", session=2)
        await host.call("publish", {"topic": "t", "data": "after"})
        await host.call("publish", {"topic": "u", "data": "after too"})

        assert sorted(await inbox.wait(2)) == ["after", "after too"]
        assert module.snapshot()["sessions"] == 2
    finally:
        await client.aclose()


async def test_a_topic_bound_again_after_its_last_unbinding_gets_each_message_once(
    start_pubsub: StartPubSub, redis_server: RedisServer
) -> None:
    module, host = await start_pubsub(redis_url=redis_server.url)
    inbox = Inbox()
    host.serve("f", inbox)
    binding, _ = host.bind("subscribe", "f", {"topic": "t"})
    await module.wait_subscribed("t")
    host.unbind(binding)
    host.bind("subscribe", "f", {"topic": "t"})
    await module.wait_subscribed("t")
    await host.call("publish", {"topic": "t", "data": 1})
    assert await inbox.wait(1) == [1]
    await module.wait_idle()
    assert inbox.received == [1]


async def test_an_unreachable_redis_is_a_clear_error_at_start() -> None:
    with RedisServer() as server:
        url = server.url.replace("redis://", "redis://user:secret@")
    module = PubSubModule(PubSubSettings(redis_url=url))
    with pytest.raises(BusError) as raised:
        await module.start(LocalHost())
    assert "cannot reach Redis" in str(raised.value)
    assert "secret" not in str(raised.value)


async def test_a_publication_redis_did_not_take_is_an_error(start_pubsub: StartPubSub) -> None:
    server = RedisServer()
    server.start()
    try:
        _, host = await start_pubsub(redis_url=server.url)
    finally:
        server.stop()
    error = await host.call_error("publish", {"topic": "t", "data": 1})
    assert error.code == "publish_failed"


async def test_concurrent_publications_share_one_redis_connection(
    start_pubsub: StartPubSub, redis_server: RedisServer
) -> None:
    module, host = await start_pubsub(redis_url=redis_server.url)
    inbox = Inbox()
    host.serve("f", inbox)
    host.bind("subscribe", "f", {"topic": "t"})
    await module.wait_subscribed("t")
    results = await asyncio.gather(*(host.call("publish", {"topic": "t", "data": n}) for n in range(100)))
    assert results == [None] * 100
    assert sorted(await inbox.wait(100)) == list(range(100))
    inspector = aioredis.Redis.from_url(redis_server.url)
    try:
        # The publications' connection, the subscription's and this one (redis-py alone opens one per
        # concurrent command).
        assert (await inspector.info("clients"))["connected_clients"] == 3
    finally:
        await inspector.aclose()
