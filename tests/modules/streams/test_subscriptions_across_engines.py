"""Two engines sharing a real Redis: a subscriber of one gets the changes made on the other, and the ``stream``
triggers fire only where the change was made."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from iii.engine import Engine
from tests.engine.wire import RawWorker, scrape
from tests.modules.streams.subscriber_client import Subscriber, join, stream_module
from tests.redis_server import RedisServer

StartEngine = Callable[..., Awaitable[Engine]]


async def watch(engine: Engine, function_id: str) -> RawWorker:
    """A worker of ``engine`` serving ``function_id``, bound to every change of stream ``todos``."""
    worker = await RawWorker.connect(engine.url)
    await worker.send({"type": "registerfunction", "id": function_id})
    await worker.send(
        {"type": "registertrigger", "id": f"{function_id}-binding", "trigger_type": "stream",
         "function_id": function_id, "config": {"stream_name": "todos"}}
    )  # fmt: skip
    await worker.ping()
    return worker


async def next_trigger(worker: RawWorker) -> Any:
    delivery = await worker.recv_type("invokefunction")
    await worker.send({"type": "invocationresult", "invocation_id": delivery["invocation_id"], "result": None})
    return delivery["data"]


async def relay_counts(engine: Engine) -> dict[str, float]:
    """The engine's ``iii_stream_relay_messages_total`` by outcome (-1: not exported)."""
    _, samples = await scrape(engine)
    return {
        outcome: samples.get(("iii_stream_relay_messages_total", f"module=stream,outcome={outcome}"), -1)
        for outcome in ("published", "received", "lost")
    }


async def test_a_subscriber_of_one_engine_sees_the_changes_made_on_the_other(
    start_engine: StartEngine, redis_server: RedisServer
) -> None:
    a = await start_engine(http_port=-1, modules="stream", redis_url=redis_server.url)
    b = await start_engine(http_port=-1, modules="stream", redis_url=redis_server.url)
    on_b = await Subscriber.connect(stream_module(b).url)
    on_a = await Subscriber.connect(stream_module(a).url)
    for subscriber in (on_a, on_b):
        await subscriber.send(join("s", "todos", "inbox"))
        assert await subscriber.event() == {"id": None, "type": "sync", "data": []}
    watcher_a, watcher_b = await watch(a, "a::changed"), await watch(b, "b::changed")
    writer_a, writer_b = await RawWorker.connect(a.url), await RawWorker.connect(b.url)
    item = {"stream_name": "todos", "group_id": "inbox", "item_id": "t1"}
    await writer_a.result_of("stream::set", {**item, "data": {"id": "t1", "by": "a"}})
    await writer_a.result_of("stream::send", {"stream_name": "todos", "group_id": "inbox", "type": "hi", "data": 1})
    for subscriber in (on_b, on_a):  # each once: B from Redis, A directly (its own copy from Redis skipped)
        assert await subscriber.event() == {"id": "t1", "type": "create", "data": {"id": "t1", "by": "a"}}
        assert await subscriber.event() == {"id": None, "type": "event", "event": {"type": "hi", "data": 1}}
    await writer_b.result_of("stream::delete", item)
    for subscriber in (on_a, on_b):
        assert await subscriber.event() == {"id": "t1", "type": "delete", "data": {"id": "t1", "by": "a"}}
    # Triggers fire where the change was made: A's binding hears A's set and send, B's hears B's delete first.
    assert [(await next_trigger(watcher_a))["event"]["type"] for _ in range(2)] == ["create", "event"]
    assert (await next_trigger(watcher_b))["event"]["type"] == "delete"
    await writer_a.result_of("stream::send", {"stream_name": "todos", "group_id": "inbox", "type": "mark", "data": 2})
    assert (await next_trigger(watcher_a))["event"]["event"]["type"] == "mark"  # B's delete never reached A's
    for subscriber in (on_a, on_b):
        assert (await subscriber.event())["type"] == "event"
    # The relay counts what it published and what it heard from the other engine (its own copies not counted);
    # a publish is counted when Redis answered it, which may come after the other engine heard it.
    for engine, published, received in ((a, 3, 1), (b, 1, 3)):
        expected = {"published": published, "received": received, "lost": 0}
        async with asyncio.timeout(10):
            while (counted := await relay_counts(engine)) != expected:  # asking again is the wait
                assert all(counted[key] <= expected[key] for key in expected), counted
    for connection in (on_a, on_b):
        await connection.close()
    for worker in (watcher_a, watcher_b, writer_a, writer_b):
        await worker.close()
