"""Clients subscribed to streams on the stream module's subscription port, in a real (in-process) engine: the
sync, the changes in the reference's shapes and in order, once per connection, bad messages, and bounded delivery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from iii.engine import Engine
from iii.testing import EngineProcess
from tests.engine.wire import RawWorker, eventually, scrape
from tests.modules.streams.subscriber_client import (
    StalledSubscriber,
    Subscriber,
    answer,
    bind,
    join,
    leave,
    stream_module,
)

StartEngine = Callable[..., Awaitable[Engine]]


@pytest.fixture
async def engine(start_engine: StartEngine) -> Engine:
    return await start_engine(http_port=-1, modules="stream")


@pytest.fixture
async def worker(engine: Engine) -> AsyncIterator[RawWorker]:
    connected = await RawWorker.connect(engine.url)
    yield connected
    await connected.close()


def url_of(engine: Engine) -> str:
    return stream_module(engine).url


def item(item_id: str, **more: Any) -> dict[str, Any]:
    return {"stream_name": "todos", "group_id": "inbox", "item_id": item_id, **more}


async def test_a_group_join_gets_the_items_then_every_change_in_the_reference_shapes_in_order(
    engine: Engine, worker: RawWorker
) -> None:
    await worker.result_of("stream::set", item("a", data={"id": "a", "done": False}))
    await worker.result_of("stream::set", {**item("z", data=1), "group_id": "elsewhere"})
    subscriber = await Subscriber.connect(url_of(engine))
    await subscriber.send(join("s1", "todos", "inbox"))
    sync = await subscriber.recv()
    assert {k: v for k, v in sync.items() if k != "timestamp"} == {
        "type": "stream",
        "streamName": "todos",
        "groupId": "inbox",
        "id": None,
        "event": {"type": "sync", "data": [{"id": "a", "done": False}]},
    }
    await worker.result_of("stream::set", item("b", data={"id": "b"}))
    await worker.result_of("stream::set", {**item("z", data=2), "group_id": "elsewhere"})  # not this group
    await worker.result_of("stream::update", item("a", ops=[{"type": "set", "path": "done", "value": True}]))
    await worker.result_of("stream::delete", item("b"))
    await worker.result_of("stream::delete", item("absent"))  # nothing changed: nothing sent
    send = {"stream_name": "todos", "group_id": "inbox", "type": "ping", "data": {"n": 1}}
    await worker.result_of("stream::send", send)
    await worker.result_of("stream::send", {**send, "id": "a"})
    assert [await subscriber.event() for _ in range(5)] == [
        {"id": "b", "type": "create", "data": {"id": "b"}},
        {"id": "a", "type": "update", "data": {"id": "a", "done": True}},
        {"id": "b", "type": "delete", "data": {"id": "b"}},
        {"id": None, "type": "event", "event": {"type": "ping", "data": {"n": 1}}},
        {"id": "a", "type": "event", "event": {"type": "ping", "data": {"n": 1}}},
    ]
    await subscriber.close()


async def test_an_item_join_gets_the_item_and_only_its_changes(engine: Engine, worker: RawWorker) -> None:
    subscriber = await Subscriber.connect(url_of(engine))
    await subscriber.send(join("one", "todos", "inbox", "a"))
    assert await subscriber.event() == {"id": "a", "type": "sync", "data": None}
    await worker.result_of("stream::set", item("b", data="other item"))
    await worker.result_of("stream::set", item("a", data="mine"))
    await worker.result_of("stream::send", {"stream_name": "todos", "group_id": "inbox", "type": "all", "data": 0})
    await worker.result_of(
        "stream::send", {"stream_name": "todos", "group_id": "inbox", "type": "t", "data": 1, "id": "a"}
    )
    assert await subscriber.event() == {"id": "a", "type": "create", "data": "mine"}
    assert await subscriber.event() == {"id": "a", "type": "event", "event": {"type": "t", "data": 1}}
    await subscriber.send(join("two", "todos", "inbox", "b"))
    assert await subscriber.event() == {"id": "b", "type": "sync", "data": "other item"}
    await subscriber.close()


async def test_leave_stops_delivery_and_a_connection_gets_each_message_once(engine: Engine, worker: RawWorker) -> None:
    subscriber = await Subscriber.connect(url_of(engine))
    await subscriber.send(join("group", "todos", "inbox"))
    await subscriber.send(join("item", "todos", "inbox", "a"))
    await subscriber.send(join("other", "todos", "other"))
    assert [(await subscriber.event())["type"] for _ in range(3)] == ["sync"] * 3
    await worker.result_of("stream::set", item("a", data=1))  # both the group and the item subscription match
    await worker.result_of("stream::set", {**item("x", data="o"), "group_id": "other"})
    assert await subscriber.event() == {"id": "a", "type": "create", "data": 1}
    assert await subscriber.event() == {"id": "x", "type": "create", "data": "o"}
    await subscriber.send(leave("group", "todos", "inbox"))
    await subscriber.send(leave("item", "todos", "inbox", "a"))
    await subscriber.send(join("again", "todos", "other"))  # answered after the leaves were done
    assert (await subscriber.event())["type"] == "sync"
    await worker.result_of("stream::set", item("a", data=2))  # nobody here listens to inbox any more
    await worker.result_of("stream::set", {**item("x", data="p"), "group_id": "other"})
    assert await subscriber.event() == {"id": "x", "type": "update", "data": "p"}  # once, for two subscriptions
    assert stream_module(engine).snapshot()["subscribers"] == 1
    await subscriber.close()


async def test_the_direct_path_joins_at_once(engine: Engine, worker: RawWorker) -> None:
    await worker.result_of("stream::set", item("a b", data={"id": "a b"}))
    group = await Subscriber.connect(url_of(engine) + "/stream/todos/inbox/")
    one = await Subscriber.connect(url_of(engine) + "/stream/todos/inbox/a%20b")
    assert await group.event() == {"id": None, "type": "sync", "data": [{"id": "a b"}]}
    assert await one.event() == {"id": "a b", "type": "sync", "data": {"id": "a b"}}
    await worker.result_of("stream::delete", item("a b"))
    assert await group.event() == {"id": "a b", "type": "delete", "data": {"id": "a b"}}
    assert await one.event() == {"id": "a b", "type": "delete", "data": {"id": "a b"}}
    await group.send(leave("/stream/todos/inbox/", "todos", "inbox"))  # the path is the subscription id
    await group.send(join("next", "todos", "next"))
    assert (await group.event())["type"] == "sync"
    await worker.result_of("stream::set", item("c", data=3))  # left: not sent
    await worker.result_of("stream::set", {**item("c", data=4), "group_id": "next"})
    assert (await group.recv())["groupId"] == "next"
    await group.close()
    await one.close()


@pytest.mark.parametrize(
    ("frame", "code", "reason"),
    [
        ("not json", 1007, "not JSON"),
        (b"\x00binary", 1003, "binary frames are not accepted"),
        ('{"type": "subscribe", "data": {}}', 1003, "unknown message type 'subscribe'"),
        ('{"type": "join", "data": {"streamName": "s", "groupId": "g"}}', 1007, "join: `subscriptionId` is missing"),
        ('{"type": "join", "data": {"subscriptionId": "x", "streamName": "", "groupId": "g"}}', 1007, "`streamName`"),
        ('{"type": "leave"}', 1007, "leave: `data` must be an object"),
        ("[1]", 1007, "a message must be a JSON object"),
    ],
)
async def test_a_malformed_message_closes_the_socket_with_the_reason(
    engine: Engine, frame: str | bytes, code: int, reason: str
) -> None:
    subscriber = await Subscriber.connect(url_of(engine))
    await subscriber.send(frame)
    closed = await subscriber.closed()
    assert closed[0] == code and reason in closed[1], closed


async def test_the_port_serves_the_browser_client_and_refuses_the_rest(engine: Engine) -> None:
    base = url_of(engine).replace("ws://", "http://")
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/iii-stream.js") as script:
            assert script.status == 200
            assert script.headers["Content-Type"] == "text/javascript; charset=utf-8"
            assert script.headers["Access-Control-Allow-Origin"] == "*"
            assert "iiiStream" in await script.text()
        async with http.get(base + "/") as plain:
            assert plain.status == 426 and "WebSocket" in await plain.text()
        for path in ("/elsewhere", "/stream/todos", "/stream/todos/inbox/a/b"):
            async with http.get(base + path) as missing:
                assert missing.status == 404, path


async def test_a_stalled_subscriber_is_dropped_and_the_others_get_every_change_in_order(
    start_engine: StartEngine,
) -> None:
    engine = await start_engine(
        http_port=-1,
        modules="stream",
        module_settings={
            "stream": {
                "subscriber_queue_messages": 8,
                "subscriber_queue_bytes": 64 * 1024,
                "sqlite_synchronous": "normal",
            }
        },
    )
    module = stream_module(engine)
    stalled = await StalledSubscriber.connect(module.url)
    stalled.send(join("s", "todos", "inbox"))
    live = await Subscriber.connect(module.url)
    await live.send(join("s", "todos", "inbox"))
    assert (await live.event())["type"] == "sync"
    await eventually(lambda: module.snapshot()["subscribers"] == 2 and _subscriptions(engine) == 2)

    count, padding = 600, "x" * 10_000  # 6 MB: more than the stalled socket's buffers hold
    received: list[int] = []

    async def read_all() -> None:
        while len(received) < count:
            received.append((await live.event())["data"]["n"])

    reading = asyncio.create_task(read_all())
    worker = await RawWorker.connect(engine.url)
    for n in range(count):
        await worker.result_of("stream::set", item(f"i{n % 10}", data={"n": n, "padding": padding}))
    await eventually(lambda: _dropped(engine) == 1, what="the stalled subscriber is dropped")
    closed = await stalled.read_to_close()
    assert closed is not None and closed[0] == 1013, closed
    assert closed[1].startswith("subscriber too slow: ") and closed[1].endswith(" messages waiting"), closed
    await asyncio.wait_for(reading, 30)
    assert received == list(range(count))
    _, samples = await scrape(engine)
    assert samples[("iii_stream_subscribers_dropped_total", "module=stream")] == 1
    assert samples[("iii_stream_subscribers", "module=stream")] == 1
    assert samples[("iii_stream_subscriber_messages_total", "module=stream")] >= count + 1
    stalled.close()
    await live.close()
    await worker.close()


def _dropped(engine: Engine) -> int:
    subscribers = stream_module(engine)._subscribers
    return subscribers.dropped if subscribers is not None else 0


def _subscriptions(engine: Engine) -> int:
    subscribers = stream_module(engine)._subscribers
    return subscribers.table.count if subscribers is not None else 0


async def test_changes_made_while_a_join_reads_its_sync_come_after_the_sync(engine: Engine, worker: RawWorker) -> None:
    # A custom stream (its list served by the worker) lets the test hold the sync's read while a change is made.
    await worker.register("stream::list(todos)")
    subscriber = await Subscriber.connect(url_of(engine))
    await subscriber.send(join("s", "todos", "inbox"))
    reading = await worker.recv_type("invokefunction")
    assert reading["function_id"] == "stream::list(todos)"
    await worker.result_of(
        "stream::send", {"stream_name": "todos", "group_id": "inbox", "type": "meanwhile", "data": 1}
    )
    await worker.send({"type": "invocationresult", "invocation_id": reading["invocation_id"], "result": ["custom"]})
    assert await subscriber.event() == {"id": None, "type": "sync", "data": ["custom"]}
    assert await subscriber.event() == {"id": None, "type": "event", "event": {"type": "meanwhile", "data": 1}}
    await subscriber.close()


async def test_an_engine_process_serves_subscribers_by_default_and_says_where() -> None:
    with EngineProcess() as engine:  # the stream module is a default one; EngineProcess asks for any free port
        assert engine.stream_url.startswith("ws://127.0.0.1:") and not engine.stream_url.endswith("/")
        assert f"module=stream serves subscribers on {engine.stream_url}" in engine.log_text()
        worker = await RawWorker.connect(engine.url)
        subscriber = await Subscriber.connect(engine.stream_url + "/stream/todos/inbox/")
        assert (await subscriber.event())["type"] == "sync"
        await worker.result_of("stream::set", item("a", data=1))
        assert await subscriber.event() == {"id": "a", "type": "create", "data": 1}
        await subscriber.close()
        await worker.close()


async def test_a_stalled_subscriber_holds_little_engine_memory_before_it_is_dropped(start_engine: StartEngine) -> None:
    """Without a bound on the socket's send buffer, the kernel grows it (up to 4 MiB and more) behind a stalled
    peer before the bounded queue holds anything: hundreds of 10 KB changes absorbed per stalled subscriber."""
    engine = await start_engine(
        http_port=-1,
        modules="stream",
        module_settings={"stream": {"subscriber_queue_messages": 8, "sqlite_synchronous": "normal"}},
    )
    module = stream_module(engine)
    stalled = await StalledSubscriber.connect(module.url)
    stalled.send(join("s", "todos", "inbox"))
    await eventually(lambda: _subscriptions(engine) == 1)
    worker = await RawWorker.connect(engine.url)
    padding = "x" * 10_000
    made = 0
    while _dropped(engine) == 0 and made < 2000:
        await worker.result_of("stream::set", item(f"i{made % 10}", data={"n": made, "padding": padding}))
        made += 1
    assert _dropped(engine) == 1
    # the queue's 8 messages, the transport's batch and the bounded kernel buffer: about 1 MB at most
    assert made * 10_000 < 1_200_000, f"{made} changes of 10 KB were absorbed before the subscriber was dropped"
    stalled.close()
    await worker.close()


async def test_a_client_that_stops_answering_pings_is_dropped_and_one_that_answers_stays(
    start_engine: StartEngine,
) -> None:
    """A client gone without a close (its machine asleep, its network lost) never answers the pings: it is dropped
    within about one and a half heartbeats, with a ``stream:leave`` for its subscription, while a client that
    answers every ping keeps its subscription and its changes."""
    engine = await start_engine(
        http_port=-1, modules="stream", module_settings={"stream": {"subscriber_heartbeat_s": 0.2}}
    )
    module = stream_module(engine)
    worker = await RawWorker.connect(engine.url)
    await bind(worker, "stream:leave", "on::leave")
    async with aiohttp.ClientSession() as session, session.ws_connect(module.url, autoping=False) as alive:
        await alive.send_str(join("kept", "todos", "inbox"))
        assert (await alive.receive_json(timeout=10))["event"]["type"] == "sync"
        gone = await StalledSubscriber.connect(module.url)  # reads nothing: never answers a ping
        gone.send(join("lost", "todos", "inbox"))
        await eventually(lambda: _subscriptions(engine) == 2)

        pings = 0
        while pings < 3:  # three heartbeats answered by hand: the engine's pings are what this client sees
            message = await alive.receive(timeout=10)
            assert message.type == aiohttp.WSMsgType.PING, message
            await alive.pong(message.data)
            pings += 1
        assert (await answer(worker, "on::leave"))["subscription_id"] == "lost"
        await eventually(lambda: _subscriptions(engine) == 1)

        await worker.result_of("stream::set", item("a", data={"n": 1}))
        while (message := await alive.receive(timeout=10)).type == aiohttp.WSMsgType.PING:
            await alive.pong(message.data)
        assert message.json()["event"]["type"] == "create", message
        gone.close()
    await worker.close()
