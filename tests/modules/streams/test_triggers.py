"""The ``stream`` trigger type: bound functions get the reference's wrapper message, for matching changes only."""

from __future__ import annotations

from typing import Any

import pytest

from iii.modules.streams import StreamsModule
from tests.modules.local_host import LocalHost

Streams = tuple[StreamsModule, LocalHost]


def record(host: LocalHost, function_id: str) -> list[Any]:
    """Serve ``function_id`` as a handler that keeps the events it gets."""
    events: list[Any] = []

    def handler(event: Any) -> dict[str, Any]:
        events.append(event)
        return {}

    host.serve(function_id, handler)
    return events


def without_timestamps(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for event in events:
        assert isinstance(event["timestamp"], int)
        assert event["timestamp"] > 1_600_000_000_000  # milliseconds since the epoch
    return [{name: value for name, value in event.items() if name != "timestamp"} for event in events]


def change(group_id: str, item_id: str | None, event: dict[str, Any]) -> dict[str, Any]:
    return {"type": "stream", "streamName": "s", "groupId": group_id, "id": item_id, "event": event}


async def test_create_update_delete_and_send_events_have_the_reference_shape(streams: Streams) -> None:
    module, host = streams
    events = record(host, "on.change")
    assert host.bind("stream", "on.change", {"stream_name": "s"})[1] is None
    item = {"stream_name": "s", "group_id": "g", "item_id": "i"}
    await host.call("stream::set", {**item, "data": {"n": 1}})
    await host.call("stream::set", {**item, "data": {"n": 2}})
    await host.call("stream::update", {**item, "ops": [{"type": "increment", "path": "n", "by": 1}]})
    await host.call("stream::update", {**item, "item_id": "j", "ops": [{"type": "set", "path": "a", "value": 1}]})
    await host.call("stream::delete", item)
    await host.call("stream::delete", item)  # nothing deleted: no event
    await host.call("stream::send", {"stream_name": "s", "group_id": "g", "type": "ping", "data": [1]})
    await host.call("stream::send", {"stream_name": "s", "group_id": "g", "type": "dm", "data": 2, "id": "u1"})
    await module.settle_triggers()
    assert sorted(without_timestamps(events), key=repr) == sorted(
        [
            change("g", "i", {"type": "create", "data": {"n": 1}}),
            change("g", "i", {"type": "update", "data": {"n": 2}}),
            change("g", "i", {"type": "update", "data": {"n": 3}}),
            change("g", "j", {"type": "create", "data": {"a": 1}}),
            change("g", "i", {"type": "delete", "data": {"n": 3}}),
            change("g", None, {"type": "event", "event": {"type": "ping", "data": [1]}}),
            change("g", "u1", {"type": "event", "event": {"type": "dm", "data": 2}}),
        ],
        key=repr,
    )


async def test_stream_group_and_item_filters_select_the_bindings_called(streams: Streams) -> None:
    module, host = streams
    configs: dict[str, dict[str, Any]] = {
        "stream": {"stream_name": "s"},
        "group": {"stream_name": "s", "group_id": "g"},
        "item": {"stream_name": "s", "item_id": "i"},
        "both": {"stream_name": "s", "group_id": "g", "item_id": "i"},
        "empty": {"stream_name": "s", "group_id": "", "item_id": None},  # empty: no filter, as in the reference
        "other": {"stream_name": "t"},
    }
    seen = {name: record(host, f"fn.{name}") for name in configs}
    for name, config in configs.items():
        assert host.bind("stream", f"fn.{name}", config)[1] is None
    for group_id, item_id in (("g", "i"), ("g", "j"), ("h", "i")):
        await host.call("stream::set", {"stream_name": "s", "group_id": group_id, "item_id": item_id, "data": 0})
    await module.settle_triggers()
    called = {name: sorted((e["groupId"], e["id"]) for e in events) for name, events in seen.items()}
    assert called == {
        "stream": [("g", "i"), ("g", "j"), ("h", "i")],
        "group": [("g", "i"), ("g", "j")],
        "item": [("g", "i"), ("h", "i")],
        "both": [("g", "i")],
        "empty": [("g", "i"), ("g", "j"), ("h", "i")],
        "other": [],
    }


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ([], "must be an object"),
        ({}, "needs `stream_name`"),
        ({"stream_name": ""}, "needs `stream_name`"),
        ({"stream_name": "s", "group_id": 3}, "`group_id` must be a string"),
    ],
)
async def test_bad_configs_are_refused_with_a_reason(streams: Streams, config: Any, reason: str) -> None:
    _, host = streams
    refusal = host.bind("stream", "fn", config)[1]
    assert refusal is not None
    assert reason in refusal


async def test_a_condition_function_decides_and_an_unbound_function_is_no_longer_called(streams: Streams) -> None:
    module, host = streams
    events = record(host, "on.change")
    host.serve("only.big", lambda event: event["event"]["data"] > 10)
    binding, refusal = host.bind("stream", "on.change", {"stream_name": "s", "condition_function_id": "only.big"})
    assert refusal is None
    item = {"stream_name": "s", "group_id": "g", "item_id": "i"}
    for value in (1, 20, 5, 30):
        await host.call("stream::set", {**item, "data": value})
    await module.settle_triggers()
    assert sorted(event["event"]["data"] for event in events) == [20, 30]
    host.unbind(binding)
    await host.call("stream::set", {**item, "data": 100})
    await module.settle_triggers()
    assert len(events) == 2


async def test_triggers_can_be_turned_off(start_module: Any) -> None:
    module, host = await start_module(triggers_enabled=False)
    events = record(host, "on.change")
    assert host.bind("stream", "on.change", {"stream_name": "s"})[1] is None
    await host.call("stream::set", {"stream_name": "s", "group_id": "g", "item_id": "i", "data": 1})
    await module.settle_triggers()
    assert events == []
    assert not any(function_id == "on.change" for function_id, _ in host.invocations)
