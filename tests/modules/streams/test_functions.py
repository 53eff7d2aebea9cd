"""The stream::* functions through a LocalHost, on both backends: the reference's shapes (as the official SDKs'
tests check them), update ops, custom streams, limits, and clear errors for bad requests."""

from __future__ import annotations

from typing import Any

from iii.modules.streams import StreamsModule
from tests.modules.local_host import LocalHost
from tests.modules.streams.conftest import StartModule

Streams = tuple[StreamsModule, LocalHost]
ITEM = {"stream_name": "s", "group_id": "g", "item_id": "i"}


async def set_(host: LocalHost, data: Any, **address: str) -> Any:
    return await host.call("stream::set", {**ITEM, **address, "data": data})


async def get(host: LocalHost, **address: str) -> Any:
    return await host.call("stream::get", {**ITEM, **address})


async def test_set_answers_old_and_new_value_and_get_the_item(streams: Streams) -> None:
    _, host = streams
    first = {"name": "Test Item", "value": 42}
    assert await set_(host, first) == {"old_value": None, "new_value": first}
    second = {"value": 2, "updated": True}
    assert await set_(host, second) == {"old_value": first, "new_value": second}
    assert await get(host) == second
    assert await get(host, item_id="absent") is None
    assert await get(host, group_id="other") is None


async def test_delete_answers_the_old_value_and_tolerates_absent_items(streams: Streams) -> None:
    _, host = streams
    await set_(host, {"test": True})
    assert await host.call("stream::delete", ITEM) == {"old_value": {"test": True}}
    assert await get(host) is None
    assert await host.call("stream::delete", ITEM) == {"old_value": None}


async def test_list_list_groups_and_list_all(streams: Streams) -> None:
    _, host = streams
    for item_id in ("b", "a", "c"):
        await set_(host, {"id": item_id}, item_id=item_id)
    await set_(host, 1, group_id="h")
    await set_(host, 2, stream_name="t", group_id="x")
    assert await host.call("stream::list", {"stream_name": "s", "group_id": "g"}) == [
        {"id": "a"},
        {"id": "b"},
        {"id": "c"},
    ]
    assert await host.call("stream::list", {"stream_name": "s", "group_id": "none"}) == []
    assert await host.call("stream::list_groups", {"stream_name": "s"}) == ["g", "h"]
    assert await host.call("stream::list_groups", {"stream_name": "none"}) == []
    assert await host.call("stream::list_all", {}) == {
        "stream": [{"id": "s", "groups": ["g", "h"]}, {"id": "t", "groups": ["x"]}],
        "count": 2,
    }


async def test_update_applies_the_state_ops_atomically_and_reports_errors(streams: Streams) -> None:
    _, host = streams
    await set_(host, {"count": 0, "name": "initial", "chunks": [], "text": "hello"})
    ops = [
        {"type": "set", "path": "count", "value": 5},
        {"type": "append", "path": "chunks", "value": {"text": "hello"}},
        {"type": "append", "path": "text", "value": " world"},
        {"type": "increment", "path": "name", "by": 1},  # not a number: an error, the others still apply
    ]
    result = await host.call("stream::update", {**ITEM, "ops": ops})
    new = {"count": 5, "name": "initial", "chunks": [{"text": "hello"}], "text": "hello world"}
    assert result["old_value"] == {"count": 0, "name": "initial", "chunks": [], "text": "hello"}
    assert result["new_value"] == new
    assert [error["op_index"] for error in result["errors"]] == [3]
    assert await get(host) == new
    created = await host.call(
        "stream::update", {**ITEM, "item_id": "new", "ops": [{"type": "set", "path": "a", "value": 1}]}
    )
    assert created == {"old_value": None, "new_value": {"a": 1}}


async def test_send_stores_nothing(streams: Streams) -> None:
    _, host = streams
    payload = {"stream_name": "s", "group_id": "g", "type": "ping", "data": {"x": 1}}
    assert await host.call("stream::send", payload) is None
    assert await host.call("stream::list_all", {}) == {"stream": [], "count": 0}


async def test_bad_requests_get_clear_errors_and_write_nothing(start_module: StartModule) -> None:
    _, host = await start_module(max_value_bytes=64, max_name_bytes=8)
    cases: list[tuple[str, Any, str, str]] = [
        ("stream::set", [], "deserialization_error", "the payload must be an object"),
        ("stream::set", {**ITEM}, "deserialization_error", "missing field `data`"),
        ("stream::set", {**ITEM, "item_id": 5, "data": 1}, "deserialization_error", "`item_id` must be a string"),
        ("stream::get", {"stream_name": "s", "item_id": "i"}, "deserialization_error", "missing field `group_id`"),
        ("stream::set", {**ITEM, "group_id": "", "data": 1}, "invalid_name", "`group_id` must not be empty"),
        ("stream::set", {**ITEM, "stream_name": "x" * 9, "data": 1}, "invalid_name", "the limit is 8"),
        ("stream::set", {**ITEM, "data": "x" * 100}, "VALUE_TOO_LARGE", "max_value_bytes"),
        ("stream::update", {**ITEM}, "deserialization_error", "missing field `ops`"),
        ("stream::update", {**ITEM, "ops": [{"type": "nope"}]}, "deserialization_error", "nope"),
        ("stream::list_groups", {}, "deserialization_error", "missing field `stream_name`"),
        ("stream::send", {"stream_name": "s", "group_id": "g", "data": 1}, "deserialization_error", "`type`"),
        ("stream::send", {"stream_name": "s", "group_id": "g", "type": "t"}, "deserialization_error", "`data`"),
    ]
    for function_id, payload, code, fragment in cases:
        error = await host.call_error(function_id, payload)
        assert (error.code, fragment in error.message) == (code, True), (function_id, payload, error)
    assert await host.call("stream::list_all", {}) == {"stream": [], "count": 0}


async def test_a_custom_stream_serves_its_operations_instead_of_the_backend(streams: Streams) -> None:
    _, host = streams
    items: dict[str, Any] = {}

    def custom_set(data: dict[str, Any]) -> dict[str, Any]:
        old = items.get(data["item_id"])
        items[data["item_id"]] = data["data"]
        return {"old_value": old, "new_value": data["data"]}

    host.serve("stream::set(todos)", custom_set)
    host.serve("stream::get(todos)", lambda data: items.get(data["item_id"]))
    host.serve("stream::delete(todos)", lambda data: {"old_value": items.pop(data["item_id"], None)})
    host.serve("stream::list(todos)", lambda data: list(items.values()))
    host.serve("stream::list_groups(todos)", lambda data: ["from-custom"])
    todo = {"stream_name": "todos", "group_id": "g", "item_id": "t1"}
    assert await host.call("stream::set", {**todo, "data": {"done": False}}) == {
        "old_value": None,
        "new_value": {"done": False},
    }
    assert items == {"t1": {"done": False}}
    assert await host.call("stream::get", todo) == {"done": False}
    assert await host.call("stream::list", {"stream_name": "todos", "group_id": "g"}) == [{"done": False}]
    assert await host.call("stream::list_groups", {"stream_name": "todos"}) == ["from-custom"]
    assert await host.call("stream::delete", todo) == {"old_value": {"done": False}}
    assert await host.call("stream::list_all", {}) == {"stream": [], "count": 0}  # the backend saw nothing

    host.serve("stream::get(broken)", lambda data: 1 / 0)
    error = await host.call_error("stream::get", {**todo, "stream_name": "broken"})
    assert error.code == "STREAM_GET_ERROR"
    assert "stream::get(broken)" in error.message
