"""The streams module inside a real engine, driven by a worker of our SDK, on SQLite and on a real Redis."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from iii import III, InitOptions, InvocationError, register_worker
from iii.engine import Engine

StartEngine = Callable[..., Awaitable[Engine]]


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The engine settings of each backend: SQLite in the data directory, or a real Redis."""
    if request.param == "sqlite":
        return {}
    return {"redis_url": request.getfixturevalue("redis_server").url}


async def test_a_worker_stores_lists_and_hears_changes_of_its_group(
    start_engine: StartEngine, backend: dict[str, Any]
) -> None:
    engine = await start_engine(http_port=-1, modules="stream", **backend)

    def scenario() -> None:
        events: queue.Queue[Any] = queue.Queue()
        with register_worker(f"ws://127.0.0.1:{engine.port}", InitOptions(worker_name="streams")) as client:

            def call(function_id: str, payload: Any) -> Any:
                return client.trigger({"function_id": function_id, "payload": payload})

            client.register_function("todos::changed", lambda event: events.put(event))
            client.register_trigger(
                {"type": "stream", "function_id": "todos::changed", "config": {"stream_name": "todos", "group_id": "a"}}
            )
            item = {"stream_name": "todos", "group_id": "a", "item_id": "t1"}
            assert call("stream::set", {**item, "data": {"done": False}}) == {
                "old_value": None,
                "new_value": {"done": False},
            }
            call("stream::set", {**item, "group_id": "b", "data": 1})  # another group: no event
            assert call("stream::update", {**item, "ops": [{"type": "set", "path": "done", "value": True}]}) == {
                "old_value": {"done": False},
                "new_value": {"done": True},
            }
            assert call("stream::get", item) == {"done": True}
            assert call("stream::list", {"stream_name": "todos", "group_id": "a"}) == [{"done": True}]
            assert call("stream::list_groups", {"stream_name": "todos"}) == ["a", "b"]
            assert call("stream::list_all", {}) == {"stream": [{"id": "todos", "groups": ["a", "b"]}], "count": 1}
            assert call("stream::delete", item) == {"old_value": {"done": True}}
            assert call("stream::get", item) is None
            with pytest.raises(InvocationError) as bad:
                call("stream::set", {"stream_name": "todos", "group_id": "a"})
            assert bad.value.code == "deserialization_error"

            seen = [events.get(timeout=10) for _ in range(3)]
            assert [(e["type"], e["streamName"], e["groupId"], e["id"]) for e in seen] == [
                ("stream", "todos", "a", "t1")
            ] * 3
            # One delivery per change; the SDK may run handlers concurrently, so their order is not asserted.
            assert sorted((e["event"] for e in seen), key=repr) == sorted(
                [
                    {"type": "create", "data": {"done": False}},
                    {"type": "update", "data": {"done": True}},
                    {"type": "delete", "data": {"done": True}},
                ],
                key=repr,
            )
            assert events.empty()

    await asyncio.to_thread(scenario)


async def test_each_subscriber_hears_a_groups_changes_in_order_whatever_the_others_do(
    start_engine: StartEngine,
) -> None:
    """Proves a function bound to ``stream`` is called with the changes in the order they were made, one call
    after the answer to the previous one, and that a subscriber that is slow to answer holds up only itself: a
    page bound after it still hears every change at once and in order (it once got them in the order the slow
    one answered, each only after the slow one's answer)."""
    engine = await start_engine(http_port=-1, modules="stream")
    url = f"ws://127.0.0.1:{engine.port}"

    def scenario() -> None:
        release = threading.Event()
        slow_heard: queue.Queue[Any] = queue.Queue()
        page_heard: queue.Queue[Any] = queue.Queue()

        def slow_handler(event: Any) -> None:
            slow_heard.put(event["event"]["data"])
            if event["event"]["data"] == 0:
                release.wait(10)  # holds the first change until the page has heard them all

        group = {"stream_name": "chat", "group_id": "room"}
        with (
            register_worker(url, InitOptions(worker_name="slow")) as slow,
            register_worker(url, InitOptions(worker_name="page")) as page,
            register_worker(url, InitOptions(worker_name="writer")) as writer,
        ):
            slow.register_function("slow::changed", slow_handler)
            slow.register_trigger({"type": "stream", "function_id": "slow::changed", "config": group})
            wait_active(writer, 1)  # bound first, so it comes first among the bindings of a change
            page.register_function("page::changed", lambda event: page_heard.put(event["event"]["data"]))
            page.register_trigger({"type": "stream", "function_id": "page::changed", "config": group})
            wait_active(writer, 2)
            try:
                for n in range(5):
                    writer.trigger({"function_id": "stream::set", "payload": {**group, "item_id": "m", "data": n}})
                assert [page_heard.get(timeout=10) for _ in range(5)] == [0, 1, 2, 3, 4]
                assert slow_heard.get(timeout=10) == 0
                assert slow_heard.empty()  # the next change waits for the answer to this one
            finally:
                release.set()
            assert [slow_heard.get(timeout=10) for _ in range(4)] == [1, 2, 3, 4]

    await asyncio.to_thread(scenario)


def wait_active(client: III, count: int) -> None:
    """Ask the engine until ``count`` bindings of ``stream`` are active."""
    for _ in range(500):
        rows = client.trigger({"function_id": "engine::registered-triggers::list", "payload": {}})
        active = [row for row in rows["registered_triggers"] if row["status"] == "active"]
        if sum(row["trigger_type"] == "stream" for row in active) == count:
            return
    raise AssertionError(f"fewer than {count} stream bindings became active")
