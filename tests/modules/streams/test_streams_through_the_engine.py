"""The streams module inside a real engine, driven by a worker of our SDK, on SQLite and on a real Redis."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from iii import InitOptions, InvocationError, register_worker
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
